"""Fused residual add + LayerNorm (forward), with the first block's input terms folded in:

    s = x [+ residual] [+ pos[row % n]] [+ time_table[t]]        the residual stream, stored in x's dtype
    y = (s − mean(s)) / √(var(s) + eps) · w + b                   the next sublayer's input

A pre-LN block does "x = x + sublayer(...); h = LN(x)" three times: unfused that is an add (read 2,
write 1) and a norm (read 1, write 1) per sublayer; fused it is read 2, write 2, and one launch
instead of two. At the first block of N it also absorbs the positional embedding and the timestep
table row (gathered by a device index: no host sync), which saves the index_select and two adds that
``inp(x) + pos + table[t]`` costs — 3 launches per step.

Numerics: sums and statistics in fp32; s is rounded to x's dtype before the norm, as the unfused model
stores it. Rows of any width d (masked to BLOCK_D); x, residual: (B, n, d) contiguous; fp32/fp16/bf16.
Tested: interpreter on CPU; sm_90 compile-checked; GPU by bench/gpu_check.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check, interpreting, same_device
from ._interp import round_to_bf16


@triton.jit
def _add_layernorm_kernel(x_ptr, res_ptr, pos_ptr, table_ptr, t_ptr, w_ptr, b_ptr, s_ptr, y_ptr, rows, n, d, eps,
                          HAS_RES: tl.constexpr, HAS_POS: tl.constexpr, HAS_TIME: tl.constexpr,
                          BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, ROUND_BF16: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < d
    ok = (r < rows)[:, None] & col_ok[None, :]
    offs = r.to(tl.int64)[:, None] * d + cols[None, :]

    s = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        s += tl.load(res_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_POS:
        s += tl.load(pos_ptr + (r % n)[:, None] * d + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    if HAS_TIME:
        t = tl.load(t_ptr)
        s += tl.load(table_ptr + t * d + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if ROUND_BF16:  # the interpreter's bf16 cast truncates: round as a GPU's does
        s = round_to_bf16(s)
    s_out = s.to(s_ptr.dtype.element_ty)
    tl.store(s_ptr + offs, s_out, mask=ok)

    s = s_out.to(tl.float32)
    mean = tl.sum(s, axis=1) / d
    diff = tl.where(ok, s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt_rn(tl.sum(diff * diff, axis=1) / d + eps)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = diff * rstd[:, None] * w[None, :] + b[None, :]
    if ROUND_BF16:
        y = round_to_bf16(y)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=ok)


def block_rows(block_d: int, interp: bool) -> int:
    """Rows per program: 256 in the interpreter (each program costs ~ms in Python); on the GPU ~4K elements
    per program, 4 warps (compile_check builds the same)."""
    return 256 if interp else max(1, 4096 // block_d)


def _launch(x, residual, pos, time_table, t, weight, bias, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    check(x.dim() == 3 and x.is_contiguous(), f"x must be a contiguous (B, n, d) tensor, got {tuple(x.shape)}")
    check(x.dtype in (torch.float32, torch.float16, torch.bfloat16), f"x dtype {x.dtype} not supported")
    B, n, d = x.shape
    if residual is not None:
        check(residual.shape == x.shape and residual.dtype == x.dtype and residual.is_contiguous(),
              "residual must be contiguous, of x's shape and dtype")
    if pos is not None:
        check(pos.dim() == 2 and pos.shape[0] >= n and pos.shape[1] == d and pos.is_contiguous(),
              f"pos must be a contiguous (≥{n}, {d}) table")
    if time_table is not None:
        check(time_table.dim() == 2 and time_table.shape[1] == d and time_table.is_contiguous(),
              f"time_table must be a contiguous (T, {d}) table")
        check(t is not None and t.numel() == 1 and t.dtype == torch.int64, "t must be a 1-element int64 tensor")
    check(weight.shape == (d,) and bias.shape == (d,), f"weight and bias must be ({d},)")
    check(same_device(x, residual, pos, time_table, t, weight, bias), "add_layernorm inputs must be on one device")
    s, y = torch.empty_like(x), torch.empty_like(x)
    rows = B * n
    if rows == 0:
        return s, y
    block_d = triton.next_power_of_2(d)
    block_r = min(triton.next_power_of_2(rows), block_rows(block_d, interpreting()))
    _add_layernorm_kernel[(triton.cdiv(rows, block_r),)](
        x, residual if residual is not None else x, pos if pos is not None else x,
        time_table if time_table is not None else x, t if t is not None else x, weight, bias, s, y, rows, n, d, eps,
        HAS_RES=residual is not None, HAS_POS=pos is not None, HAS_TIME=time_table is not None,
        BLOCK_R=block_r, BLOCK_D=block_d, ROUND_BF16=interpreting() and x.dtype == torch.bfloat16, num_warps=4)
    return s, y


@torch.library.custom_op("codefusion::add_layernorm", mutates_args=())
def add_layernorm(x: torch.Tensor, residual: torch.Tensor | None, pos: torch.Tensor | None,
                  time_table: torch.Tensor | None, t: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                  eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, LayerNorm(s)) with s = x [+ residual] [+ pos[:n]] [+ time_table[t]]. Oracle:
    kernels.reference.add_layernorm."""
    return _launch(x, residual, pos, time_table, t, weight, bias, eps)


@add_layernorm.register_fake
def _(x, residual, pos, time_table, t, weight, bias, eps=1e-5):
    return torch.empty_like(x), torch.empty_like(x)
