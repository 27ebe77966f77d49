"""Fused non-causal attention (online softmax), self- (n × n) and cross-attention (n × S) with an optional
key-padding mask: out = softmax(q kᵀ / √D + mask) v, one kernel, no (n × S) score tensor in memory.

    q: (B, h, n, D), k, v: (B, h, S, D), any strides with a unit last stride (the fused-QKV projection's
    permuted view and the cached cross-attention K/V go in without copies); key_mask: (B, S) bool.
    out: (B, n, h, D) contiguous, so the caller's ``.view(B, n, h·D)`` before the output projection is free.

Bytes: reads q, k, v once per query block (at n, S ≤ 128 and BLOCK_M = 64 that is k, v twice), writes
out once; the unfused path also writes and rereads (B, h, n, S) scores and probabilities, and pays
5 launches instead of 1.

Numerics: scores and softmax in fp32 (exp2 with log2 e folded into the scale); fp16/bf16 operands go to
the tensor cores with fp32 accumulation, P is cast to V's dtype before P·V (as flash-attention does);
fp32 operands use IEEE fp32 dots (no TF32), so the fp32 backend matches the reference. Under
TRITON_INTERPRET=1 the dots run on fp32 copies (the interpreter's bf16 dot is wrong). A query row whose
keys are all masked returns 0 (the written-out reference returns NaN). Limits: D ∈ {16, 32, 64, 128};
n, S ≥ 1, tails masked. Tested: interpreter on CPU; sm_90 compile-checked; GPU by bench/gpu_check.py.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import check, interpreting, same_device
from ._interp import round_to_bf16

LOG2E = 1.4426950408889634
HEAD_DIMS = (16, 32, 64, 128)


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr,
                      sq_b, sq_h, sq_n, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sm_b, sm_s, so_b, so_h, so_n,
                      H, n, S, qk_scale,
                      HAS_MASK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      UPCAST: tl.constexpr, IEEE: tl.constexpr, ROUND_BF16: tl.constexpr):
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < n

    q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_n + dims[None, :], mask=row_ok[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of the scaled scores (log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(score − m_i)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start in range(0, S, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < S
        kt = tl.load(k_base + cols[None, :] * sk_s + dims[:, None], mask=col_ok[None, :], other=0.0)  # (D, BLOCK_N)
        v = tl.load(v_base + cols[:, None] * sv_s + dims[None, :], mask=col_ok[:, None], other=0.0)  # (BLOCK_N, D)
        if UPCAST:
            kt, v = kt.to(tl.float32), v.to(tl.float32)
        if IEEE:
            s = tl.dot(q, kt, input_precision="ieee")
        else:
            s = tl.dot(q, kt)
        keep = col_ok
        if HAS_MASK:
            keep = keep & (tl.load(mask_ptr + b * sm_b + cols * sm_s, mask=col_ok, other=0) != 0)
        s = tl.where(keep[None, :], s * qk_scale, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # fully masked so far: keep exp2 finite
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if IEEE:
            pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new

    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    if ROUND_BF16:  # the interpreter's bf16 cast truncates: round as a GPU's does
        out = round_to_bf16(out)
    tl.store(o_ptr + b * so_b + h * so_h + rows[:, None] * so_n + dims[None, :], out.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None])


def _blocks(n: int, S: int, interp: bool, fp32: bool = False) -> tuple[int, int]:
    """Query and key block sizes: one tile per (b, h) in the interpreter (each program costs ~ms in
    Python); on the GPU 64 × 64 for fp16/bf16 (n, S ≤ 128: at most 2 × 2 tiles, no register spills up to
    D = 128 on sm_90) and 32 × 32 for fp32, whose IEEE dots at 64 × 64 spill (ptxas -v for sm_90, D = 64:
    255 registers and ~2–20 KB of spill traffic; 32 × 32: no spills, 89 registers with Triton 3.9's ptxas and
    ~205 with Triton 3.6's). compile_check builds these."""
    cap = 128 if interp else 32 if fp32 else 64
    fit = lambda x: max(16, min(cap, triton.next_power_of_2(x)))  # noqa: E731  (tl.dot needs ≥ 16)
    return fit(n), fit(S)


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    check(q.dim() == 4 and k.dim() == 4 and v.shape == k.shape,
          f"q must be (B, h, n, D) and k, v (B, h, S, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, n, D = q.shape
    S = k.shape[2]
    check(k.shape[:2] == (B, H) and k.shape[3] == D, f"k {tuple(k.shape)} does not match q {tuple(q.shape)}")
    check(D in HEAD_DIMS, f"head dim {D} not supported: one of {HEAD_DIMS}")
    check(q.dtype == k.dtype == v.dtype and q.dtype in (torch.float32, torch.float16, torch.bfloat16),
          f"q, k, v must share one of fp32/fp16/bf16, got {q.dtype}, {k.dtype}, {v.dtype}")
    check(q.stride(3) == k.stride(3) == v.stride(3) == 1, "q, k, v need a unit stride on the head dim")
    check(n >= 1 and S >= 1, f"need n, S ≥ 1, got n={n}, S={S}")
    if key_mask is not None:
        check(key_mask.shape == (B, S) and key_mask.dtype == torch.bool, f"key_mask must be ({B}, {S}) bool")
        key_mask = key_mask.view(torch.uint8)
    check(same_device(q, k, v, key_mask), "q, k, v and key_mask must be on one device")
    out = torch.empty(B, n, H, D, device=q.device, dtype=q.dtype)
    interp = interpreting()
    block_m, block_n = _blocks(n, S, interp, q.dtype == torch.float32)
    mask_arg = key_mask if key_mask is not None else q  # never read when HAS_MASK is False
    sm_b, sm_s = key_mask.stride() if key_mask is not None else (0, 0)
    grid = (triton.cdiv(n, block_m), B * H)
    _attention_kernel[grid](q, k, v, mask_arg, out, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
                            k.stride(2), v.stride(0), v.stride(1), v.stride(2), sm_b, sm_s, out.stride(0),
                            out.stride(2), out.stride(1), H, n, S, LOG2E / math.sqrt(D),
                            HAS_MASK=key_mask is not None, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n,
                            UPCAST=interp, IEEE=q.dtype == torch.float32,
                            ROUND_BF16=interp and q.dtype == torch.bfloat16, num_warps=4)
    return out


@torch.library.custom_op("codefusion::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n, h, D) = softmax(q kᵀ/√D) v over the unmasked keys. Oracle: kernels.reference.attention."""
    return _launch(q, k, v, key_mask)


@attention.register_fake
def _(q, k, v, key_mask=None):
    B, H, n, D = q.shape
    return q.new_empty(B, n, H, D)
