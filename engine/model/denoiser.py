"""Denoiser N: (x_t, t, E_s [, x̂0 of the previous step]) → x̂0 (or ε̂ with prediction="eps").

    h = W_in [x_t ; x̂0_prev] + P[:n] + MLP(sinusoidal(t))      (B, n, d)
        [+ C(E_s)]                                                  with ``pooled_condition``
    h = Block_k(h, E_s)  for k = 1 … L                          full self-attn + cross-attn + FFN
    out = W_out LN(h)                                           (B, n, d_embed)

Self-conditioning (Chen et al., Analog Bits) concatenates the previous step's x̂0 to the input;
without it the input is x_t alone.

``pooled_condition`` adds C(E_s) = W2 SiLU(W1 · masked-mean(E_s)) to every position, as Imagen adds
its pooled text embedding to the timestep embedding (Saharia et al. 2022, §2.2). At high noise the
pre-LN queries of the cross-attention are mostly noise, so the request reaches N only as a blurred
average; the pooled term puts it in the residual stream of every position from the first block.
W2 starts at zero, so a model extended with it computes what it computed before.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .layers import TimestepEmbedding, stack
from .length import pool


class PooledCondition(nn.Module):
    """(E_s, mask) → (B, d): W2 SiLU(W1 · masked-mean(E_s)); W2 starts at zero."""

    def __init__(self, d_enc: int, d: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_enc, d), nn.SiLU(), nn.Linear(d, d))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, mem: torch.Tensor, mem_mask: torch.Tensor | None) -> torch.Tensor:
        pooled = mem.mean(dim=1) if mem_mask is None else pool(mem, mem_mask)
        return self.mlp(pooled)


class Denoiser(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_condition = cfg.self_condition
        d_in = cfg.d_embed * (2 if cfg.self_condition else 1)
        self.inp = nn.Linear(d_in, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.max_target_len, cfg.d_model) * 0.02)
        self.time = TimestepEmbedding(cfg.d_model)
        self.cond = PooledCondition(cfg.enc_d_model, cfg.d_model) if cfg.pooled_condition else None
        self.blocks = stack(cfg.denoiser_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.enc_d_model, cfg.dropout)
        self.ln = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_embed)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mem: torch.Tensor, mem_mask: torch.Tensor | None,
                x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        """x_t: (B, n, d_embed), t: (B,) int, mem: (B, S, d_enc), x0_prev: (B, n, d_embed) or None."""
        if self.self_condition:
            x_t = torch.cat([x_t, torch.zeros_like(x_t) if x0_prev is None else x0_prev], dim=-1)
        n = x_t.shape[1]
        h = self.inp(x_t) + self.pos[:n] + self.time(t)[:, None, :]
        if self.cond is not None:
            h = h + self.cond(mem, mem_mask)[:, None, :]
        for block in self.blocks:
            h = block(h, mem, mem_mask)
        return self.out(self.ln(h))
