"""The CodeFusion / GENIE training loss (Singh et al. 2023 §3; Lin et al. 2023; Li et al. 2022):

    x0    = L(y) + √(1−ᾱ_0) ε0                    the embedded target, with Diffusion-LM's jitter
    x_t   = √ᾱ_t x0 + √(1−ᾱ_t) ε
    x̂0    = N(x_t, t, E_s)
    L_mse = ‖x̂0 − x0‖²   (t > 0),   ‖x̂0 − L(y)‖²  (t = 0: the anchor to the clean embedding)
            (eps-prediction: ‖ε̂ − ε‖² for t > 0, the same anchor at t = 0)
    L_dec = ‖D(x̂0, E_s) − L(y)‖²
    L_ce  = −log p(y | H(D(x̂0, E_s)))              mean over the n target positions (pads included:
                                                  the model must learn where code ends)
    L_T   = ‖√ᾱ_{T−1} · L(y)‖²                     prior term: x_T carries no trace of the code
    loss  = mean over the batch of L_mse + L_dec + L_ce + L_T

Squared norms are means over (n, d) ("mean_flat"), as in Diffusion-LM and GENIE.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ..train.rollout import OwnRows


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.float().pow(2).mean(dim=tuple(range(1, x.dim())))


def loss_terms(model, y: torch.Tensor, mem: torch.Tensor, mem_mask: torch.Tensor | None, t: torch.Tensor,
               eps: torch.Tensor, eps0: torch.Tensor, self_condition: bool = False,
               own: OwnRows | None = None) -> dict[str, torch.Tensor]:
    """y: (B, n) token ids; mem: (B, S, d_enc); t: (B,) int64; eps, eps0: (B, n, d_embed).
    ``self_condition``: first estimate x̂0 without gradient and feed it back (Analog Bits).
    ``own``: train/rollout.py's OwnRows: its rows' x_t comes from the model's own sampler instead of
    q(x_t | x0), and where it gives ``x0_prev`` (a whole loop, train/loopwalk.py) their self-condition is the
    loop's own, whatever ``self_condition`` says for the rest; their targets are ``y``'s."""
    abar = model.alphas_cumprod
    x0_mean = model.embed(y)  # L(y)
    x0 = x0_mean + (1 - abar[0]).sqrt() * eps0
    a_t = abar[t].view(-1, 1, 1)
    x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
    rows = None if own is None else own.rows.view(-1, 1, 1)
    if own is not None:
        x_t = torch.where(rows, own.x_t.to(x_t.dtype), x_t)
        eps = torch.where(rows, (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt(), eps)  # what makes x0 this x_t
    x0_prev = None
    if self_condition:
        with torch.no_grad():
            x0_prev = model.predict_x0(x_t, t, mem, mem_mask, None).detach()
    if own is not None and own.x0_prev is not None:
        x0_prev = torch.where(rows, own.x0_prev, torch.zeros_like(x_t) if x0_prev is None else x0_prev)
    out = model.denoiser(x_t, t, mem, mem_mask, x0_prev)
    if model.cfg.prediction == "x0":
        x0_hat = out
        mse = mean_flat(x0_hat - x0)
    else:
        x0_hat = (x_t - (1 - a_t).sqrt() * out) / a_t.sqrt()
        mse = mean_flat(out - eps)
    mse = torch.where(t == 0, mean_flat(x0_hat - x0_mean), mse)
    dec = model.decode(x0_hat, mem, mem_mask)
    dec_mse = mean_flat(dec - x0_mean)
    logits = model.logits(dec)
    ce = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").mean(dim=1)
    prior = mean_flat(abar[-1].sqrt() * x0_mean)
    terms = {"mse": mse.mean(), "dec_mse": dec_mse.mean(), "ce": ce.mean(), "prior": prior.mean()}
    terms["loss"] = terms["mse"] + terms["dec_mse"] + terms["ce"] + terms["prior"]
    return terms
