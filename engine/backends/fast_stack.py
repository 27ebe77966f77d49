"""The ``torch`` backend's model twins: FastStack and FastBlock, the reference's N and D restructured for
inference (fused self-attention QKV, cross-attention K/V cached in ``FastMemory``, the time MLP as a table),
and PackedLinear, their CPU bf16 linears in oneDNN's blocked layout.

Kept apart from the backend (fast.py), which adds the loop, noise and device logic, because two other users
build on these modules alone: the ``triton`` backend's kernel twins (fused.py) and the exported graphs
(export/graphs.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CodeFusionError
from ..model.layers import attend
from .base import Memory


@dataclass(frozen=True, eq=False)
class FastMemory(Memory):
    """E_s plus, per block of N then D, its cross-attention (K, V), each (B, h, S, d/h)."""

    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    attn_mask: torch.Tensor | None = None  # (B, 1, 1, S) bool, True where a key may be attended
    cond: torch.Tensor | None = None  # (B, 1, d) N's pooled condition C(E_s), when the model has one

    def repeat_interleave(self, k: int) -> "FastMemory":
        rep = lambda x: x.repeat_interleave(k, 0)  # noqa: E731
        return replace(self, states=rep(self.states), mask=rep(self.mask), attn_mask=rep(self.attn_mask),
                       kv=tuple((rep(a), rep(b)) for a, b in self.kv),
                       cond=None if self.cond is None else rep(self.cond))


def _split(x: torch.Tensor, shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
    """A flat (Σ B_g·n_g, ·) stream cut into its groups' rows (views, no copy)."""
    return x.split([B * n for B, n in shapes])


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    """Groups' rows stacked into one flat stream; a single group is returned as is (torch.cat would copy it)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class FastBlock(nn.Module):
    """Block with fused self-attention QKV and cached cross-attention K/V; pre-LN like the original."""

    def __init__(self, block, dtype: torch.dtype, exact: bool = False):
        super().__init__()
        sa, ca = block.self_attn, block.cross_attn
        self.h = sa.n_heads
        self.ln1, self.ln2, self.ln3 = block.ln1, block.ln2, block.ln3
        self.qkv = nn.Linear(sa.q.in_features, 3 * sa.q.out_features, device="meta")
        self.qkv.weight = nn.Parameter(torch.cat([sa.q.weight, sa.k.weight, sa.v.weight]))
        self.qkv.bias = nn.Parameter(torch.cat([sa.q.bias, sa.k.bias, sa.v.bias]))
        self.o, self.cq, self.ck, self.cv, self.co, self.ffn = sa.o, ca.q, ca.k, ca.v, ca.o, block.ffn
        self.attend = attend if exact else F.scaled_dot_product_attention  # exact: the reference's own
        self.to(dtype)

    def heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, m, d) → (B, h, m, d/h)
        B, m, d = x.shape
        return x.view(B, m, self.h, d // self.h).transpose(1, 2)

    def cross_kv(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.ck(mem)), self.heads(self.cv(mem))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], attn_mask: torch.Tensor) -> torch.Tensor:
        B, n, d = x.shape
        return self.forward_groups(x.reshape(B * n, d), [(B, n)], [kv], [attn_mask]).view(B, n, d)

    def forward_groups(self, h: torch.Tensor, shapes: list[tuple[int, int]], kvs: list,
                       attn_masks: list) -> torch.Tensor:
        """The block over groups of rows of different lengths, stacked flat: h is (Σ B_g·n_g, d), group g
        its rows (B_g, n_g) in turn. Projections, LayerNorm and MLP see every position at once; only
        attention runs per group (each against its own cross-attention K/V and mask)."""
        d = h.shape[-1]

        def per_group(x: torch.Tensor, attend) -> torch.Tensor:
            return _join([attend(part.view(B, n, -1), g).transpose(1, 2).reshape(B * n, d)
                          for g, (part, (B, n)) in enumerate(zip(_split(x, shapes), shapes))])

        def self_attention(qkv: torch.Tensor, g: int) -> torch.Tensor:
            B, n = shapes[g]
            q, k, v = qkv.view(B, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
            return self.attend(q, k, v)

        def cross_attention(q: torch.Tensor, g: int) -> torch.Tensor:
            return self.attend(self.heads(q), *kvs[g], attn_mask=attn_masks[g])

        h = h + self.o(per_group(self.qkv(self.ln1(h)), self_attention))
        h = h + self.co(per_group(self.cq(self.ln2(h)), cross_attention))
        return h + self.ffn(self.ln3(h))


class FastStack(nn.Module):
    """N or D as: input projection + positions [+ time table row] [+ pooled condition] → FastBlocks → LN →
    output projection."""

    def __init__(self, stack, dtype: torch.dtype, time_table: torch.Tensor | None = None, exact: bool = False):
        super().__init__()
        self.inp, self.ln, self.out = stack.inp, stack.ln, stack.out
        self.pos = stack.pos
        self.blocks = nn.ModuleList(FastBlock(b, dtype, exact) for b in stack.blocks)
        self.time_table = time_table  # (T, d) in dtype, or None for D
        self.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor | None, kv, attn_mask,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_groups([x], t, [kv], [attn_mask], [cond])[0]

    def forward_groups(self, xs: list[torch.Tensor], t: torch.Tensor | None, kvs: list, attn_masks: list,
                       conds: list) -> list[torch.Tensor]:
        """``forward`` of several groups (B_g, n_g, ·) at once, as one flat stream of positions (see
        FastBlock.forward_groups) → one (B_g, n_g, d_out) per group."""
        shapes = [tuple(x.shape[:2]) for x in xs]
        h = _join([self.embed_input(x, t, cond).reshape(-1, self.inp.out_features) for x, cond in zip(xs, conds)])
        for j, block in enumerate(self.blocks):
            h = block.forward_groups(h, shapes, [kv[j] for kv in kvs], attn_masks)
        return [part.view(B, n, -1) for part, (B, n) in zip(_split(self.out(self.ln(h)), shapes), shapes)]

    def embed_input(self, x: torch.Tensor, t: torch.Tensor | None, cond: torch.Tensor | None) -> torch.Tensor:
        h = self.inp(x.to(self.dtype)) + self.pos[: x.shape[1]]
        if self.time_table is not None:
            h = h + self.time_table.index_select(0, t.reshape(1))  # (1, d): a 0-d index would sync (.item())
        if cond is not None:
            h = h + cond
        return h


class PackedLinear(nn.Module):
    """A bf16 ``nn.Linear`` on CPU with its weight reordered once into oneDNN's blocked layout, optionally
    with the GELU after it fused in: what Inductor's freezing does for ``torch-compile``, without the
    compile. The plain ``F.linear`` reorders the weight on every call, which at the batch-1 shapes of a
    step (32 × 256 × 1024) costs as much as the product: measured here 72 µs packed against 102 µs, with
    bit-identical outputs (the fused GELU is applied before rounding to bf16, so it differs from
    GELU(linear) by at most one bf16 ulp)."""

    def __init__(self, linear: nn.Linear, activation: str = "none"):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 32)  # hint: rows per call
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.activation, self.algorithm = activation, "none" if activation == "gelu" else ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], self.algorithm)


@functools.cache
def _packing_works() -> bool:
    """Whether this torch build has oneDNN's packed linear and it reproduces ``F.linear`` exactly."""
    try:
        lin = nn.Linear(16, 8).to(torch.bfloat16)
        x = torch.randn(3, 16, dtype=torch.bfloat16)
        return torch.equal(PackedLinear(lin)(x), F.linear(x, lin.weight, lin.bias))
    except (RuntimeError, AttributeError):
        return False


def pack_linears(stack: "FastStack") -> None:
    """Every linear a step runs (input and output projections; per block QKV, O, cross Q and O, the MLP
    with its GELU fused into the first layer) swapped for a PackedLinear, in place. The cross-attention
    K/V projections stay: they run once per request."""
    stack.inp, stack.out = PackedLinear(stack.inp), PackedLinear(stack.out)
    for b in stack.blocks:
        b.qkv, b.o, b.cq, b.co = (PackedLinear(m) for m in (b.qkv, b.o, b.cq, b.co))
        first, act, second = b.ffn
        if not (isinstance(act, nn.GELU) and act.approximate == "none"):
            raise CodeFusionError(f"pack_linears expects an exact GELU in the MLP, found {act}")
        b.ffn = nn.Sequential(PackedLinear(first, "gelu"), PackedLinear(second))
