"""The ``torch`` backend: the same model, restructured for inference (DESIGN §3).

What changes against ``reference`` (same weights, same math, fewer and larger ops):
    - cross-attention K/V of E_s computed once per request, for every block of N and D
      (``FastMemory.kv``), instead of once per step;
    - the timestep embedding MLP tabulated for all T timesteps at load (one row gather per step);
    - self-attention Q, K, V from one fused (3d × d) projection;
    - ``F.scaled_dot_product_attention`` instead of the written-out softmax, in bf16 and fp16;
    - weights cast once to the compute dtype (fp32, bf16 — AVX-512 BF16 or AMX on CPU, tensor cores on GPU —
      or fp16 on GPU); the diffusion state, noise and solver update stay fp32;
    - on GPU, the loop's steps replayed from CUDA graphs (graphs.py).

fp32 on CPU is the parity case (``parity_fp32``): there attention is the reference's own ``attend`` and the step's
Box–Muller and update are the reference's torch ops (not SDPA and the fused C++ step, whose other summation order
and correctly rounded log/sin/cos cost ~1e-6 per step, grown to ~1e-4 over a 1200-step trajectory); only the Philox
words, integers, come from C++. Every other change above is exact on this machine, so fp32 `torch` on CPU
reproduces `reference` bit for bit (README, "Parity").

The model passed in is untouched (kept fp32 for the length head): the backend works on a copy.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from ..diffusion.solvers import at
from ..errors import CodeFusionError
from ..model.layers import sinusoidal
from ..tokenizer import SourceBatch
from .base import Backend, SamplerState, argmax_ids, read_tokens
from .fast_stack import FastMemory, FastStack, _packing_works, pack_linears
from .graphs import StepGraphs

HEAD_ROWS = 512  # positions per block of the head on CPU (decode_ids)


def _cpu_step_ready() -> bool:
    """Whether the fused C++ solver step is built (compiling it on the first call)."""
    try:
        from codefusion.kernels.solver_step_cpu import extension
    except ImportError:
        return False
    return extension() is not None


class TorchBackend(Backend):
    name = "torch"
    # the stacks run as eager FastStacks: on CPU their bf16 linears are packed (PackedLinear) and a batch's length
    # groups share one pass (run_groups). Subclasses that compile the stacks or replace them with kernels opt out.
    eager_stacks = True
    # fp32 on CPU takes the reference's arithmetic (module docstring): bit for bit `reference` there. Subclasses
    # that compile or export the stacks opt out and keep SDPA and the fused C++ step.
    parity_fp32 = True

    @property
    def groups_in_one_pass(self) -> bool:
        return self.eager_stacks and self.graphs is None  # a CUDA graph replays one group's shapes

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        if dtype == torch.float16 and device.type == "cpu":
            raise CodeFusionError("float16 runs on GPU only: use --dtype bfloat16 (AVX-512 BF16 or AMX) or float32 "
                                  "on CPU")
        super().__init__(model.to(device).eval(), device, dtype)
        cfg, model = model.cfg, copy.deepcopy(model)
        self.exact = self.parity_fp32 and dtype == torch.float32 and device.type == "cpu"
        if self.exact:  # the reference's noise, its integer Philox words from C++ (equal; torch's without a compiler)
            from codefusion.kernels.solver_step_cpu import philox_words_cpu
            self.philox_words = philox_words_cpu
        with torch.no_grad():
            den = model.denoiser
            steps = torch.arange(cfg.diffusion_steps, device=device)
            table = den.time.mlp(sinusoidal(steps, den.time.d)).to(dtype)  # fp32 MLP, then cast
            self.denoiser = FastStack(den, dtype, table, self.exact).eval()
            self.cond = None if den.cond is None else den.cond.to(dtype).eval()
            self.decoder = FastStack(model.decoder, dtype, exact=self.exact).eval()
            self.encoder = model.encoder.to(dtype).eval()
            self.self_condition = cfg.self_condition
            self.embed_weight = model.embed.weight.to(dtype)
            self.head = model.head.to(dtype)
            if self.eager_stacks and device.type == "cpu" and dtype == torch.bfloat16 and _packing_works():
                pack_linears(self.denoiser)
                pack_linears(self.decoder)
        self.abar = model.alphas_cumprod.to(device)
        # GPU: the loop replays CUDA graphs of its steps (graphs.py); CPU has no launch cost to save
        self.graphs = StepGraphs(self.step) if device.type == "cuda" else None

    def advance(self, state, i, x0):
        """On CPU, the noise draw and the solver update (★) run as one fused C++ pass (kernels/cpu,
        built on first use; the torch version where no compiler is present): in torch the counter-based
        noise alone is ~6 ms of a step at 128 × 128 on this machine's 2 cores. In the parity case (fp32),
        the reference's torch ops (the C++ log/sin/cos are correctly rounded, torch's up to 2 ulps off), with
        only the Philox words — integers, so exact — from C++: 78% of the torch noise's time."""
        if self.device.type != "cpu" or self.exact or not _cpu_step_ready():
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
        source = self.trim(source)
        ids, mask = source.ids.to(self.device), source.mask.to(self.device)
        states = self.encoder(ids, mask)
        kv = tuple(b.cross_kv(states) for b in (*self.denoiser.blocks, *self.decoder.blocks))
        cond = None if self.cond is None else self.cond(states, mask)[:, None, :]
        return FastMemory(states, mask, kv, mask.bool()[:, None, None, :], cond)

    def trim(self, source: SourceBatch) -> SourceBatch:
        """On CPU, the request's padding cut to the next power of two (≥ 16) above its longest prompt:
        padded keys are masked anyway, so E_s and every step's cross-attention get ~4× shorter for a
        typical request (≈ 12 tokens of 64) at no change in the result beyond float summation order. Powers
        of two keep the shapes ``torch-compile`` sees to three. On GPU the width stays fixed, as captured
        CUDA graphs expect."""
        if self.graphs is not None:
            return source
        longest = int(source.mask.sum(dim=1).max())
        width = min(source.ids.shape[1], max(16, 1 << (longest - 1).bit_length()))
        return replace(source, ids=source.ids[:, :width], mask=source.mask[:, :width])

    def _kv(self, memory: FastMemory, part: str):
        n_den = len(self.denoiser.blocks)
        return memory.kv[:n_den] if part == "denoiser" else memory.kv[n_den:]

    @torch.inference_mode()
    def denoise(self, x_t, t, memory: FastMemory, x0_prev):
        return self._denoise(x_t, t, memory, x0_prev)

    def _denoise(self, x_t, t, memory: FastMemory, x0_prev):
        out = self.denoiser(self._input(x_t, x0_prev), t, self._kv(memory, "denoiser"), memory.attn_mask, memory.cond)
        return self._x0(out, x_t, t)

    def _denoise_groups(self, x_ts, t, memories: list[FastMemory], x0_prevs) -> list[torch.Tensor]:
        """``_denoise`` of several groups in one FastStack.forward_groups pass."""
        outs = self.denoiser.forward_groups([self._input(x, x0) for x, x0 in zip(x_ts, x0_prevs)], t,
                                            [self._kv(m, "denoiser") for m in memories],
                                            [m.attn_mask for m in memories], [m.cond for m in memories])
        return [self._x0(out, x_t, t) for out, x_t in zip(outs, x_ts)]

    def _input(self, x_t: torch.Tensor, x0_prev: torch.Tensor) -> torch.Tensor:
        return torch.cat([x_t, x0_prev], dim=-1) if self.self_condition else x_t

    def _x0(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The denoiser's output as x̂0, fp32."""
        out = out.to(torch.float32)
        if self.cfg.prediction == "x0":
            return out
        abar = self.abar.index_select(0, t.reshape(1))  # (1,), no host sync
        return (x_t - (1 - abar).sqrt() * out) / abar.sqrt()

    def run_groups(self, states: list[SamplerState], start: int, stop: int) -> list[SamplerState]:
        """On CPU, the groups' denoiser passes of each step as one (FastStack.forward_groups): the
        matrix products of 16 requests over three length buckets run as one product per layer, instead
        of three loops each paying the per-op cost of a small batch. The rest of the step (rounding,
        noise, update with the group's own coefficients) stays per group, so each group's result equals its own
        ``run_steps``."""
        if len(states) == 1 or not self.groups_in_one_pass:
            return super().run_groups(states, start, stop)
        timesteps = states[0].table.timesteps  # the one thing the groups share: t, fed to the denoiser
        if any(s.table.timesteps.shape != timesteps.shape or not torch.equal(s.table.timesteps, timesteps)
               for s in states):
            raise CodeFusionError("run_groups needs the same kept timesteps in every group (same steps and "
                                  "spacing): run differing requests separately")
        with torch.inference_mode():
            for i in range(start, stop):
                t = at(timesteps, i).reshape(())
                x0s = self._denoise_groups([s.x_t for s in states], t, [s.memory for s in states],
                                           [s.x0_hat for s in states])
                states = [self.settle(s, i, x0) for s, x0 in zip(states, x0s)]
        return states

    @torch.inference_mode()
    def decode(self, x0, memory: FastMemory):
        return read_tokens(self.logits(x0, memory))

    @torch.inference_mode()
    def decode_ids(self, x0, memory: FastMemory):
        return self._decode_ids(x0, memory)

    def _decode_ids(self, x0, memory: FastMemory):
        """On CPU the head runs in blocks of HEAD_ROWS positions, so each block's logits are still in cache when
        their max is taken: the default model at batch 64 × 32 tokens writes 32 MiB of bf16 logits per step, and
        head + max take 25.2 ms at once against 13.3 in blocks of 512 (this Xeon, 2 cores). Same ids."""
        h = self._hidden(x0, memory)  # (B, n, d_embed)
        if self.device.type != "cpu":
            return argmax_ids(self.head(h, self.embed_weight))
        rows = h.reshape(-1, h.shape[-1])
        ids = [argmax_ids(self.head(block, self.embed_weight)) for block in rows.split(HEAD_ROWS)]
        return torch.cat(ids).view(h.shape[:-1])

    @torch.inference_mode()
    def logits(self, x0, memory: FastMemory):
        return self.head(self._hidden(x0, memory), self.embed_weight)

    def _hidden(self, x0, memory: FastMemory):
        return self.decoder(x0, None, self._kv(memory, "decoder"), memory.attn_mask)


class CompiledTorchBackend(TorchBackend):
    """``torch-compile``: the ``torch`` backend with the denoiser and decoder compiled by Inductor, with
    freezing (the weights become constants; LayerNorm, GELU, residual adds and the Python between ops
    fused into a few C++ loops; on this project's AVX-512-BF16 CPU the linears stay oneDNN ``addmm``
    calls). Same results as ``torch`` up to the reordering of float sums. Its first call per (rows,
    length) shape compiles (≈ 20 s for the default model on a 2-core CPU; ``bench latency`` reports it
    as cold start), so it suits a server or a benchmark, not a one-shot CLI call. Measured: one 20-step
    query on the default model 100 ms against 121 ms for ``torch``; the ``paper`` step 22.9 against 24.1 ms."""

    name = "torch-compile"
    eager_stacks = False  # Inductor packs the weights itself when it freezes them, and compiles one shape at a time
    parity_fp32 = False  # Inductor reorders the sums anyway: SDPA and the fused C++ step in every dtype

    # Dynamo keeps at most recompile_limit (8) compilations per code object, and the denoiser and decoder share
    # FastStack.forward's: past 4 shapes each, every new shape ran uncompiled, silently. A server meets dozens
    # (rows × length bucket × source width); this raises the limit (process-wide, never lowers it).
    RECOMPILE_LIMIT = 128

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        super().__init__(model, device, dtype)
        import torch._dynamo.config as dynamo
        dynamo.recompile_limit = max(dynamo.recompile_limit, self.RECOMPILE_LIMIT)
        dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 2 * self.RECOMPILE_LIMIT)
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
        return read_tokens(self.logits(x0, memory))

    @torch.no_grad()
    def decode_ids(self, x0, memory: FastMemory):
        return self._decode_ids(x0, memory)
