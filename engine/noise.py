"""Counter-based Gaussian noise: Philox4x32-10 (Salmon et al., SC'11) + Box–Muller, in pure torch.

Every normal is a pure function of (seed, sample, step, element), so

* a prompt's noise does not depend on its batch neighbours (batch of N ≡ N singles),
* a request can be replayed exactly from its seed, on any device (equal up to a few ulps of
  ``log``/``cos``/``sin``), and
* later kernels (Triton on GPU, C++ on CPU) can draw the same numbers inside a fused step.

Philox layout (one 128-bit counter yields 4 normals):

    key     = (seed mod 2^32, seed >> 32)
    counter = (element // 4, sample, step, stream)

``element`` is the flat index into one sample's (n, d) tensor, so position p, channel c draws the
same number whatever the target length n. ``stream`` separates the draw of x_T from the per-step
noise. Integers are held in int64 and every product stays below 2^63 (16-bit split in
``_mulhilo``), so nothing relies on signed overflow.
"""
from __future__ import annotations

import math

import torch

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
MASK32 = 0xFFFFFFFF
STREAM_INIT = 0  # x_T
STREAM_STEP = 1  # z of each solver step
INIT_STEP = 0xFFFFFFFF  # `step` word used for the x_T draw


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of a * m for a < 2^32 in int64, without overflowing int64."""
    p_lo = a * (m & 0xFFFF)  # < 2^48
    p_hi = a * (m >> 16)  # < 2^48
    s = ((p_hi & 0xFFFF) << 16) + p_lo  # < 2^49
    return (p_hi >> 16) + (s >> 32), s & MASK32


def philox4x32(counter: tuple[torch.Tensor, ...], key: tuple[torch.Tensor, torch.Tensor], rounds: int = 10):
    """Philox4x32-R bijection. ``counter``: 4 int64 tensors of 32-bit words, ``key``: 2. Broadcasts."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W[0]) & MASK32
            k1 = (k1 + PHILOX_W[1]) & MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M[0])
        hi1, lo1 = _mulhilo(c2, PHILOX_M[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _uniform(x: torch.Tensor) -> torch.Tensor:
    """Top 24 bits k of a 32-bit word → fp32 u = (k + 0.5) / 2^24 in (0, 1], never 0 (log u stays finite).
    For k ≥ 2^23 the fp32 sum k + 0.5 rounds to an even integer, so the upper half takes every other value and
    k = 2^24 − 1 gives u = 1 (r = 0, so z = 0: probability 2^-24 per pair). Kept as is: changing it would change
    every sample."""
    return ((x >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def _box_muller(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = (2.0 * math.pi) * u2
    return r * torch.cos(theta), r * torch.sin(theta)


def philox_words(seeds: torch.Tensor, samples: torch.Tensor, step: torch.Tensor | int, groups: int,
                 stream: int = STREAM_STEP) -> tuple[torch.Tensor, ...]:
    """The 4 Philox words of counter (g, sample, step, stream), key (seed lo, seed hi) for g < groups: four
    (B, groups) int64 tensors of 32-bit words, on ``seeds.device``."""
    device = seeds.device
    c0 = torch.arange(groups, device=device, dtype=torch.int64).unsqueeze(0)  # (1, G)
    c1 = (samples.to(torch.int64) & MASK32).unsqueeze(1)  # (B, 1)
    c2 = torch.as_tensor(step, dtype=torch.int64, device=device).reshape(1, 1) & MASK32
    c3 = torch.full((1, 1), stream, dtype=torch.int64, device=device)
    seeds = seeds.to(torch.int64).unsqueeze(1)
    k0, k1 = seeds & MASK32, (seeds >> 32) & MASK32
    return philox4x32((c0, c1, c2, c3), (k0, k1))


def gaussian(seeds: torch.Tensor, samples: torch.Tensor, step: torch.Tensor | int, shape: tuple[int, int],
             stream: int = STREAM_STEP, words=philox_words) -> torch.Tensor:
    """Standard normals of shape (B, *shape), fp32, on ``seeds.device``.

    seeds, samples: (B,) int64, one key per row (row = one prompt's one sample).
    step: int or 0-d int64 tensor (a device tensor keeps the loop free of host syncs).
    words: ``philox_words`` or a drop-in with its signature and results (the C++ one of
    kernels/solver_step_cpu.py: integers, so exactly these; Box–Muller then runs here, in torch).
    """
    numel = shape[0] * shape[1]
    groups = (numel + 3) // 4
    x0, x1, x2, x3 = words(seeds, samples, step, groups, stream)
    z0, z1 = _box_muller(_uniform(x0), _uniform(x1))
    z2, z3 = _box_muller(_uniform(x2), _uniform(x3))
    z = torch.stack((z0, z1, z2, z3), dim=-1).reshape(seeds.shape[0], groups * 4)  # (B, 4G)
    return z[:, :numel].reshape(seeds.shape[0], *shape)
