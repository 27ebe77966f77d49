"""The backend seam: every way of running the model provides encode → step → decode.

    memory = backend.encode(source)                  once per request
    state  = backend.step(state, i)                  K times (the loop in diffusion/loop.py)
    ids, logp = backend.decode(x0, memory)           once (``decode_ids``: the ids alone, for the "decode" clamp)

``step`` defaults to "denoise, draw z, apply the solver update (★)"; a backend may fuse all three
(a Triton kernel, an ONNX graph, a CUDA graph) as long as it returns the same state. A state is
made of tensors only, so the loop never syncs with the host and can be graph-captured.

    states = backend.run_groups(states, start, stop)  several states on the same timesteps, one per length bucket

``run_groups`` defaults to one loop per state; the ``torch`` backend on CPU runs every group's
position-wise work (projections, LayerNorm, MLP) as one matrix product per layer and only attention per
group, so a server batch that spans length buckets costs one loop, not one per bucket.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..diffusion.solvers import StepTable, at, update
from ..noise import gaussian, philox_words
from ..tokenizer import SourceBatch


def argmax_ids(logits: torch.Tensor) -> torch.Tensor:
    """(B, n, V) logits → (B, n) int64 ids of the largest, the first on a tie. ``max`` rather than ``argmax``:
    on bf16 CPU tensors of the default model's batch-64 shape (64 × 32 × 8192) it takes 7.9 ms against 31.9."""
    return logits.max(dim=-1).indices


