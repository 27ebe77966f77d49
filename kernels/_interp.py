"""Device helpers for the interpreter's numerics (TRITON_INTERPRET=1, the CPU tests), used behind a constexpr
switch so the GPU build never contains them."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def round_to_bf16(x):
    """fp32 ``x`` rounded to the nearest bf16 value (ties to even), still as fp32: the interpreter's fp32 → bf16
    cast truncates (rounds toward zero, with or without fp_downcast_rounding="rtne"), up to one bf16 ulp off
    where a GPU's cast is within half of one. Cast after this, the result is the GPU's. NaN and ±inf pass."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))  # a NaN's payload must not carry into ±0 / inf
