"""The CodeFusion model: encoder E, denoiser N, decoder D, head H, code embedding L."""
from .codefusion import CodeFusionModel

__all__ = ["CodeFusionModel"]
