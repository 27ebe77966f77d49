"""Diffusion process: the noise schedule, solvers, the training loss and the sampling loop."""
from .schedule import NoiseSchedule, sqrt_alphas_cumprod_table

__all__ = ["NoiseSchedule", "sqrt_alphas_cumprod_table"]
