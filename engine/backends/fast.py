"""The ``torch`` backend: the same model, restructured for inference (DESIGN §3).

What changes against ``reference`` (same weights, same math, fewer and larger ops):
    - cross-attention K/V of E_s computed once per request, for every block of N and D
      (``FastMemory.kv``), instead of once per step;
    - the timestep embedding MLP tabulated for all T timesteps at load (one row gather per step);
    - self-attention Q, K, V from one fused (3d × d) projection;
    - ``F.scaled_dot_product_attention`` instead of the written-out softmax;
    - weights cast once to the compute dtype (fp32, bf16 — AMX on CPU, tensor cores on GPU —
      or fp16 on GPU); the diffusion state, noise and solver update stay fp32;
    - on GPU, the loop's steps replayed from CUDA graphs (graphs.py).

The model passed in is untouched (kept fp32 for the length head): the backend works on a copy.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CodeFusionError
from ..model.layers import sinusoidal
from ..tokenizer import SourceBatch
from .base import Backend, Memory
from .graphs import StepGraphs


@dataclass(frozen=True, eq=False)
class FastMemory(Memory):
    """E_s plus, per block of N then D, its cross-attention (K, V), each (B, h, S, d/h)."""

    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    attn_mask: torch.Tensor | None = None  # (B, 1, 1, S) bool, True where a key may be attended
    cond: torch.Tensor | None = None  # (B, 1, d) N's pooled condition C(E_s), when the model has one

    def repeat_interleave(self, k: int) -> "FastMemory":
        rep = lambda x: x.repeat_interleave(k, 0)  # noqa: E731
        return replace(self, states=rep(self.states), mask=rep(self.mask), attn_mask=rep(self.attn_mask),
                       kv=tuple((rep(a), rep(b)) for a, b in self.kv),
                       cond=None if self.cond is None else rep(self.cond))


class FastBlock(nn.Module):
    """Block with fused self-attention QKV and cached cross-attention K/V; pre-LN like the original."""

    def __init__(self, block, dtype: torch.dtype):
        super().__init__()
        sa, ca = block.self_attn, block.cross_attn
        self.h = sa.n_heads
        self.ln1, self.ln2, self.ln3 = block.ln1, block.ln2, block.ln3
        self.qkv = nn.Linear(sa.q.in_features, 3 * sa.q.out_features, device="meta")
        self.qkv.weight = nn.Parameter(torch.cat([sa.q.weight, sa.k.weight, sa.v.weight]))
        self.qkv.bias = nn.Parameter(torch.cat([sa.q.bias, sa.k.bias, sa.v.bias]))
        self.o, self.cq, self.ck, self.cv, self.co, self.ffn = sa.o, ca.q, ca.k, ca.v, ca.o, block.ffn
        self.to(dtype)

    def heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, m, d) → (B, h, m, d/h)
        B, m, d = x.shape
        return x.view(B, m, self.h, d // self.h).transpose(1, 2)

    def cross_kv(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.ck(mem)), self.heads(self.cv(mem))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], attn_mask: torch.Tensor) -> torch.Tensor:
        B, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        x = x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, n, d))
        q = self.heads(self.cq(self.ln2(x)))
        x = x + self.co(F.scaled_dot_product_attention(q, *kv, attn_mask=attn_mask).transpose(1, 2).reshape(B, n, d))
        return x + self.ffn(self.ln3(x))


class FastStack(nn.Module):
    """N or D as: input projection + positions [+ time table row] [+ pooled condition] → FastBlocks → LN →
    output projection."""

    def __init__(self, stack, dtype: torch.dtype, time_table: torch.Tensor | None = None):
        super().__init__()
        self.inp, self.ln, self.out = stack.inp, stack.ln, stack.out
        self.pos = stack.pos
        self.blocks = nn.ModuleList(FastBlock(b, dtype) for b in stack.blocks)
        self.time_table = time_table  # (T, d) in dtype, or None for D
        self.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor | None, kv, attn_mask,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inp(x.to(self.dtype)) + self.pos[: x.shape[1]]
        if self.time_table is not None:
            h = h + self.time_table.index_select(0, t.reshape(1))  # (1, d): a 0-d index would sync (.item())
        if cond is not None:
            h = h + cond
        for block, block_kv in zip(self.blocks, kv):
            h = block(h, block_kv, attn_mask)
        return self.out(self.ln(h))


def _cpu_step_ready() -> bool:
    """Whether the fused C++ solver step is built (compiling it on the first call)."""
    try:
        from codefusion.kernels.solver_step_cpu import extension
    except ImportError:
        return False
    return extension() is not None


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        if dtype == torch.float16 and device.type == "cpu":
            raise CodeFusionError("float16 runs on GPU only: use --dtype bfloat16 (AMX) or float32 on CPU")
        super().__init__(model.to(device).eval(), device, dtype)
        cfg, model = model.cfg, copy.deepcopy(model)
        with torch.no_grad():
            den = model.denoiser
            steps = torch.arange(cfg.diffusion_steps, device=device)
            table = den.time.mlp(sinusoidal(steps, den.time.d)).to(dtype)  # fp32 MLP, then cast
            self.denoiser = FastStack(den, dtype, table).eval()
            self.cond = None if den.cond is None else den.cond.to(dtype).eval()
            self.decoder = FastStack(model.decoder, dtype).eval()
            self.encoder = model.encoder.to(dtype).eval()
            self.self_condition = cfg.self_condition
            self.embed_weight = model.embed.weight.to(dtype)
            self.head = model.head.to(dtype)
        self.abar = model.alphas_cumprod.to(device)
        # GPU: the loop replays CUDA graphs of its steps (graphs.py); CPU has no launch cost to save
        self.graphs = StepGraphs(self.step) if device.type == "cuda" else None

    def advance(self, state, i, x0):
        """On CPU, the noise draw and the solver update (★) run as one fused C++ pass (kernels/cpu,
        built on first use; the torch version where no compiler is present): in torch the counter-based
        noise alone is ~6 ms of a step at 128 × 128 on this machine's 2 cores."""
        if self.device.type != "cpu" or not _cpu_step_ready():
            return super().advance(state, i, x0)
        from codefusion.kernels.solver_step_cpu import solver_step_cpu
        table = state.table
        index = i if isinstance(i, torch.Tensor) else torch.tensor(i)
        return solver_step_cpu(state.x_t.contiguous(), x0.contiguous(), state.x0_hat.contiguous(), table.a, table.b,
                               table.c, table.sigma, table.timesteps, index.to(torch.int64), state.seeds,
                               state.samples, has_prev=table.solver == "dpmpp_2m")

    def run_steps(self, state, start: int, stop: int):
        if self.graphs is None:
            return super().run_steps(state, start, stop)
        return self.graphs.run(state, start, stop)

    @torch.inference_mode()
    def encode(self, source: SourceBatch) -> FastMemory:
        ids, mask = source.ids.to(self.device), source.mask.to(self.device)
        states = self.encoder(ids, mask)
        kv = tuple(b.cross_kv(states) for b in (*self.denoiser.blocks, *self.decoder.blocks))
        cond = None if self.cond is None else self.cond(states, mask)[:, None, :]
        return FastMemory(states, mask, kv, mask.bool()[:, None, None, :], cond)

    def _kv(self, memory: FastMemory, part: str):
        n_den = len(self.denoiser.blocks)
        return memory.kv[:n_den] if part == "denoiser" else memory.kv[n_den:]

    @torch.inference_mode()
    def denoise(self, x_t, t, memory: FastMemory, x0_prev):
        return self._denoise(x_t, t, memory, x0_prev)

    def _denoise(self, x_t, t, memory: FastMemory, x0_prev):
        x = torch.cat([x_t, x0_prev], dim=-1) if self.self_condition else x_t
        out = self.denoiser(x, t, self._kv(memory, "denoiser"), memory.attn_mask, memory.cond).to(torch.float32)
        if self.cfg.prediction == "x0":
            return out
        abar = self.abar.index_select(0, t.reshape(1))  # (1,), no host sync
        return (x_t - (1 - abar).sqrt() * out) / abar.sqrt()

    @torch.inference_mode()
    def decode(self, x0, memory: FastMemory):
        return self._decode(x0, memory)

    def _decode(self, x0, memory: FastMemory):
        h = self.decoder(x0, None, self._kv(memory, "decoder"), memory.attn_mask)
        logits = self.head(h, self.embed_weight)
        logp = torch.log_softmax(logits.to(torch.float32), dim=-1)
        best, ids = logp.max(dim=-1)
        return ids, best


