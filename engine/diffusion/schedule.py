"""The sqrt noise schedule (Diffusion-LM) and its step-skipping respacing (improved-diffusion).

Notation (Ho et al. 2020; Li et al. 2022):

    ᾱ(τ)  = 1 − √(τ + s),  s = 1e-4, τ = t/T                   continuous schedule
    β_t   = min(1 − ᾱ((t+1)/T) / ᾱ(t/T), 0.999)               t = 0 … T−1
    ᾱ_t   = ∏_{u≤t} (1 − β_u)                                  the discrete table every coefficient uses

The continuous ᾱ(τ) is negative at τ = 1, hence the 0.999 clip and the rule "every coefficient
comes from the discrete table". A ``NoiseSchedule`` is frozen: step skipping builds a new one with
``respace(kept_steps)`` (improved-diffusion ``space_timesteps``), never a flag inside the loop.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..errors import CodeFusionError

SQRT_S = 1e-4


@functools.lru_cache(maxsize=8)
def sqrt_alphas_cumprod_table(T: int) -> torch.Tensor:
    """ᾱ_t for t = 0 … T−1 of the sqrt schedule, float64 (cached: treat as read-only)."""
    def abar(tau: float) -> float:
        return 1.0 - math.sqrt(tau + SQRT_S)
    betas = torch.tensor([min(1.0 - abar((t + 1) / T) / abar(t / T), 0.999) for t in range(T)],
                         dtype=torch.float64, device="cpu")  # not the caller's default device: the table is cached
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """K kept steps in sampling order (t descending). All tensors (K,), on one device.

    timesteps:  original t of each kept step (what the denoiser is told), int64
    alphas_cumprod, alphas_cumprod_prev: ᾱ_t and ᾱ of the next kept step (1 after the last), fp64
    T: length of the full schedule the table comes from
    """

    timesteps: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    T: int

    @classmethod
    def sqrt(cls, T: int = 1200, device: torch.device | str = "cpu") -> "NoiseSchedule":
        return cls._from_table(sqrt_alphas_cumprod_table(T), torch.arange(T), T, device)

    @classmethod
    def _from_table(cls, table: torch.Tensor, kept: torch.Tensor, T: int, device) -> "NoiseSchedule":
        kept = kept.sort(descending=True).values
        abar = table[kept]
        abar_prev = torch.cat([abar[1:], torch.ones(1, dtype=abar.dtype)])
        return cls(kept.to(device), abar.to(device), abar_prev.to(device), T)

    def __len__(self) -> int:
        return self.timesteps.shape[0]

    def respace(self, kept_steps: int, spacing: str = "uniform") -> "NoiseSchedule":
        """A schedule over ``kept_steps`` of the original T steps: for two or more, from t = T−1 (pure noise)
        down to t = 0; one step is t = T−1 alone (x̂0 straight from pure noise). ``spacing``: uniform | quadratic."""
        T = self.T
        if not isinstance(kept_steps, int) or not 1 <= kept_steps <= T:
            raise CodeFusionError(f"steps must be an integer in 1..{T}, got {kept_steps!r}")
        frac = torch.linspace(1.0, 0.0, kept_steps, dtype=torch.float64)
        if spacing == "quadratic":
            frac = frac ** 2
        elif spacing != "uniform":
            raise CodeFusionError(f"unknown spacing {spacing!r}: choose uniform or quadratic")
        kept = (frac * (T - 1)).round().to(torch.int64).flip(0).tolist()  # ascending, may repeat near t = 0
        for j in range(1, len(kept)):  # quadratic spacing crowds t = 0: push repeats up to distinct steps
            kept[j] = max(kept[j], kept[j - 1] + 1)
        kept = torch.tensor(kept, dtype=torch.int64)
        return NoiseSchedule._from_table(sqrt_alphas_cumprod_table(T), kept, T, self.timesteps.device)

    @property
    def betas(self) -> torch.Tensor:
        """β of the (respaced) chain: 1 − ᾱ_t / ᾱ_prev (improved-diffusion respace.py)."""
        return 1.0 - self.alphas_cumprod / self.alphas_cumprod_prev

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε with t: (B,) original steps, ᾱ from the full table."""
        abar = sqrt_alphas_cumprod_table(self.T).to(x0.device)[t].to(x0.dtype)
        abar = abar.view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps
