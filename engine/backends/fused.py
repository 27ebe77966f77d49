"""The ``triton`` backend: the ``torch`` backend with its hot path on Triton kernels (DESIGN §3).

Per denoiser block, instead of SDPA ×2, 3 LayerNorms and 3 residual adds:

    a      = LN1(x)                          fused into the previous block's last add
    x, a   = add_layernorm(o(attention(qkv(a))), x, LN2)      self-attention, q/k/v read in place
    x, a   = add_layernorm(co(attention(cq(a), K_s, V_s, mask)), x, LN3)
    f      = ffn(a)                          its residual add goes into the next LN1 (or the stack's LN)

and the stack's input ``inp(x) + pos[:n] + table[t]`` folds into the first add_layernorm. ``step`` runs
the denoiser, then one ``solver_step`` kernel draws z and applies (★) (the torch path runs ~40 kernels
for the noise alone). Linear layers stay cuBLAS / oneDNN GEMMs.

``fuse`` swaps FastStacks for kernel-backed twins that share their weights; the reference model and the
``torch`` backend's modules are untouched. On CPU the kernels run under the Triton interpreter (tests,
``bench parity --device cpu``): slow, but the same code.
"""
from __future__ import annotations

import functools
import os
import sys

import torch
from torch import nn

from ..errors import CodeFusionError
from .base import SamplerState
from .fast import TorchBackend
from .fast_stack import FastBlock, FastStack

def _use_interpreter_on_cpu(device: torch.device) -> None:
    """On CPU the kernels run under the Triton interpreter, which Triton switches on when it is imported
    (its own reductions are jit functions too): set TRITON_INTERPRET=1 now if Triton is not loaded yet, else
    ask for it. Loading a model imports Triton through torch._dynamo, so callers set it at start-up."""
    if device.type != "cpu" or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return
    if "triton" in sys.modules:
        raise CodeFusionError("the triton backend on CPU runs under the Triton interpreter: start Python with "
                              "TRITON_INTERPRET=1 (e.g. TRITON_INTERPRET=1 codefusion ...), or use --device cuda")
    os.environ["TRITON_INTERPRET"] = "1"


@functools.cache
def _ops():
    from codefusion.kernels.add_layernorm import add_layernorm
    from codefusion.kernels.attention import attention
    from codefusion.kernels.solver_step import solver_step
    return attention, add_layernorm, solver_step


def _norm(x: torch.Tensor, residual: torch.Tensor | None, ln: nn.LayerNorm, **extra):
    return _ops()[1](x, residual, extra.get("pos"), extra.get("table"), extra.get("t"), ln.weight, ln.bias, ln.eps)


class FusedBlock(nn.Module):
    """A FastBlock on the kernels; takes the residual stream x and a = LN1(x), returns (ffn output, x)."""

    def __init__(self, fast: FastBlock):
        super().__init__()
        self.fast = fast  # shares every weight; cross_kv (used by encode) stays the FastBlock's

    def cross_kv(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fast.cross_kv(mem)

    def forward(self, x, a, kv, key_mask) -> tuple[torch.Tensor, torch.Tensor]:
        f, attention = self.fast, _ops()[0]
        B, n, d = x.shape
        q, k, v = f.qkv(a).view(B, n, 3, f.h, d // f.h).permute(2, 0, 3, 1, 4)  # strided views, no copy
        x, a = _norm(f.o(attention(q, k, v, None).view(B, n, d)), x, f.ln2)
        q = f.heads(f.cq(a))
        x, a = _norm(f.co(attention(q, kv[0], kv[1], key_mask).view(B, n, d)), x, f.ln3)
        return f.ffn(a), x


class FusedStack(nn.Module):
    """FastStack with FusedBlocks: the same forward(x, t, kv, attn_mask[, cond]) → (B, n, d_out)."""

    def __init__(self, fast: FastStack):
        super().__init__()
        self.fast = fast
        self.blocks = nn.ModuleList(FusedBlock(b) for b in fast.blocks)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None, kv, attn_mask: torch.Tensor,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        f = self.fast
        key_mask = attn_mask[:, 0, 0, :]  # (B, 1, 1, S) → (B, S) view
        lns = [b.fast.ln1 for b in self.blocks[1:]] + [f.ln]
        table = f.time_table
        h = f.inp(x.to(f.dtype))
        if cond is not None:  # the pooled condition, (B, 1, d): one more add, only for models that have it
            h = h + cond
        x, a = _norm(h, None, self.blocks[0].fast.ln1, pos=f.pos, table=table,
                     t=None if table is None else t.reshape(1))
        for block, block_kv, ln in zip(self.blocks, kv, lns):
            y, x = block(x, a, block_kv, key_mask)
            x, a = _norm(y, x, ln)
        return f.out(a)


def fuse(module: nn.Module) -> nn.Module:
    """A FastStack's kernel-backed twin, or ``module`` with every FastStack attribute swapped (in place)."""
    if isinstance(module, FastStack):
        return FusedStack(module)
    for name, child in module.named_children():
        if isinstance(child, FastStack):
            setattr(module, name, FusedStack(child))
    return module


class TritonBackend(TorchBackend):
    name = "triton"
    eager_stacks = False  # FusedStack reads the linears' weights itself and runs one group per call
    parity_fp32 = False  # its own attention kernel and fused solver step in every dtype

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        _use_interpreter_on_cpu(device)
        try:
            _ops()
        except ImportError as e:
            raise CodeFusionError(f"the triton backend needs triton>=3.6 ({e}); pip install triton") from None
        super().__init__(model, device, dtype)
        if len(self.denoiser.blocks) == 0 or len(self.decoder.blocks) == 0:
            raise CodeFusionError("the triton backend needs at least one block in N and D")
        self.denoiser, self.decoder = fuse(self.denoiser), fuse(self.decoder)
        self._steps: dict[int, torch.Tensor] = {}

    def _step_index(self, i, K: int) -> torch.Tensor:
        """Step i as a (1,) int64 device tensor: a view of a cached arange for an int, so no copy per step."""
        if not isinstance(i, int):
            return i.reshape(1).to(torch.int64)
        if K not in self._steps:
            self._steps[K] = torch.arange(K, device=self.device)
        return self._steps[K][i:i + 1]

    def advance(self, state: SamplerState, i, x0: torch.Tensor) -> torch.Tensor:
        """Noise + (★) in one kernel (Backend.advance does the same in ~45 torch ops)."""
        table = state.table
        idx = self._step_index(i, len(table))
        with torch.inference_mode():
            return _ops()[2](state.x_t.contiguous(), x0.contiguous(), state.x0_hat.contiguous(), table.a, table.b,
                             table.c, table.sigma, table.timesteps, idx, state.seeds, state.samples,
                             table.solver == "dpmpp_2m")
