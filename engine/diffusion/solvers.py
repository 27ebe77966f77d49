"""Solvers: each advances x_t to the next kept step from the model's x̂0.

Every solver here is linear in (x̂0, x_t, previous x̂0, z), so it reduces to one fused update

    x_prev = a_i · x̂0 + b_i · x_t + c_i · x̂0_prev + σ_i · z                          (★)

with coefficient tables built once per schedule (``StepTable``, fp64 math → fp32 device tensors).
Each ``*_coefficients`` function below cites the equation it tabulates; ``update`` is (★). The
fused Triton / C++ kernels of later issues compute exactly (★).

The last kept step (ᾱ_prev = 1) of every solver returns x̂0 itself, without noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import clamp_mode
from ..errors import CodeFusionError
from .schedule import NoiseSchedule

SOLVERS = ("ddpm", "ddim", "dpmpp_2m")


@dataclass(frozen=True, eq=False)
class StepTable:
    """Per-kept-step tensors, (K,), sampling order. ``timesteps`` int64, the rest fp32."""

    timesteps: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    sigma: torch.Tensor
    sqrt_abar: torch.Tensor  # √ᾱ_t, for converting an eps prediction to x̂0
    solver: str
    clamp: str = "none"  # x̂0 rounded every step: "none", "nearest" embedding (Diffusion-LM), "decode" (see Backend)

    def __len__(self) -> int:
        return self.timesteps.shape[0]


def ddpm_coefficients(s: NoiseSchedule) -> tuple[torch.Tensor, ...]:
    """Ancestral step from the posterior q(x_{t−1} | x_t, x̂0) (Ho et al. 2020, eq. 6–7):

        μ = β_t √ᾱ_{t−1} / (1−ᾱ_t) · x̂0 + (1−ᾱ_{t−1}) √(1−β_t) / (1−ᾱ_t) · x_t
        σ² = β_t  (FIXED_LARGE, improved-diffusion), 0 at the last step.
    On a respaced schedule β_t = 1 − ᾱ_t/ᾱ_prev (improved-diffusion respace.py)."""
    abar, prev, beta = s.alphas_cumprod, s.alphas_cumprod_prev, s.betas
    a = beta * prev.sqrt() / (1 - abar)
    b = (1 - prev) * (1 - beta).sqrt() / (1 - abar)
    sigma = beta.sqrt()
    sigma[-1] = 0.0
    return a, b, torch.zeros_like(a), sigma


def ddim_coefficients(s: NoiseSchedule, eta: float = 0.0) -> tuple[torch.Tensor, ...]:
    """DDIM (Song et al. 2021, eq. 12) with ε̂ = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t):

        x_prev = √ᾱ_prev x̂0 + √(1−ᾱ_prev−σ²) ε̂ + σ z,
        σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)."""
    abar, prev = s.alphas_cumprod, s.alphas_cumprod_prev
    sigma = eta * ((1 - prev) / (1 - abar) * (1 - abar / prev)).sqrt()
    b = (1 - prev - sigma ** 2).clamp_min(0).sqrt() / (1 - abar).sqrt()
    a = prev.sqrt() - b * abar.sqrt()
    return a, b, torch.zeros_like(a), sigma


def dpmpp_2m_coefficients(s: NoiseSchedule) -> tuple[torch.Tensor, ...]:
    """DPM-Solver++(2M) in x0 form (Lu et al. 2022, Algorithm 2), on the discrete ᾱ table:

        α = √ᾱ, σ = √(1−ᾱ), λ = log(α/σ), h_i = λ_prev − λ_t, r_i = h_{i−1}/h_i
        D_i = (1 + 1/(2 r_i)) x̂0 − 1/(2 r_i) x̂0_prev      (D_0 = x̂0: first step is first order)
        x_prev = (σ_prev/σ_t) x_t − α_prev (e^{−h_i} − 1) D_i
    The last step (σ_prev = 0, h = ∞) returns x̂0."""
    abar, prev = s.alphas_cumprod[:-1], s.alphas_cumprod_prev[:-1]
    lam_t = 0.5 * (abar.log() - (1 - abar).log())
    lam_s = 0.5 * (prev.log() - (1 - prev).log())
    h = lam_s - lam_t
    r = torch.cat([torch.full_like(h[:1], float("inf")), h[:-1] / h[1:]])
    phi = -prev.sqrt() * torch.expm1(-h)  # −α_prev (e^{−h} − 1)
    a = phi * (1 + 0.5 / r)
    c = -phi * (0.5 / r)
    b = ((1 - prev) / (1 - abar)).sqrt()
    one, zero = torch.ones_like(s.alphas_cumprod[:1]), torch.zeros_like(s.alphas_cumprod[:1])
    return torch.cat([a, one]), torch.cat([b, zero]), torch.cat([c, zero]), torch.zeros_like(s.alphas_cumprod)


def step_table(schedule: NoiseSchedule, solver: str = "ddpm", eta: float = 0.0, clamp: bool | str = False) -> StepTable:
    if solver == "ddpm":
        coefs = ddpm_coefficients(schedule)
    elif solver == "ddim":
        coefs = ddim_coefficients(schedule, eta)
    elif solver == "dpmpp_2m":
        coefs = dpmpp_2m_coefficients(schedule)
    else:
        raise CodeFusionError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    a, b, c, sigma = (x.to(torch.float32) for x in coefs)
    return StepTable(schedule.timesteps, a, b, c, sigma, schedule.alphas_cumprod.sqrt().to(torch.float32), solver,
                     clamp_mode(clamp))


def at(column: torch.Tensor, i) -> torch.Tensor:
    """column[i] for an int step, or a (1,) gather for a device-tensor step: indexing with a 0-d tensor
    would call .item() (a host sync, fatal inside a captured graph)."""
    return column[i] if isinstance(i, int) else column.index_select(0, i.reshape(1).to(column.device))


def update(x_t: torch.Tensor, x0_hat: torch.Tensor, x0_prev: torch.Tensor, table: StepTable, i,
           z: torch.Tensor) -> torch.Tensor:
    """(★) for step i (an int or a 0-d device tensor): all operands fp32, (B, n, d)."""
    return at(table.a, i) * x0_hat + at(table.b, i) * x_t + at(table.c, i) * x0_prev + at(table.sigma, i) * z
