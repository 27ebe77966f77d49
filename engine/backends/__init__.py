"""Backend registry: name → "module:Class", imported only when that backend is asked for, so that
``import codefusion`` never imports Triton, onnxruntime or TensorRT."""
from __future__ import annotations

import importlib

from ..errors import CodeFusionError
from .base import Backend, Memory, SamplerState

_REGISTRY: dict[str, str] = {
    "reference": "codefusion.backends.reference:ReferenceBackend",
    "torch": "codefusion.backends.fast:TorchBackend",
    "torch-compile": "codefusion.backends.fast:CompiledTorchBackend",
    "triton": "codefusion.backends.fused:TritonBackend",
    "onnxruntime": "codefusion.export.ort:OrtBackend",
    "tensorrt": "codefusion.export.tensorrt:TensorRTBackend",
}


def register(name: str, target: str) -> None:
    """Register a backend by import path ("package.module:Class")."""
    _REGISTRY[name] = target


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> type[Backend]:
    if name not in _REGISTRY:
        raise CodeFusionError(f"unknown backend {name!r}: choose one of {', '.join(available())}")
    module, cls = _REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise CodeFusionError(f"backend {name!r} needs a package that is not installed ({e.name}); "
                              f"install it and retry") from None


__all__ = ["Backend", "Memory", "SamplerState", "available", "get_backend", "register"]
