"""The ``reference`` backend: the plain model, recomputing everything every step. The parity oracle.

Networks run in the requested dtype (fp32 by default); the diffusion state stays fp32.
"""
from __future__ import annotations

import torch

from ..tokenizer import SourceBatch
from .base import Backend, Memory, argmax_ids, read_tokens


class ReferenceBackend(Backend):
    name = "reference"

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        super().__init__(model.to(device=device, dtype=dtype).eval(), device, dtype)

    @torch.inference_mode()
    def encode(self, source: SourceBatch) -> Memory:
        ids, mask = source.ids.to(self.device), source.mask.to(self.device)
        return Memory(self.model.encode(ids, mask), mask)

    @torch.inference_mode()
    def denoise(self, x_t, t, memory, x0_prev):
        B = x_t.shape[0]
        x0 = self.model.predict_x0(x_t.to(self.dtype), t.expand(B), memory.states, memory.mask,
                                   x0_prev.to(self.dtype))
        return x0.to(torch.float32)

    @torch.inference_mode()
    def decode(self, x0, memory):
        return read_tokens(self.logits(x0, memory))

    @torch.inference_mode()
    def decode_ids(self, x0, memory):
        return argmax_ids(self.logits(x0, memory))

    @torch.inference_mode()
    def logits(self, x0, memory):
        """The head's logits (B, n, V) of x0, as ``decode`` reads them (the parity bench takes their top-2 margins)."""
        return self.model.logits(self.model.decode(x0.to(self.dtype), memory.states, memory.mask))
