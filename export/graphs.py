"""The modules that get exported: thin wrappers over the ``torch`` backend's fp32 model (FastStack /
FastBlock, cross-attention K/V as inputs), one per spec in specs.py, with the same argument order.

Built from ``TorchBackend(model, cpu, float32)`` and never from the Triton backend: the graphs must be
plain ATen ops. Under ``float16`` the denoiser/decoder stacks and the K/V projections are cast to fp16
while the T5 encoder, the length head and the diffusion state stay fp32.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from codefusion.backends.base import read_tokens
from codefusion.backends.fast import TorchBackend
from codefusion.backends.fast_stack import FastStack


def _pairs(kv: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    return tuple(zip(kv[0::2], kv[1::2]))  # (k_0, v_0, k_1, v_1, …) → ((k_0, v_0), …)


def _mask(src_mask: torch.Tensor, n: int) -> torch.Tensor:
    """(B, S) → (B, 1, n, S) cross-attention mask. Expanded over the queries, not broadcast from (B, 1, 1, S):
    onnxruntime 1.32's CPU Attention op (opset 23) rejects a mask whose query dim differs from n."""
    return src_mask[:, None, None, :].expand(-1, 1, n, -1)


def _cast(stack: FastStack, dtype: torch.dtype) -> FastStack:
    stack = copy.deepcopy(stack).to(dtype)
    stack.dtype = dtype
    if stack.time_table is not None:  # a plain attribute, not a buffer: .to() skips it
        stack.time_table = stack.time_table.to(dtype)
    return stack


class EncoderGraph(nn.Module):
    """(src_ids, src_mask) → (E_s, K/V of every block of N then D [, pooled condition] [, length logits])."""

    predecompose = True  # see onnx.py: T5's reshape needs torch's default decompositions before export

    def __init__(self, fast: TorchBackend, dtype: torch.dtype):
        super().__init__()
        self.encoder = fast.encoder  # fp32 always
        self.blocks = nn.ModuleList([*_cast(fast.denoiser, dtype).blocks, *_cast(fast.decoder, dtype).blocks])
        self.length_head = fast.model.length_head
        self.cond = None if fast.cond is None else copy.deepcopy(fast.cond).to(dtype)
        self.dtype = dtype

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor):
        states = self.encoder(src_ids, src_mask)  # (B, S, d_enc) fp32
        kv = [t for block in self.blocks for t in block.cross_kv(states.to(self.dtype))]  # each (B, h, S, d/h)
        out = (states, *kv)
        if self.cond is not None:
            out = (*out, self.cond(states.to(self.dtype), src_mask)[:, None, :])  # (B, 1, d)
        if self.length_head is not None:
            out = (*out, self.length_head(states, src_mask))  # (B, n_max) fp32
        return out


class DenoiserGraph(nn.Module):
    """One sampler step: x̂0 = N(x_t, t, K/V [, x̂0_prev]), then (★) x_next = a·x̂0 + b·x_t + c·x̂0_prev + σ·z."""

    def __init__(self, fast: TorchBackend, dtype: torch.dtype):
        super().__init__()
        self.stack = _cast(fast.denoiser, dtype)
        self.self_condition = fast.self_condition
        self.pooled = fast.cond is not None  # then the last of *kv is the pooled condition (B, 1, d)
        self.eps = fast.cfg.prediction == "eps"
        self.register_buffer("abar", fast.abar.to(torch.float32).clone(), persistent=False)

    def forward(self, x_t, x0_prev, timestep, coef, noise, src_mask, *kv):
        x = torch.cat([x_t, x0_prev], dim=-1) if self.self_condition else x_t
        kv, cond = (kv[:-1], kv[-1]) if self.pooled else (kv, None)
        out = self.stack(x, timestep, _pairs(kv), _mask(src_mask, x.shape[1]), cond).to(torch.float32)
        if self.eps:
            abar = self.abar.index_select(0, timestep.reshape(1))  # (1,)
            out = (x_t - (1 - abar).sqrt() * out) / abar.sqrt()
        x_next = coef[0] * out + coef[1] * x_t + coef[2] * x0_prev + coef[3] * noise
        return out, x_next


class DecoderGraph(nn.Module):
    """x̂0 → D → H → (argmax ids, their log-probabilities: ``read_tokens``), all in the graph."""

    def __init__(self, fast: TorchBackend, dtype: torch.dtype):
        super().__init__()
        self.stack = _cast(fast.decoder, dtype)
        self.head = copy.deepcopy(fast.head).to(dtype)
        self.register_buffer("embed_weight", fast.embed_weight.to(dtype).clone(), persistent=False)

    def forward(self, x0, src_mask, *kv):
        h = self.stack(x0, None, _pairs(kv), _mask(src_mask, x0.shape[1]))
        return read_tokens(self.head(h, self.embed_weight))  # (B, n, V) logits → (B, n) ids, log-probabilities


class _ExportedTorch(TorchBackend):
    parity_fp32 = False  # SDPA, which the exporter maps to the opset's attention (opset 23: the Attention op)


def build_graphs(model, dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    """name → eval-mode module, in spec order, from the torch backend's fp32 model (CPU)."""
    fast = _ExportedTorch(model, torch.device("cpu"), torch.float32)
    return {"encoder": EncoderGraph(fast, dtype).eval(), "denoiser": DenoiserGraph(fast, dtype).eval(),
            "decoder": DecoderGraph(fast, dtype).eval()}
