"""CodeFusion Engine: a production inference engine for the CodeFusion diffusion model of code.

    from codefusion import CodeFusion, GenerationConfig
    cf = CodeFusion.from_pretrained(None)
    out = cf.generate(["find all txt files under /tmp"], GenerationConfig(lang="bash", steps=50))

Importing this package imports torch and the model, never Triton, onnxruntime or TensorRT.
"""
import importlib.machinery
import importlib.util
import sys
from pathlib import Path


def _claim_kernels_name() -> None:
    """Import Hugging Face's ``kernels`` package under its own name before a checkout's folder can take it.

    transformers >= 5 requires that PyPI package and imports it as ``kernels``. This repository's ``kernels/``
    folder (installed as ``codefusion.kernels``) has the same top-level name, so wherever the checkout's root is
    on sys.path (``python -m pytest`` or ``python -m codefusion`` run from it) ``from kernels import …`` inside
    transformers would find the folder and fail. sys.path itself is left as the user set it.
    """
    root = Path(__file__).resolve().parent.parent
    if "kernels" in sys.modules or not (root / "engine" / "__init__.py").is_file():
        return  # already imported, or installed from a wheel (no checkout, nothing named kernels/ of ours)
    others = [p for p in sys.path if Path(p or ".").resolve() != root]
    if len(others) == len(sys.path):
        return  # the checkout's root is not on the path: nothing can shadow the package
    spec = importlib.machinery.PathFinder.find_spec("kernels", others)
    if spec is None or spec.loader is None:
        return  # not installed: transformers < 5 does not import it either
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    spec.loader.exec_module(module)


_claim_kernels_name()

from .config import GenerationConfig, ModelConfig, get_preset  # noqa: E402
from .errors import CodeFusionError  # noqa: E402

__all__ = ["CodeFusion", "GenerationConfig", "GenerationOutput", "ModelConfig", "get_preset", "CodeFusionError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The API pulls in transformers and the tokenizer: import it on first use, not on `import codefusion`.
    if name in ("CodeFusion", "GenerationOutput"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'codefusion' has no attribute {name!r}")
