"""Building blocks of N and D: plain attention, a pre-LN transformer block, the timestep embedding.

Attention is written out (softmax(QKᵀ/√d)V, ``attend``) on purpose: this is the reference model, the
parity oracle; fast backends swap in SDPA or fused kernels for their fast dtypes (speed is applied to the
model, not written into it). No relative bias and no positional mask: one fused kernel serves self- and cross-attention.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of x (B, n, d) over context (B, m, d_ctx), optional key padding mask (B, m)."""

    def __init__(self, d: int, n_heads: int, d_ctx: int | None = None):
        super().__init__()
        d_ctx = d if d_ctx is None else d_ctx
        self.n_heads = n_heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d_ctx, d)
        self.v = nn.Linear(d_ctx, d)
        self.o = nn.Linear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, m, d) → (B, h, m, d/h)
        B, m, d = x.shape
        return x.view(B, m, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split(self.q(x)), self.split(self.k(ctx)), self.split(self.v(ctx))
        keep = None if key_mask is None else key_mask.bool()[:, None, None, :]
        return self.o(attend(q, k, v, keep).transpose(1, 2).reshape(x.shape))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(QKᵀ/√d)V of (B, h, n, d/h) queries over (B, h, m, d/h) keys; ``attn_mask`` broadcasts to
    (B, h, n, m), True where a key may be attended (F.scaled_dot_product_attention's signature). The
    reference's arithmetic, op for op: the ``torch`` backend runs this very function in fp32, so that the
    parity dtype takes the oracle's rounding (SDPA's fused kernel sums in another order)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, n, m)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, h, n, d/h)


class Block(nn.Module):
    """Pre-LN: x += SA(LN x); x += CA(LN x, E_s); x += FFN(LN x)."""

    def __init__(self, d: int, n_heads: int, d_ff: int, d_ctx: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, n_heads)
        self.cross_attn = Attention(d, n_heads, d_ctx)
        self.ffn = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mem_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.self_attn(h, h))
        x = x + self.drop(self.cross_attn(self.ln2(x), mem, mem_mask))
        return x + self.drop(self.ffn(self.ln3(x)))


def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of (B,) timesteps → (B, dim), fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    """sinusoidal(t) → Linear → SiLU → Linear, (B,) → (B, d)."""

    def __init__(self, d: int):
        super().__init__()
        self.d = d
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(t, self.d).to(self.mlp[0].weight.dtype))


def stack(cfg_layers: int, d: int, n_heads: int, d_ff: int, d_ctx: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(Block(d, n_heads, d_ff, d_ctx, dropout) for _ in range(cfg_layers))

