"""The sampling loop: x_T → x̂0 over a StepTable, run by any backend.

Graph-safe by construction: no ``.item()``, no host tensors, no data-dependent Python branch;
``run`` takes [start, stop) so callers can chunk it (trace, early exit, k-step CUDA graphs).
"""
from __future__ import annotations

import torch

from ..backends.base import Backend, Memory, SamplerState
from ..noise import INIT_STEP, STREAM_INIT, gaussian
from .solvers import StepTable


def initial_state(backend: Backend, memory: Memory, table: StepTable, seeds: torch.Tensor, samples: torch.Tensor,
                  n: int) -> SamplerState:
    """x_T ~ N(0, I) from the counter-based noise, keyed by (seed, sample)."""
    x_T = gaussian(seeds, samples, INIT_STEP, (n, backend.cfg.d_embed), stream=STREAM_INIT)
    return SamplerState(x_T, torch.zeros_like(x_T), memory, table, seeds, samples)


def run(backend: Backend, state: SamplerState, start: int = 0, stop: int | None = None) -> SamplerState:
    """Steps [start, stop) (default: to the end) through the backend's ``run_steps`` (a Python loop
    of ``step``, or a CUDA-graph replay of the same steps)."""
    return backend.run_steps(state, start, len(state.table) if stop is None else stop)
