"""``codefusion export tensorrt`` and the ``tensorrt`` backend: engines built from the same ONNX graphs
with the TensorRT Python API, one optimisation profile per graph read from its spec (specs.py).

    encoder.plan    fp32 always (T5 overflows fp16)
    denoiser.plan   --dtype fp16 | bf16: TensorRT may pick reduced-precision kernels; I/O stays as exported
    decoder.plan
    timing.cache    reused by later builds of the same shapes

Verified where: TensorRT is installed neither on the CPU machine nor on the GPU machine of this project,
so only what comes before ``builder.build_serialized_network`` is tested (the gate, the spec → profile
translation, the ONNX it reads). Engine building and ``TensorRTBackend`` have NOT been run.
"""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import torch

from .manifest import MANIFEST, ExportError, ProviderError, file_sha256, read_manifest
from .ort import Graph, OrtBackend, load_export
from .specs import GraphSpec, graph_specs

PRECISIONS = ("fp16", "bf16")
TIMING_CACHE = "timing.cache"
WORKSPACE = 4 << 30  # bytes of builder scratch memory


def require_tensorrt():
    """The ``tensorrt`` module, or a one-line error naming the missing package."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise ProviderError("TensorRT is not installed (Python package 'tensorrt' is missing): pip install tensorrt "
                            "on a machine with an NVIDIA GPU; the ONNX export and backend='onnxruntime' work without "
                            "it") from None


def profile_shapes(spec: GraphSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Input name → (min, opt, max) shapes: the spec's dynamic dims at their three profile points."""
    return {t.name: tuple(spec.shape(t, w) for w in ("min", "opt", "max")) for t in spec.inputs}


def build_engine(trt, onnx_file: Path, spec: GraphSpec, precision: str | None, cache: bytes) -> tuple[bytes, bytes]:
    """ONNX → serialized engine (+ the updated timing cache). ``precision`` None keeps fp32 (the encoder)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # the default from TensorRT 10
    network = builder.create_network(0 if explicit is None or int(trt.__version__.split(".")[0]) >= 10
                                     else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        raise ExportError(f"TensorRT cannot parse {onnx_file}: {parser.get_error(0).desc()}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
    if precision is not None:
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(spec).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    config.set_timing_cache(config.create_timing_cache(cache), ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_file} (see its log above)")
    return bytes(engine), bytes(config.get_timing_cache().serialize())


def export_tensorrt(model_dir: str | Path | None, out: str | Path, precision: str = "fp16", force: bool = False,
                    opset: int | None = None) -> Path:
    """Checkpoint (or an ONNX export directory) → ONNX export + TensorRT engines in ``out``."""
    if precision not in PRECISIONS:
        raise ExportError(f"--dtype {precision!r}: TensorRT engines are built in fp16 or bf16")
    trt = require_tensorrt()  # before any work
    if not torch.cuda.is_available():
        raise ProviderError("building TensorRT engines needs a CUDA GPU, and none is visible")
    from .onnx import DEFAULT_OPSET, built_beside, check_opset, check_out_dir, load_for_export, write_export

    from_export = model_dir is not None and (Path(model_dir) / MANIFEST).is_file()  # reuse its ONNX graphs
    if from_export:
        read_manifest(model_dir)
        if opset is not None:
            raise ExportError(f"--opset: {model_dir} is an ONNX export already, its graphs keep their opset; export "
                              "the checkpoint instead to choose one")
        in_place = Path(out).resolve() == Path(model_dir).resolve()  # the engines go next to the graphs
        out = Path(out) if in_place else check_out_dir(out, force)
    else:
        opset, out = check_opset(opset or DEFAULT_OPSET), check_out_dir(out, force)
        model, model_dir = load_for_export(model_dir, out)
    # built beside --out and moved onto it whole, like `export onnx`: a failed build leaves --out as it was, and
    # a rebuild over an earlier export keeps none of its files (a copied export brings its own timing cache)
    out = out.resolve()
    with built_beside(out) as building:
        if from_export:
            shutil.copytree(model_dir, building, dirs_exist_ok=True)
        else:
            write_export(model, model_dir, building, "float32", opset)
        _build_engines(trt, building, precision)
    return out


def _build_engines(trt, out: Path, precision: str) -> None:
    """One engine per graph of the export in ``out`` (the encoder in fp32), the timing cache, and the manifest."""
    manifest = read_manifest(out)
    specs = graph_specs(_cfg(manifest), "float32")
    cache_file = out / TIMING_CACHE
    cache = cache_file.read_bytes() if cache_file.is_file() else b""
    engines = {}
    for name, spec in specs.items():
        engine, cache = build_engine(trt, out / spec.file, spec, None if name == "encoder" else precision, cache)
        (out / f"{name}.plan").write_bytes(engine)
        engines[name] = {"file": f"{name}.plan", "precision": "fp32" if name == "encoder" else precision,
                         "profiles": {k: [list(s) for s in v] for k, v in profile_shapes(spec).items()},
                         "sha256": file_sha256(out / f"{name}.plan")}
    cache_file.write_bytes(cache)
    manifest["engines"] = {"tensorrt": trt.__version__, **engines}
    manifest["files"].update({e["file"]: e["sha256"] for e in engines.values()})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _cfg(manifest: dict):
    from codefusion.config import ModelConfig
    return ModelConfig.from_dict(manifest["model"])


class EngineGraph(Graph):
    """One TensorRT engine behind the ``Graph`` interface of the ORT backend (bind by pointer, run)."""

    def __init__(self, file: Path, spec: GraphSpec, device: torch.device):
        trt = require_tensorrt()
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(file.read_bytes())
        self.context = self.engine.create_execution_context()
        self.spec, self.device = spec, device

    def run(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        keep = []
        for name, t in inputs.items():
            t = t.contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name, t in outputs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream)


class TensorRTBackend(OrtBackend):
    """The ORT backend's loop (same state, noise and fused step) over TensorRT engines. NOT run anywhere yet."""

    name = "tensorrt"

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        require_tensorrt()
        if device.type != "cuda":
            raise ProviderError("TensorRT runs on CUDA GPUs only: use --device cuda, or backend='onnxruntime' on CPU")
        if "engines" not in getattr(model, "manifest", {}):
            raise ExportError("backend='tensorrt' runs an export directory with engines: build one with "
                              "`codefusion export tensorrt --out DIR` and load it with from_pretrained(DIR)")
        super().__init__(model, device, torch.float32)

    def _providers(self, device: torch.device) -> list[str]:
        return []  # engines run on TensorRT's own runtime, not through onnxruntime

    def _graph(self, name: str, spec: GraphSpec) -> Graph:
        return EngineGraph(self.model.path / self.model.manifest["engines"][name]["file"], spec, self.device)

    @staticmethod
    def load_export(path: Path):
        return load_export(path)
