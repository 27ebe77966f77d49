"""Length head: p(n | E_s), the target length (code tokens + </s>) predicted from the encoded request.

    pooled = masked mean of E_s over the source positions      (B, d_enc)
    logits = W2 GELU(W1 pooled)                                (B, max_target_len); class j ↔ length j + 1

A request then runs at the shortest length bucket that holds the predicted length's ``quantile``
(0.9 by default: a slightly long bucket costs time, a short one cuts the program off).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


class LengthHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.enc_d_model, cfg.enc_d_model), nn.GELU(),
                                 nn.Linear(cfg.enc_d_model, cfg.max_target_len))

    def forward(self, mem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mem: (B, S, d_enc), mask: (B, S) bool → logits (B, max_target_len)."""
        return self.net(pool(mem, mask))


def pool(mem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of E_s over the source positions: (B, S, d) → (B, d)."""
    m = mask.unsqueeze(-1).to(mem.dtype)
    return (mem * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def length_quantile(logits: torch.Tensor, quantile: float) -> torch.Tensor:
    """(B, max_len) logits → (B,) int64: the smallest length whose predicted CDF reaches ``quantile``."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(dim=-1)
    return (cdf < quantile).sum(dim=-1).clamp(max=logits.shape[-1] - 1) + 1
