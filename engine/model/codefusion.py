"""CodeFusion wiring (Singh et al. 2023, Fig. 2): E, N, D, H and the code embedding L.

    E_s  = E(s)                           (B, S, d_enc)   once per request
    x̂0   = N(x_t, t, E_s [, x̂0_prev])     (B, n, d_emb)   every step
    D    = D(x̂0, E_s)                     (B, n, d_emb)
    p(y) = softmax(H(D))                  (B, n, V)
    L(y) = embed(y)                       (B, n, d_emb)   training target x0
    p(n) = length_head(E_s)               (B, n_max)      optional: the target length

No loop, timing or device logic lives here: the sampler and the backends own those.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..diffusion.schedule import sqrt_alphas_cumprod_table
from .decoder import Decoder, Head
from .denoiser import Denoiser
from .encoder import Encoder
from .length import LengthHead


class CodeFusionModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.denoiser = Denoiser(cfg)
        self.decoder = Decoder(cfg)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_embed)
        nn.init.normal_(self.embed.weight, std=cfg.embed_init_std)
        self.head = Head(cfg)
        self.length_head = LengthHead(cfg) if cfg.length_head else None
        abar = sqrt_alphas_cumprod_table(cfg.diffusion_steps).to(torch.float32)
        self.register_buffer("alphas_cumprod", abar, persistent=False)

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(src_ids, src_mask)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, mem: torch.Tensor, mem_mask: torch.Tensor | None,
                   x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        """x̂0 whatever the parametrisation: with eps-prediction, x̂0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t."""
        out = self.denoiser(x_t, t, mem, mem_mask, x0_prev)
        if self.cfg.prediction == "x0":
            return out
        abar = self.alphas_cumprod[t].view(-1, 1, 1).to(out.dtype)
        return (x_t.to(out.dtype) - (1 - abar).sqrt() * out) / abar.sqrt()

    def decode(self, x0: torch.Tensor, mem: torch.Tensor, mem_mask: torch.Tensor | None) -> torch.Tensor:
        """D(x̂0, E_s): (B, n, d_embed)."""
        return self.decoder(x0, mem, mem_mask)

    def logits(self, d_out: torch.Tensor) -> torch.Tensor:
        return self.head(d_out, self.embed.weight)

    def length_logits(self, mem: torch.Tensor, mem_mask: torch.Tensor) -> torch.Tensor:
        """(B, max_target_len) logits of the target length (tokens + </s>); needs ``cfg.length_head``."""
        return self.length_head(mem, mem_mask)

    def num_parameters(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        parts = {"encoder": count(self.encoder), "denoiser": count(self.denoiser), "decoder": count(self.decoder),
                 "embedding+head": count(self.embed) + count(self.head)}
        if self.length_head is not None:
            parts["length_head"] = count(self.length_head)
        parts["total"] = sum(parts.values())
        return parts
