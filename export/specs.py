"""One declarative spec per exported graph (DESIGN §3, STYLE habit 10): names, dtypes, dynamic dims
with min/opt/max, sample inputs. ONNX export, TensorRT profiles and verification all read these.

    encoder   src_ids (B,S) int64, src_mask (B,S) bool
              → memory (B,S,d_enc) fp32, kv_den_{l}_{k,v} / kv_dec_{l}_{k,v} (B,h,S,d/h) [, cond_den (B,1,d)]
                [, length_logits (B,n_max)]
    denoiser  x_t, x0_prev, noise (B,n,d_emb) fp32, timestep (1,) int64, coef (4,) fp32 = (a, b, c, σ) of step i,
              src_mask, kv_den_* [, cond_den] → x0_hat, x_next (B,n,d_emb) fp32   (the solver update ★ fused in)
    decoder   x0 (B,n,d_emb) fp32, src_mask, kv_dec_* → token_ids (B,n) int64, logprobs (B,n) fp32   (argmax inside)

The step index stays a tensor input (timestep + the step's coefficients, gathered by the caller with
index_select), so one graph serves every step of every schedule and solver. The noise z is an input: it
comes from the counter-based Philox stream (engine/noise.py), drawn in torch, so parity with ``reference``
is exact up to the networks' float error. Cross-attention K/V are graph inputs: computed once per request.

``compute`` tensors are the export dtype (fp32 or fp16); the diffusion state is fp32 on every graph, and
the T5 encoder itself always runs in fp32 (T5 overflows fp16).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from codefusion.config import ModelConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "bool": torch.bool}
MAX_BATCH = 256  # rows (prompts × samples) per call: the TensorRT profile's max; ONNX Runtime is unbounded


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "float32" | "int64" | "bool" | "compute" (the export dtype)
    shape: tuple  # ints, or dim names looked up in GraphSpec.dims

    def resolved(self, compute: str) -> str:
        return compute if self.dtype == "compute" else self.dtype

    def torch_dtype(self, compute: str) -> torch.dtype:
        return DTYPES[self.resolved(compute)]


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict  # dynamic dim name → (min, opt, max)
    dtype: str = "float32"  # the export dtype of the ``compute`` tensors
    vocab_size: int = 2  # value ranges of the sample inputs
    diffusion_steps: int = 1

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def shape(self, t: TensorSpec, which: str) -> tuple[int, ...]:
        """Concrete shape of ``t`` at the profile point ``which`` (min | opt | max)."""
        k = ("min", "opt", "max").index(which)
        return tuple(d if isinstance(d, int) else self.dims[d][k] for d in t.shape)

    def sample_inputs(self, batch: int = 2, n: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """Deterministic inputs at batch ``batch`` and target length ``n`` (default: the opt length); the
        last row's source is half padding so the masks matter."""
        g = torch.Generator().manual_seed(seed)
        sizes = {"batch": batch, "n": n or self.dims["n"][1]}
        out = {}
        for t in self.inputs:
            shape = tuple(d if isinstance(d, int) else sizes[d] for d in t.shape)
            if t.name == "src_mask":
                x = torch.ones(shape, dtype=torch.bool)
                x[-1, shape[1] // 2:] = False
            elif t.name == "src_ids":
                x = torch.randint(5, self.vocab_size, shape, generator=g)
            elif t.name == "timestep":
                x = torch.randint(0, self.diffusion_steps, shape, generator=g)
            elif t.name == "coef":
                x = torch.rand(shape, generator=g)
            else:
                x = torch.randn(shape, generator=g)
            out[t.name] = x.to(t.torch_dtype(self.dtype))
        return out


def _kv(prefix: str, layers: int, heads: int, src: int, head_dim: int) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(f"{prefix}_{l}_{kv}", "compute", ("batch", heads, src, head_dim))
                 for l in range(layers) for kv in ("k", "v"))


def graph_specs(cfg: ModelConfig, dtype: str = "float32") -> dict[str, GraphSpec]:
    """The three graphs of a model config, in the order they run."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"export dtype must be float32 or float16, got {dtype!r}")
    h, dh = cfg.n_heads, cfg.d_model // cfg.n_heads
    S = cfg.max_source_len  # static: the tokenizer always pads the source to it (and T5's reshape needs it)
    dims = {"batch": (1, 8, MAX_BATCH), "n": (1, cfg.max_target_len, cfg.max_target_len)}
    extra = {"dtype": dtype, "vocab_size": cfg.vocab_size, "diffusion_steps": cfg.diffusion_steps}
    kv_den = _kv("kv_den", cfg.denoiser_layers, h, S, dh)
    kv_dec = _kv("kv_dec", cfg.decoder_layers, h, S, dh)
    mask = TensorSpec("src_mask", "bool", ("batch", S))
    state = lambda name: TensorSpec(name, "float32", ("batch", "n", cfg.d_embed))  # noqa: E731
    length = (TensorSpec("length_logits", "float32", ("batch", cfg.max_target_len)),) if cfg.length_head else ()
    cond = (TensorSpec("cond_den", "compute", ("batch", 1, cfg.d_model)),) if cfg.pooled_condition else ()
    encoder = GraphSpec(
        "encoder", (TensorSpec("src_ids", "int64", ("batch", S)), mask),
        (TensorSpec("memory", "float32", ("batch", S, cfg.enc_d_model)), *kv_den, *kv_dec, *cond, *length), dims,
        **extra)
    denoiser = GraphSpec(
        "denoiser", (state("x_t"), state("x0_prev"), TensorSpec("timestep", "int64", (1,)),
                     TensorSpec("coef", "float32", (4,)), state("noise"), mask, *kv_den, *cond),
        (state("x0_hat"), state("x_next")), dims, **extra)
    decoder = GraphSpec(
        "decoder", (state("x0"), mask, *kv_dec),
        (TensorSpec("token_ids", "int64", ("batch", "n")), TensorSpec("logprobs", "float32", ("batch", "n"))),
        dims, **extra)
    return {g.name: g for g in (encoder, denoiser, decoder)}
