"""Fused denoising step: counter-based noise + the solver update (★) of diffusion/solvers.py, one pass.

    i = step[0];  t = timesteps[i]                                coefficients read on the device
    z = BoxMuller(Philox4x32-10(counter=(e//4, sample, t, 1), key=seed))      as engine/noise.py
    x_prev = a[i]·x̂0 + b[i]·x_t [+ c[i]·x̂0_prev] + σ[i]·z                    (★), fp32

Bytes per element: reads x̂0, x_t (and x̂0_prev for DPM-Solver++(2M), ``HAS_PREV``) and writes x_prev:
12 (16) bytes, against ~40 torch kernels (Philox alone is ~30 int64 ops) and ~200 bytes unfused.
Nothing syncs with the host: the step index is a device tensor, so a CUDA graph can replay it.

Noise layout (engine/noise.py): element e of one sample's flat (n, d) tensor takes lane e % 4 of the
Philox block of counter e // 4; lanes (0, 1) are (r cos θ, r sin θ) of words (x0, x1), lanes (2, 3)
of (x2, x3). Each program draws BLOCK_G counters and interleaves the four lanes with ``tl.join``.

Accuracy: equal to the torch reference up to a few ulps of log/cos/sin (GPU: libdevice, ≤ 2 ulp;
interpreter: numpy). Dtypes: fp32 state only (DESIGN §2). Tested: TRITON_INTERPRET=1 on CPU; the
sm_90 build is compile-checked (tests/test_kernels.py), GPU runs by bench/gpu_check.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ._common import check, interpreting, same_device

PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)
STREAM_STEP = tl.constexpr(1)  # engine/noise.py STREAM_STEP


@triton.jit
def _philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 blocks (Salmon et al. 2011), the round of engine/noise.py philox4x32."""
    for r in tl.static_range(10):
        if r > 0:
            k0 = k0 + PHILOX_W0
            k1 = k1 + PHILOX_W1
        hi0 = tl.umulhi(c0, PHILOX_M0)
        lo0 = c0 * PHILOX_M0
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo1 = c2 * PHILOX_M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@triton.jit
def _uniform(x):
    """Top 24 bits → fp32 in (0, 1), never 0 (noise.py _uniform)."""
    return ((x >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)


@triton.jit
def _box_muller(x_a, x_b, PRECISE: tl.constexpr):
    u1 = _uniform(x_a)
    theta = 6.283185307179586 * _uniform(x_b)  # fp32(2π)·u2, as torch rounds the scalar
    if PRECISE:  # GPU: libdevice is accurate to ≤ 2 ulp; tl.cos/sin/log may lower to approximations
        r = tl.sqrt_rn(-2.0 * libdevice.log(u1))
        return r * libdevice.cos(theta), r * libdevice.sin(theta)
    else:  # the interpreter cannot call libdevice; numpy's float32 functions are accurate
        r = tl.sqrt_rn(-2.0 * tl.log(u1))
        return r * tl.cos(theta), r * tl.sin(theta)


@triton.jit
def _solver_step_kernel(xt_ptr, x0_ptr, xp_ptr, out_ptr, a_ptr, b_ptr, c_ptr, sigma_ptr, t_ptr, step_ptr,
                        seed_ptr, sample_ptr, numel, HAS_PREV: tl.constexpr, BLOCK_G: tl.constexpr,
                        PRECISE: tl.constexpr):
    pid_g, row = tl.program_id(0), tl.program_id(1)
    i = tl.load(step_ptr)
    a, b, sigma = tl.load(a_ptr + i), tl.load(b_ptr + i), tl.load(sigma_ptr + i)
    t = tl.load(t_ptr + i)
    seed, sample = tl.load(seed_ptr + row), tl.load(sample_ptr + row)

    g = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)  # Philox counter word 0: element // 4
    zero = tl.zeros([BLOCK_G], dtype=tl.uint32)
    c0 = g.to(tl.uint32)
    c1 = zero + (sample & 0xFFFFFFFF).to(tl.uint32)
    c2 = zero + (t & 0xFFFFFFFF).to(tl.uint32)
    c3 = zero + STREAM_STEP
    k0 = zero + (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = zero + ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    x0w, x1w, x2w, x3w = _philox4x32_10(c0, c1, c2, c3, k0, k1)
    z0, z1 = _box_muller(x0w, x1w, PRECISE)
    z2, z3 = _box_muller(x2w, x3w, PRECISE)
    z = tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), (4 * BLOCK_G,))  # lanes 0,1,2,3 of each g

    e = pid_g * (4 * BLOCK_G) + tl.arange(0, 4 * BLOCK_G)
    inside = e < numel
    offs = row.to(tl.int64) * numel + e
    x0 = tl.load(x0_ptr + offs, mask=inside)
    xt = tl.load(xt_ptr + offs, mask=inside)
    out = a * x0 + b * xt
    if HAS_PREV:
        out += tl.load(c_ptr + i) * tl.load(xp_ptr + offs, mask=inside)
    out += sigma * z
    tl.store(out_ptr + offs, out, mask=inside)


