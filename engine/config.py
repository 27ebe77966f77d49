"""Frozen configuration: model presets (exact-name lookup) and the generation request.

Preset ``paper`` pins the widths that reach the paper's ~75M parameters (DESIGN §1):

    encoder E  CodeT5-small shape: d=512, 6 layers, 8 heads (d_kv 64), ff 2048, vocab 32,100
    denoiser N 10 pre-LN blocks, d=384, 6 heads (head dim 64), ff 1152 (3·d), time MLP 384→1536→384
    decoder D  6 blocks, same widths as N
    L, H       code embedding 32,100 × 128 (GENIE's 128-d diffusion space), H tied to L (+ bias)
    total      75,650,020 (E 35.3M, N 23.0M, D 13.2M, L/H 4.1M) — tests/test_model.py pins it

``small`` is the embedded default (sized for ~2 h of training on a 2-core CPU); ``tiny`` is for
tests (trains in seconds).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from .errors import CodeFusionError

LANGS: tuple[str, ...] = ("bash", "python", "cf")
T_DEFAULT = 1200
LENGTH_QUANTILE = 0.9  # without max_length, run at the bucket holding 90% of the predicted length distribution


@dataclass(frozen=True)
class ModelConfig:
    name: str
    vocab_size: int
    # encoder E (T5)
    enc_d_model: int
    enc_layers: int
    enc_heads: int
    enc_d_ff: int
    # denoiser N and decoder D
    d_model: int
    n_heads: int
    d_ff: int
    denoiser_layers: int
    decoder_layers: int
    # diffusion space (L maps tokens here; x_t lives here)
    d_embed: int
    max_source_len: int = 64
    max_target_len: int = 128
    length_buckets: tuple[int, ...] = (32, 64, 128)
    diffusion_steps: int = T_DEFAULT
    prediction: Literal["x0", "eps"] = "x0"
    self_condition: bool = False
    tie_head: bool = True
    embed_init_std: float = 1.0
    dropout: float = 0.1
    length_head: bool = False  # p(n | E_s), trained after the diffusion model (codefusion train --task length)
    pooled_condition: bool = False  # N's input also gets MLP(masked mean of E_s) at every position (see denoiser.py)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # types first: a config.json edited by hand must fail here, in one line
            value, kind = getattr(self, f.name), f.type
            least = 0 if f.name.endswith("_layers") else 1  # a stack may have no blocks; widths and lengths may not
            if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
                raise CodeFusionError(f"model config: {f.name} must be an integer ≥ {least}, got {value!r}")
            if kind == "bool" and not isinstance(value, bool):
                raise CodeFusionError(f"model config: {f.name} must be true or false, got {value!r}")
            if kind == "float" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                raise CodeFusionError(f"model config: {f.name} must be a number ≥ 0, got {value!r}")
        if not self.length_buckets or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0
                                              for b in self.length_buckets):
            raise CodeFusionError(f"model config: length_buckets must be positive integers, got {self.length_buckets!r}")
        if self.d_model % self.n_heads or self.enc_d_model % self.enc_heads:
            raise CodeFusionError(f"preset {self.name}: model width must be divisible by the head count")
        if max(self.length_buckets) != self.max_target_len or list(self.length_buckets) != sorted(self.length_buckets):
            raise CodeFusionError(f"preset {self.name}: length_buckets must ascend and end at max_target_len")
        if self.prediction not in ("x0", "eps"):
            raise CodeFusionError(f"prediction must be 'x0' or 'eps', got {self.prediction!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise CodeFusionError(f"the model section must be an object of config fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(d) - known))
        if unknown:
            raise CodeFusionError(f"unknown model config keys {unknown}: the checkpoint is from a newer version")
        d = dict(d)
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in d and f.default is dataclasses.MISSING)
        if missing:
            raise CodeFusionError(f"the model section lacks {', '.join(missing)}")
        buckets = d.get("length_buckets", (d.get("max_target_len", cls.max_target_len),))
        d["length_buckets"] = tuple(buckets) if isinstance(buckets, (list, tuple)) else buckets
        return cls(**d)

    def bucket_for(self, length: int) -> int:
        """Shortest trained length bucket that holds ``length`` tokens."""
        for b in self.length_buckets:
            if length <= b:
                return b
        return self.max_target_len


PRESETS: dict[str, ModelConfig] = {
    p.name: p
    for p in (
        ModelConfig(name="paper", vocab_size=32100, enc_d_model=512, enc_layers=6, enc_heads=8, enc_d_ff=2048,
                    d_model=384, n_heads=6, d_ff=1152, denoiser_layers=10, decoder_layers=6, d_embed=128),
        ModelConfig(name="small", vocab_size=8192, enc_d_model=256, enc_layers=3, enc_heads=4, enc_d_ff=1024,
                    d_model=256, n_heads=4, d_ff=1024, denoiser_layers=6, decoder_layers=2, d_embed=64,
                    max_target_len=64, length_buckets=(16, 32, 64), self_condition=True),
        ModelConfig(name="tiny", vocab_size=512, enc_d_model=64, enc_layers=1, enc_heads=2, enc_d_ff=128,
                    d_model=64, n_heads=2, d_ff=128, denoiser_layers=2, decoder_layers=1, d_embed=16,
                    max_source_len=32, max_target_len=32, length_buckets=(16, 32), dropout=0.0),
    )
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise CodeFusionError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None


Solver = Literal["ddpm", "ddim", "dpmpp_2m"]
CLAMPS: tuple[str, ...] = ("none", "nearest", "decode")


def clamp_mode(value) -> str:
    """GenerationConfig.clamp as one of CLAMPS: False/None → "none", True → "nearest" (Diffusion-LM)."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "nearest"
    if value not in CLAMPS:
        raise CodeFusionError(f"clamp must be one of {', '.join(CLAMPS)} (or true/false), got {value!r}")
    return value


@dataclass(frozen=True)
class GenerationConfig:
    """One generation request (DESIGN §5). ``max_length`` None: each prompt's length bucket from the model's
    length head (at ``CodeFusion.length_quantile``), or the model's maximum when it has no head."""

    lang: str = "bash"
    steps: int = T_DEFAULT
    solver: Solver = "ddpm"
    num_samples: int = 1
    seed: int = 0
    max_length: int | None = None
    early_exit: bool = False
    eta: float = 0.0  # DDIM η (0 = deterministic DDIM)
    trace_steps: tuple[int, ...] = field(default_factory=tuple)
    # rounding of x̂0 at every step (off in the reference sampler): "nearest" code embedding (Diffusion-LM's
    # clamping; True means this), or "decode": L(argmax H(D(x̂0, E_s))), the tokens the decoder reads.
    # None: the model's own default, its config.json's "generation": {"clamp": …} ("none" where it names none)
    clamp: bool | str | None = None
