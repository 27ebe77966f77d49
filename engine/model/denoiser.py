"""Denoiser N: (x_t, t, E_s [, x̂0 of the previous step]) → x̂0 (or ε̂ with prediction="eps").

    h = W_in [x_t ; x̂0_prev] + P[:n] + MLP(sinusoidal(t))      (B, n, d)
    h = Block_k(h, E_s)  for k = 1 … L                          full self-attn + cross-attn + FFN
    out = W_out LN(h)                                           (B, n, d_embed)

Self-conditioning (Chen et al., Analog Bits) concatenates the previous step's x̂0 to the input;
without it the input is x_t alone.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .layers import TimestepEmbedding, stack


class Denoiser(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_condition = cfg.self_condition
        d_in = cfg.d_embed * (2 if cfg.self_condition else 1)
        self.inp = nn.Linear(d_in, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.max_target_len, cfg.d_model) * 0.02)
        self.time = TimestepEmbedding(cfg.d_model)
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
        for block in self.blocks:
            h = block(h, mem, mem_mask)
        return self.out(self.ln(h))
