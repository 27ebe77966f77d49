"""Decoder D and head H: x̂0 (B, n, d_embed) → D(x̂0, E_s) (B, n, d_embed) → logits (B, n, V).

D has full (non-causal) self-attention and cross-attention to E_s; its output lives in the
embedding space so that the loss can pull it towards L(y). H is one linear layer, tied to L's
weight by default (``tie_head``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .layers import stack


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inp = nn.Linear(cfg.d_embed, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.max_target_len, cfg.d_model) * 0.02)
        self.blocks = stack(cfg.decoder_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.enc_d_model, cfg.dropout)
        self.ln = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_embed)

    def forward(self, x0: torch.Tensor, mem: torch.Tensor, mem_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.inp(x0) + self.pos[: x0.shape[1]]
        for block in self.blocks:
            h = block(h, mem, mem_mask)
        return self.out(self.ln(h))


class Head(nn.Module):
    """H: (B, n, d_embed) → logits (B, n, V). When tied (``tie_head``) the caller passes L's weight."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.weight = None if cfg.tie_head else nn.Parameter(torch.randn(cfg.vocab_size, cfg.d_embed) * 0.02)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor, tied_weight: torch.Tensor) -> torch.Tensor:
        weight = tied_weight if self.weight is None else self.weight
        return F.linear(h, weight.to(h.dtype), self.bias.to(h.dtype))
