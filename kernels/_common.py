"""Helpers shared by the kernel launchers (no kernels here)."""
from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1 (CPU tests): kernels then upcast bf16/fp16 ``tl.dot`` operands and avoid
    libdevice, which the interpreter cannot run. Read at launch; the jit decorator read it at import."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check(cond: bool, msg: str) -> None:
    """Launcher input check: a ValueError naming the offending argument (asserts vanish under -O)."""
    if not cond:
        raise ValueError(msg)


def same_device(*tensors: torch.Tensor) -> bool:
    return len({t.device for t in tensors if t is not None}) == 1