def _launch(x_t, x0_hat, x0_prev, a, b, c, sigma, timesteps, step, seeds, samples, has_prev: bool) -> torch.Tensor:
    check(x_t.dim() == 3 and x0_hat.shape == x_t.shape and x0_prev.shape == x_t.shape,
          f"x_t, x0_hat, x0_prev must be (B, n, d) of one shape, got {x_t.shape}, {x0_hat.shape}, {x0_prev.shape}")
    for name, x in (("x_t", x_t), ("x0_hat", x0_hat), ("x0_prev", x0_prev)):
        check(x.dtype == torch.float32 and x.is_contiguous(), f"{name} must be contiguous fp32 (the diffusion state)")
    K = timesteps.shape[0]
    for name, col in (("a", a), ("b", b), ("c", c), ("sigma", sigma)):
        check(col.shape == (K,) and col.dtype == torch.float32, f"{name} must be ({K},) fp32 like the StepTable")
    check(timesteps.dtype == torch.int64 and step.dtype == torch.int64 and step.numel() == 1,
          "timesteps and step must be int64, step a 1-element tensor")
    B = x_t.shape[0]
    check(seeds.shape == (B,) and samples.shape == (B,) and seeds.dtype == samples.dtype == torch.int64,
          f"seeds and samples must be ({B},) int64")
    check(same_device(x_t, x0_hat, x0_prev, a, b, c, sigma, timesteps, step, seeds, samples),
          "all solver_step inputs must be on one device")
    out = torch.empty_like(x_t)
    numel = x_t.shape[1] * x_t.shape[2]
    if B == 0 or numel == 0:
        return out
    groups = triton.cdiv(numel, 4)
    interp = interpreting()
    block_g = min(triton.next_power_of_2(groups), 8192 if interp else 256)  # interpreter: one program per row
    grid = (triton.cdiv(groups, block_g), B)
    _solver_step_kernel[grid](x_t, x0_hat, x0_prev, out, a, b, c, sigma, timesteps, step, seeds, samples, numel,
                              HAS_PREV=has_prev, BLOCK_G=block_g, PRECISE=not interp, num_warps=4)
    return out


@torch.library.custom_op("codefusion::solver_step", mutates_args=())
def solver_step(x_t: torch.Tensor, x0_hat: torch.Tensor, x0_prev: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                c: torch.Tensor, sigma: torch.Tensor, timesteps: torch.Tensor, step: torch.Tensor, seeds: torch.Tensor,
                samples: torch.Tensor, has_prev: bool = True) -> torch.Tensor:
    """x_prev (B, n, d) fp32 of (★) with in-kernel noise; ``has_prev=False`` skips reading x̂0_prev (c ≡ 0:
    ddpm, ddim). Oracle: kernels.reference.solver_step."""
    return _launch(x_t, x0_hat, x0_prev, a, b, c, sigma, timesteps, step, seeds, samples, has_prev)


@solver_step.register_fake
def _(x_t, x0_hat, x0_prev, a, b, c, sigma, timesteps, step, seeds, samples, has_prev=True):
    return torch.empty_like(x_t)
