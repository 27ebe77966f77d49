"""CodeFusion Engine: a production inference engine for the CodeFusion diffusion model of code.

    from codefusion import CodeFusion, GenerationConfig
    cf = CodeFusion.from_pretrained(None)
    out = cf.generate(["find all txt files under /tmp"], GenerationConfig(lang="bash", steps=50))

Importing this package imports torch and the model, never Triton, onnxruntime or TensorRT.
"""
from .config import GenerationConfig, ModelConfig, get_preset
from .errors import CodeFusionError

__all__ = ["CodeFusion", "GenerationConfig", "GenerationOutput", "ModelConfig", "get_preset", "CodeFusionError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The API pulls in transformers and the tokenizer: import it on first use, not on `import codefusion`.
    if name in ("CodeFusion", "GenerationOutput"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'codefusion' has no attribute {name!r}")
