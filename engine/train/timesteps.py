"""Training timesteps: which t each row of a batch is noised to (``--t-sampling``, ``--t-min``)."""
from __future__ import annotations

import torch


def sample_t(how: str, B: int, T: int, device, t_min: float = 0.0, t_min_share: float = 1.0) -> torch.Tensor:
    """Training timesteps. "uniform": t ~ U{0..T−1}. "high": t = ⌊T·(1 − (1−u)²)⌋, density rising towards
    t = T, where x_t holds almost nothing and only the condition E_s can tell the code: a model trained
    uniformly can learn to denoise from x_t alone and ignore E_s (measured on this project's `small`:
    dev token accuracy the same with shuffled conditions), which collapses sampling from pure noise.

    ``t_min`` clips the noise from below (DINOISER, Ye et al. 2023): a ``t_min_share`` of the rows draw
    from [t_min·T, T) with the same shape, so the loss is spent where the condition decides; the other
    rows keep the whole range, so low-noise denoising is not forgotten."""
    if how == "uniform" and t_min == 0:
        return torch.randint(0, T, (B,), device=device)  # the draws of runs made before t_min existed
    u = torch.rand(B, device=device)
    frac = u if how == "uniform" else 1 - (1 - u) ** 2
    if t_min > 0:
        clipped = torch.rand(B, device=device) < t_min_share
        frac = torch.where(clipped, t_min + (1 - t_min) * frac, frac)
    return (frac * T).long().clamp(0, T - 1)
