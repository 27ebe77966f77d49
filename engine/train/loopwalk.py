"""Rollout rows from the model's whole loop (``--rollout-loop R``) instead of a short respaced walk.

Rollout (rollout.py) shows the denoiser a state its own sampler reached, but by a walk of a few respaced steps
(8 by default) from pure noise. The reference sampler takes all T = 1200 steps, so below t = 600 it evaluates
the model 600 times where the walk evaluates it about four times. A pull that a few evaluations turn into a
settled program, hundreds turn into a drift (models/README.md, session 19: snapped runs parse every CF request
at 20–300 steps and 31.9% at 1200). To learn where its own 1200-step loop goes, the model has to be shown that
loop's states.

A whole loop costs T forwards of its rows, too many for every training step on a CPU. So it is run once for a
batch and kept: its state x_t at every timestep below ``t_max`` · T is stored with the x̂0 the loop feeds back
there as the self-condition (the estimate of the step before). The next R batches of that length bucket draw
their rollout rows from it, each row at its own t, and then the rollout rows of the bucket's next batch are
walked afresh with the weights as they are by then. This is DAgger's data aggregation (Ross et al. 2011): roll
the learner's own policy out, keep the states it visits, train on them with the right targets, roll out again.
A row keeps its request and program; with ``--rollout-snap`` its target may become the training program nearest
to where the loop headed at that state (snap.py), as for the short walk.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..diffusion.solvers import update
from .batches import Batch
from .rollout import OwnRows, rollout_table


@torch.no_grad()
def loop_states(model, mem: torch.Tensor, mem_mask: torch.Tensor | None, shape: tuple, t_keep: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ancestral loop over every timestep, T−1 down to 0, from x_{T−1} ~ N(0, I) with x̂0 self-conditioned
    on the previous step's (zeros at the first), dropout off. Returns (x, x0_prev), each (t_keep, B, n, d) fp32:
    x[t] the loop's state at timestep t and x0_prev[t] the x̂0 it feeds back there, for t < t_keep."""
    device = mem.device
    T = model.cfg.diffusion_steps
    table = rollout_table(T, 0, T - 1, str(device))
    xs = torch.empty((t_keep, *shape), device=device)
    prevs = torch.empty_like(xs)
    x = torch.randn(shape, device=device, generator=generator)
    x0_prev = torch.zeros_like(x)
    training = model.denoiser.training
    model.denoiser.eval()
    for i in range(len(table)):
        t = int(table.timesteps[i])
        if t < t_keep:
            xs[t], prevs[t] = x, x0_prev
        if i == len(table) - 1:
            break
        x0 = model.predict_x0(x, table.timesteps[i].expand(shape[0]), mem, mem_mask, x0_prev).float()
        x = update(x, x0, x0_prev, table, i, torch.randn(shape, device=device, generator=generator))
        x0_prev = x0
    model.denoiser.train(training)
    return xs, prevs


@dataclass
class _Walk:
    batch: Batch
    x: torch.Tensor  # (t_keep, B, n, d)
    x0_prev: torch.Tensor
    draws: int = 0


class LoopWalks:
    """One stored loop per length bucket, walked afresh after ``reuse`` draws."""

    def __init__(self, reuse: int, t_max: float, T: int):
        self.reuse = reuse
        self.t_keep = max(1, round(t_max * T))
        self.walks: dict[int, _Walk] = {}
        self.walked = 0  # loops run so far

    def _walk(self, model, batch: Batch, device) -> _Walk:
        src, mask = batch.src_ids.to(device), batch.src_mask.to(device)
        training = model.encoder.training
        model.encoder.eval()  # the requests read as at inference
        with torch.no_grad():
            mem = model.encode(src, mask)
        model.encoder.train(training)
        x, prev = loop_states(model, mem, mask, (*batch.tgt.shape, model.cfg.d_embed), self.t_keep)
        self.walked += 1
        return _Walk(batch, x, prev)

    def draw(self, model, batch: Batch, k: int, device,
             generator: torch.Generator | None = None) -> tuple[Batch, torch.Tensor, OwnRows]:
        """``batch`` with its first k rows replaced by k rows of its bucket's loop, each at a random stored t.
        Returns the new batch, the k rows' t (k,) and their OwnRows. When the bucket's loop is missing or used
        up, the first k rows of ``batch`` are walked first (a loop costs T forwards of its rows)."""
        B, n = batch.tgt.shape
        walk = self.walks.get(n)
        if walk is None or walk.draws >= self.reuse:
            head = replace(batch, tgt=batch.tgt[:k], src_ids=batch.src_ids[:k], src_mask=batch.src_mask[:k],
                           langs=batch.langs[:k])
            walk = self.walks[n] = self._walk(model, head, device)
        walk.draws += 1
        pick = torch.randint(walk.batch.tgt.shape[0], (k,), generator=generator)
        t = torch.randint(self.t_keep, (k,), generator=generator)
        src_ids, src_mask, tgt = batch.src_ids.clone(), batch.src_mask.clone(), batch.tgt.clone()
        src_ids[:k], src_mask[:k], tgt[:k] = walk.batch.src_ids[pick], walk.batch.src_mask[pick], walk.batch.tgt[pick]
        langs = tuple(walk.batch.langs[i] for i in pick.tolist()) + tuple(batch.langs[k:])
        x = torch.zeros(B, n, model.cfg.d_embed, device=device)
        prev = torch.zeros_like(x)
        at, rows_k = t.to(walk.x.device), pick.to(walk.x.device)
        x[:k], prev[:k] = walk.x[at, rows_k], walk.x0_prev[at, rows_k]
        rows = torch.arange(B, device=device) < k
        return replace(batch, tgt=tgt, src_ids=src_ids, src_mask=src_mask, langs=langs), t.to(device), \
            OwnRows(rows, x, prev, prev)