def read_tokens(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n, V) logits → the argmax token ids (B, n) int64 and their log-probabilities (B, n) fp32. The ids are
    the logits' own argmax, so a caller that needs only them (``Backend.decode_ids``) skips the softmax."""
    ids = argmax_ids(logits)
    logp = torch.log_softmax(logits.to(torch.float32), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return ids, logp


@dataclass(frozen=True, eq=False)
class Memory:
    """What the denoiser attends to. Backends may subclass it to carry caches (cross-attn K/V)."""

    states: torch.Tensor  # E_s, (B, S, d_enc)
    mask: torch.Tensor  # (B, S) bool, False at padding

    def repeat_interleave(self, k: int) -> "Memory":
        """Each prompt's row repeated k times (k samples per prompt, adjacent)."""
        return replace(self, states=self.states.repeat_interleave(k, 0), mask=self.mask.repeat_interleave(k, 0))


@dataclass(frozen=True, eq=False)
class SamplerState:
    x_t: torch.Tensor  # (B, n, d_embed) fp32, the diffusion state
    x0_hat: torch.Tensor  # (B, n, d_embed) fp32, the last step's estimate (zeros before the first)
    memory: Memory
    table: StepTable  # kept timesteps and solver coefficients, device tensors
    seeds: torch.Tensor  # (B,) int64, one noise key per row
    samples: torch.Tensor  # (B,) int64, sample index of the row within its prompt


class Backend:
    """Base class: subclasses set ``name`` and implement encode, denoise and decode."""

    name = "base"
    groups_in_one_pass = False  # whether run_groups shares each step's work across its states (else a loop each)
    philox_words = staticmethod(philox_words)  # the noise's Philox words; a backend may compute them elsewhere

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        self.model, self.device, self.dtype = model, device, dtype
        self.cfg = model.cfg

    def encode(self, source: SourceBatch) -> Memory:
        raise NotImplementedError

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, memory: Memory, x0_prev: torch.Tensor) -> torch.Tensor:
        """x̂0 (B, n, d_embed) fp32 from x_t fp32 and a 0-d timestep tensor."""
        raise NotImplementedError

    def decode(self, x0: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (token ids (B, n) int64, their log-probabilities (B, n) fp32)."""
        raise NotImplementedError

    def decode_ids(self, x0: torch.Tensor, memory: Memory) -> torch.Tensor:
        """The token ids of ``decode`` alone (B, n) int64: what the "decode" clamp reads every step. Backends
        override it to skip the log-softmax over the vocabulary (with the head in blocks, the `torch` backend's
        override took a batch-64 bf16 CPU step of the default model from 125.4 to 67.9 ms, README "Benchmarks")."""
        return self.decode(x0, memory)[0]

    def lengths(self, memory: Memory, quantile: float) -> torch.Tensor | None:
        """(B,) predicted target lengths (tokens + </s>) on the host, or None without a length head."""
        if self.model.length_head is None:
            return None
        from ..model.length import length_quantile
        head_dtype = self.model.length_head.net[0].weight.dtype  # E_s may be bf16 while the head is not
        with torch.inference_mode():
            logits = self.model.length_logits(memory.states.to(head_dtype), memory.mask)
        return length_quantile(logits, quantile).cpu()

    def run_steps(self, state: SamplerState, start: int, stop: int) -> SamplerState:
        """Steps [start, stop) of the loop. A backend may replay them from a captured graph."""
        for i in range(start, stop):
            state = self.step(state, i)
        return state

    def run_groups(self, states: list[SamplerState], start: int, stop: int) -> list[SamplerState]:
        """Steps [start, stop) of several states that share their kept timesteps (a batch's length buckets).
        Each result equals ``run_steps`` of that state alone; here they simply run one after another."""
        return [self.run_steps(state, start, stop) for state in states]

    def step(self, state: SamplerState, i) -> SamplerState:
        t = at(state.table.timesteps, i).reshape(())
        return self.settle(state, i, self.denoise(state.x_t, t, state.memory, state.x0_hat))

    def settle(self, state: SamplerState, i, x0: torch.Tensor) -> SamplerState:
        """The rest of step i once x̂0 is known: optional rounding of x̂0, then z and the update (★)."""
        if state.table.clamp != "none":
            x0 = self.round_x0(x0, state.memory, state.table.clamp)
        return replace(state, x_t=self.advance(state, i, x0), x0_hat=x0)

    def advance(self, state: SamplerState, i, x0: torch.Tensor) -> torch.Tensor:
        """x at the next kept step: z drawn, then the solver update (★). Backends may fuse the two."""
        t = at(state.table.timesteps, i).reshape(())
        z = gaussian(state.seeds, state.samples, t, tuple(state.x_t.shape[1:]), words=self.philox_words)
        return update(state.x_t, x0, state.x0_hat, state.table, i, z)

    def round_x0(self, x0: torch.Tensor, memory: Memory, how: str) -> torch.Tensor:
        """x̂0 replaced by rows of L: its nearest ("nearest"), or those of the tokens the decoder reads from it,
        L(argmax H(D(x̂0, E_s))) ("decode"). An x0-regression denoiser shrinks x̂0 towards the mean wherever it
        is unsure, and fed back step after step the shrinkage compounds: on this project's `small` model, 100
        DDPM steps from dev programs noised to t = 291 keep 66% of their tokens, 97% with "decode"
        (models/README.md, session 5). "decode" costs one decoder pass per step."""
        if how == "nearest":
            return self.nearest_embedding(x0)
        ids = self.decode_ids(x0, memory)
        with torch.inference_mode():
            return self.embedding(x0.device)[ids]

    def embedding(self, device: torch.device) -> torch.Tensor:
        """L, (V, d_embed) fp32 on ``device``."""
        return self.model.embed.weight.to(device=device, dtype=torch.float32)

    def nearest_embedding(self, x0: torch.Tensor) -> torch.Tensor:
        """Each position of x̂0 (B, n, d) replaced by its nearest row of L (Li et al. 2022, "clamping"):
        argmin_w ‖x − L_w‖² = argmax_w (x·L_w − ‖L_w‖²/2). fp32 throughout."""
        with torch.inference_mode():
            emb = self.embedding(x0.device)  # (V, d)
            ids = (x0 @ emb.T - 0.5 * emb.pow(2).sum(-1)).argmax(dim=-1)
            return emb[ids]

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
