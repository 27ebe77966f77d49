"""Training on the sampler's own states (``--rollout-share``): x_t drawn by the model, not by q(x_t | x0).

The loss of losses.py only ever shows the denoiser x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, a noised real program. The
reference sampler shows it something else: x_t built from its own earlier x̂0, which an x0-regression shrinks
towards the mean wherever it is unsure. Fed back over 1200 steps the shrinkage compounds (models/README.md,
session 5: 100 DDPM steps from dev programs noised to t = 291 keep 66% of their tokens), and the trajectory
settles on one program whatever the request (session 14's student: `GreaterThan(2)` for 17 of 20 CF requests).

For a share of each batch, ``own_x_t`` runs the model's sampler instead (Ho et al. 2020's ancestral step,
the same coefficients as the engine's `ddpm` solver) from pure noise at T−1 down to the row's t, in a few
respaced steps, without gradient; the loss then asks for the true x0 from that state. The mismatch is what
Ning et al. (2023, "Input Perturbation Reduces Exposure Bias in Diffusion Models") call exposure bias and treat
with extra input noise as a cheap stand-in; this is the direct form, scheduled sampling (Bengio et al. 2015):
the model is shown where its own loop goes and learns the way back.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..diffusion.schedule import NoiseSchedule, sqrt_alphas_cumprod_table
from ..diffusion.solvers import StepTable, step_table, update


@dataclass
class OwnRows:
    """The rollout rows of a batch. ``rows`` (B,) bool; ``x_t`` (B, n, d): their states (zeros elsewhere);
    ``heads``: the x̂0 the walk last produced for them, the program it heads for (None when no step ran);
    ``x0_prev``: the self-condition to feed them as the loop did (None: the batch's own choice)."""
    rows: torch.Tensor
    x_t: torch.Tensor
    heads: torch.Tensor | None
    x0_prev: torch.Tensor | None = None


@functools.lru_cache(maxsize=4096)
def rollout_table(T: int, t_end: int, steps: int, device: str = "cpu") -> StepTable:
    """DDPM coefficients over ``steps`` + 1 kept timesteps spaced evenly from T−1 down to ``t_end``
    (repeats merged, so t_end near T−1 gets fewer steps). Only the steps before the last kept one are run:
    step i takes x at timesteps[i] to x at timesteps[i + 1], so the walk ends at x_{t_end}."""
    kept = torch.linspace(T - 1, t_end, steps + 1, dtype=torch.float64).round().to(torch.int64).unique()
    return step_table(NoiseSchedule._from_table(sqrt_alphas_cumprod_table(T), kept, T, device), "ddpm")


@torch.no_grad()
def own_x_t(model, mem: torch.Tensor, mem_mask: torch.Tensor | None, t_end: int, steps: int, shape: tuple,
            generator: torch.Generator | None = None, with_x0: bool = False):
    """x_{t_end} (B, n, d_embed) fp32 from the model's own ancestral sampler: x_{T−1} ~ N(0, I), then up to
    ``steps`` respaced DDPM steps, each x̂0 self-conditioned on the previous one as the engine's loop does
    (zeros at the first step), with dropout off as at inference. ``mem``: E_s of the B rows. ``with_x0``:
    also the walk's last x̂0, the program the model heads for there (None when t_end = T−1 and no step ran)."""
    device = mem.device
    table = rollout_table(model.cfg.diffusion_steps, int(t_end), steps, str(device))
    x = torch.randn(shape, device=device, generator=generator)
    x0_prev = torch.zeros_like(x)
    x0 = None
    training = model.denoiser.training
    model.denoiser.eval()
    for i in range(len(table) - 1):
        t = table.timesteps[i].expand(shape[0])
        x0 = model.predict_x0(x, t, mem, mem_mask, x0_prev).float()
        z = torch.randn(shape, device=device, generator=generator)
        x = update(x, x0, x0_prev, table, i, z)
        x0_prev = x0
    model.denoiser.train(training)
    return (x, x0) if with_x0 else x


def own_rows(model, mem: torch.Tensor, mem_mask: torch.Tensor | None, t: torch.Tensor, shape: tuple, share: float,
             steps: int, t_max: float = 1.0) -> OwnRows | None:
    """The OwnRows of a batch. The first round(share · B) rows (batches are shuffled) take x_t from the model's
    own sampler, all at one t (one respaced walk for the lot):
    the first row's, or with ``t_max`` < 1 a fresh draw from [0, t_max · T), the end of the loop where it
    settles tokens. ``t`` is updated in place to match. ``heads``: the walk's last x̂0 for those rows (zeros
    elsewhere; None when no step ran), what snap.py measures. None when the share rounds to no row."""
    k = round(share * shape[0])
    if k == 0:
        return None
    if t_max < 1.0:
        T = model.cfg.diffusion_steps
        t[0] = torch.randint(0, max(1, round(t_max * T)), (), device=t.device)
    t[:k] = t[0]
    x = torch.zeros(shape, device=mem.device)
    x[:k], x0_k = own_x_t(model, mem[:k], None if mem_mask is None else mem_mask[:k], int(t[0]), steps,
                          (k, *shape[1:]), with_x0=True)
    x0 = None
    if x0_k is not None:
        x0 = torch.zeros(shape, device=mem.device)
        x0[:k] = x0_k
    return OwnRows(torch.arange(shape[0], device=mem.device) < k, x, x0)