class CompiledTorchBackend(TorchBackend):
    """``torch-compile``: the ``torch`` backend with the denoiser and decoder compiled by Inductor, with
    freezing (the weights become constants; LayerNorm, GELU, residual adds and the Python between ops
    fused into a few C++ loops; on this project's AVX-512-BF16 CPU the linears stay oneDNN ``addmm``
    calls). Same results as ``torch`` up to the reordering of float sums. Its first call per (rows,
    length) shape compiles (≈ 20 s for the default model on a 2-core CPU; ``bench latency`` reports it
    as cold start), so it suits a server or a benchmark, not a one-shot CLI call. Measured: one 20-step
    query on the default model 100 ms against 121 ms for ``torch``; the ``paper`` step 22.9 against 24.1 ms."""

    name = "torch-compile"

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        super().__init__(model, device, dtype)
        # the stacks are compiled as modules, so their weights are parameters Inductor can freeze
        options = {"freezing": True}
        self.denoiser = torch.compile(self.denoiser, options=options, dynamic=False)
        self.decoder = torch.compile(self.decoder, options=options, dynamic=False)

    # Inference-mode tensors cannot pass through a graph Inductor traces: no_grad instead
    @torch.no_grad()
    def denoise(self, x_t, t, memory: FastMemory, x0_prev):
        return self._denoise(x_t, t, memory, x0_prev)

    @torch.no_grad()
    def decode(self, x0, memory: FastMemory):
        return self._decode(x0, memory)
