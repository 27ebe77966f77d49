"""Pure-PyTorch oracles of the kernels, one per kernel file and under the same name.

Each takes the kernel's arguments and an ``upcast`` switch: ``upcast=True`` computes in fp32 (the
accuracy oracle), ``upcast=False`` in the inputs' dtype (the "same-dtype PyTorch" error the test rule
``kernel error ≤ 2 × same-dtype PyTorch error + atol`` compares against).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from codefusion.noise import gaussian


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
              upcast: bool = True) -> torch.Tensor:
    """softmax(q kᵀ / √D) v, non-causal, as the reference model writes it out (model/layers.py).

    q: (B, h, n, D), k, v: (B, h, S, D), key_mask: (B, S) bool (False = padding) or None.
    Returns (B, n, h, D) — the layout the kernel writes, so ``.view(B, n, h·D)`` is free."""
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, n, S)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    out = scores.softmax(dim=-1) @ v  # (B, h, n, D)
    return out.transpose(1, 2).to(dtype)


def add_layernorm(x: torch.Tensor, residual: torch.Tensor | None, pos: torch.Tensor | None,
                  time_table: torch.Tensor | None, t: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                  eps: float = 1e-5, upcast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """s = x [+ residual] [+ pos[:n]] [+ time_table[t]];  (s, LayerNorm(s)).

    x, residual: (B, n, d); pos: (≥n, d); time_table: (T, d) with t a 1-element int64 tensor.
    s is rounded to x's dtype before the norm, as the unfused model stores it."""
    dtype = x.dtype
    s = x.float() if upcast else x
    for extra in (residual, None if pos is None else pos[: x.shape[1]]):
        if extra is not None:
            s = s + (extra.float() if upcast else extra)
    if time_table is not None:
        row = time_table.index_select(0, t.reshape(1))
        s = s + (row.float() if upcast else row)
    s = s.to(dtype)
    w, b = (weight.float(), bias.float()) if upcast else (weight, bias)
    y = F.layer_norm(s.float() if upcast else s, (x.shape[-1],), w, b, eps)
    return s, y.to(dtype)


def solver_step(x_t: torch.Tensor, x0_hat: torch.Tensor, x0_prev: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                c: torch.Tensor, sigma: torch.Tensor, timesteps: torch.Tensor, step: torch.Tensor,
                seeds: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """(★) of diffusion/solvers.py with the counter-based z of noise.py, all fp32:

        z = gaussian(seeds, samples, timesteps[step])      (B, n, d)
        x_prev = a[step]·x̂0 + b[step]·x_t + c[step]·x̂0_prev + σ[step]·z"""
    i = step.reshape(1)
    t = timesteps.index_select(0, i).reshape(())
    z = gaussian(seeds, samples, t, tuple(x_t.shape[1:]))
    at = lambda col: col.index_select(0, i)  # noqa: E731
    return at(a) * x0_hat + at(b) * x_t + at(c) * x0_prev + at(sigma) * z
