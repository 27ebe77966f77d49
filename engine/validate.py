"""Checks of user input before any tensor is touched: one clear line per problem."""
from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .config import LANGS, GenerationConfig, ModelConfig, clamp_mode
from .diffusion.solvers import SOLVERS
from .errors import CodeFusionError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise CodeFusionError("prompts must be a non-empty list of strings")
    for j, p in enumerate(prompts):
        if not isinstance(p, str):
            raise CodeFusionError(f"prompt {j} is a {type(p).__name__}, not a string")
        if not p.strip():
            raise CodeFusionError(f"prompt {j} is empty: describe the code you want in words")
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as e:
            raise CodeFusionError(f"prompt {j} is not valid Unicode (a lone surrogate at character {e.start}): "
                                  "send UTF-8 text") from None
    return [" ".join(p.split()) for p in prompts]  # the training data collapses whitespace the same way


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def out_dir(path, flag: str = "--out", create: bool = True) -> Path:
    """The output directory ``path``, created now (before any work, so a bad path fails in one line first);
    ``create=False`` only checks that it could be (for a command that may still fail before it writes)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CodeFusionError(f"{flag} {path} is a file: choose a directory")
    if not create:
        ancestor = next(p for p in (path, *path.absolute().parents) if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise CodeFusionError(f"cannot create {flag} {path}: {ancestor} is not a writable directory")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CodeFusionError(f"cannot create {flag} {path} ({e.strerror or e}): choose a writable directory") from None
    if not os.access(path, os.W_OK):
        raise CodeFusionError(f"{flag} {path} is not writable: choose a writable directory")
    return path


def out_file(path, force: bool = False, flag: str = "--out") -> Path:
    """A file to write: its folder must exist; an existing file is kept unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise CodeFusionError(f"{flag} {path} is a directory: name the file to write, e.g. {path / 'tokenizer.json'}")
    if path.exists() and not force:
        raise CodeFusionError(f"{flag} {path} exists: choose another path or pass --force to overwrite it")
    if not path.parent.is_dir():
        raise CodeFusionError(f"{flag} {path}: the folder {path.parent} does not exist; create it first")
    return path


def check_config(c: GenerationConfig, model: ModelConfig, backend: str) -> GenerationConfig:
    """→ ``c`` in one canonical form: numbers as plain Python ints, floats and bools (NumPy's included),
    ``trace_steps`` a sorted tuple without repeats (read once: an iterator is consumed by reading it), ``clamp``
    its mode's name (True → "nearest"), so equal requests batch together; or a CodeFusionError naming the first
    bad field."""
    if not isinstance(c, GenerationConfig):
        raise CodeFusionError(f"config must be a codefusion.GenerationConfig, got {type(c).__name__}: "
                              "pass GenerationConfig(steps=…, …)")
    T = model.diffusion_steps
    if c.lang not in LANGS:
        raise CodeFusionError(f"unknown language {c.lang!r}: choose one of {', '.join(LANGS)}")
    if not _is_int(c.steps) or not 1 <= c.steps <= T:
        raise CodeFusionError(f"steps must be an integer in 1..{T}, got {c.steps!r}")
    if c.solver not in SOLVERS:
        raise CodeFusionError(f"unknown solver {c.solver!r}: choose one of {', '.join(SOLVERS)}")
    if not _is_int(c.num_samples) or c.num_samples < 1:
        raise CodeFusionError(f"num_samples must be an integer ≥ 1, got {c.num_samples!r}")
    if not _is_int(c.seed) or not 0 <= c.seed < 2 ** 63:
        raise CodeFusionError(f"seed must be an integer in 0..2^63-1, got {c.seed!r}")
    if c.max_length is not None and (not _is_int(c.max_length) or not 1 <= c.max_length <= model.max_target_len):
        raise CodeFusionError(f"max_length must be an integer in 1..{model.max_target_len}, got {c.max_length!r}")
    clamp_mode(c.clamp)
    if isinstance(c.eta, (bool, np.bool_)) or not isinstance(c.eta, numbers.Real) or not 0.0 <= c.eta <= 1.0:
        raise CodeFusionError(f"eta must be a number in [0, 1], got {c.eta!r}")
    if not isinstance(c.early_exit, (bool, np.bool_)):
        raise CodeFusionError(f"early_exit must be True or False, got {c.early_exit!r}")
    if isinstance(c.trace_steps, (str, bytes)) or not isinstance(c.trace_steps, Iterable):
        raise CodeFusionError(f"trace_steps must be a list of step counts, got {c.trace_steps!r}")
    trace = tuple(c.trace_steps)
    bad = [s for s in trace if not _is_int(s) or not 1 <= s <= c.steps]
    if bad:
        raise CodeFusionError(f"trace_steps must be step counts in 1..{c.steps}, got {bad[0]!r}")
    if c.early_exit and backend == "reference":
        raise CodeFusionError("early_exit is not supported by the 'reference' backend (the oracle runs every "
                              "step): use backend='torch', or early_exit=False")
    if c.early_exit and trace:
        raise CodeFusionError("early_exit and trace_steps cannot be combined: ask for one of them")
    return replace(c, steps=int(c.steps), num_samples=int(c.num_samples), seed=int(c.seed),
                   max_length=None if c.max_length is None else int(c.max_length), eta=float(c.eta),
                   early_exit=bool(c.early_exit), trace_steps=tuple(sorted({int(s) for s in trace})),
                   clamp=None if c.clamp is None else clamp_mode(c.clamp))


def native_bf16(device) -> bool:
    """Whether bf16 matmuls run at hardware speed on ``device``: a CUDA GPU that supports them, or a CPU with AMX
    or AVX512-BF16. An AVX2-only CPU emulates them (measured on a 2-core AMD EPYC: a 512 × 512 matmul 261 ms in
    bf16 against 5.4 ms in fp32); where torch cannot tell, bf16 is taken to be native."""
    device = parse_device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    probes = [p for p in probes if p is not None]
    return device.type != "cpu" or not probes or any(p() for p in probes)


def resolve_dtype(dtype: str, device) -> str:
    """``auto``: bfloat16 where it is native on ``device`` (native_bf16), float32 elsewhere; any other name as
    given (parse_dtype checks it)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16(device) else "float32"


def slow_dtype_note(dtype: str, device) -> str | None:
    """One line for a user who asked for bf16 on a CPU that emulates it; None otherwise."""
    if dtype not in ("bfloat16", "bf16") or parse_device(device).type != "cpu" or native_bf16(device):
        return None
    return ("this CPU has no native bf16 (no AMX or AVX512-BF16): bfloat16 runs tens of times slower than float32 "
            "here; pass --dtype float32 (or auto)")


def resolve_dtypes(spec: str, device) -> tuple[str, str | None]:
    """A --dtype value, one name or comma-separated (bench), with each ``auto`` resolved; and the note when any
    of them is bf16 on a CPU that emulates it (None otherwise)."""
    names = [resolve_dtype(d, device) for d in spec.split(",")]
    notes = [n for n in (slow_dtype_note(d, device) for d in names) if n]
    return ",".join(names), (notes[0] if notes else None)


def parse_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise CodeFusionError(f"unknown dtype {dtype!r}: choose float32, bfloat16 or float16")
    return DTYPES[dtype]


def parse_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise CodeFusionError(f"unknown device {device!r}: use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CodeFusionError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise CodeFusionError(f"device {device} is not supported: use cpu or cuda[:N]")
    return device
