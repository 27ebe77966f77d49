"""Rollout targets snapped to the nearest training program (``--rollout-snap LANGS``).

Rollout (rollout.py) shows the denoiser the state its own sampler reached and asks for the row's own program
from there. Where the model is unsure which program a request wants, that state is a blend of several, and
the row's program is only one of them: the regression target pulls towards it, the other programs' rows pull
towards theirs, and the least-squares answer stays the blend. In the reference sampler the blend survives to
the end: each position takes the token most candidate programs put there and the positions need not agree
(models/README.md, sessions 16–18: ``top (`` for ``ColorScale ()``). That is the multimodality of
non-autoregressive decoding (Gu et al. 2018).

With snapping, a rollout row of a chosen language whose t is at most ``t_max`` · T takes as its target the
training program of its language (and length bucket) nearest to the model's own x̂0 at that state, mean
squared distance over all n positions (pads included) to the clean embeddings, the row's own program winning
ties. Where the model already heads for the row's program nothing changes; where it heads elsewhere it is
taught to finish the program it started, a whole program, instead of being pulled back towards a blend. This
is the imitation-learning view of scheduled sampling: from the learner's own state, the target is what a
good continuation of that state is, not the reference from the start (Ross et al. 2011, DAgger; Wei et al.
2019 for non-autoregressive translation). It trades some fidelity to the request for programs that are
whole, and applies only late in the loop, where the state has already chosen.

Measured (models/README.md, session 19): on a 37-minute CPU continuation of the default model, CF parsed on every
dev request at 20 to 300 respaced DDPM steps and on 31.9% at 1200. The walk it learns from takes 8 steps; the pull it
teaches compounds over the hundreds of evaluations a 1200-step loop makes. Use it for few-step sampling.
"""
from __future__ import annotations

import torch

from ..tokenizer import CodeTokenizer


class ProgramBank:
    """The distinct training programs of each snapped language, as target rows of each bucket length."""

    def __init__(self, code_ids: list[list[int]], langs: list[str], snap: tuple[str, ...], tok: CodeTokenizer):
        self.tok = tok
        self.programs: dict[str, list[list[int]]] = {}
        seen: set[tuple[str, tuple[int, ...]]] = set()
        for ids, lang in zip(code_ids, langs):
            if lang in snap and (lang, tuple(ids)) not in seen:
                seen.add((lang, tuple(ids)))
                self.programs.setdefault(lang, []).append(list(ids))
        self._rows: dict[tuple[str, int], torch.Tensor] = {}

    def langs(self) -> tuple[str, ...]:
        return tuple(self.programs)

    def rows(self, lang: str, n: int) -> torch.Tensor:
        """(C, n) int64: the programs of ``lang`` that fit n tokens with their </s>, padded as targets are."""
        if (lang, n) not in self._rows:
            fit = [p for p in self.programs.get(lang, []) if len(p) + 1 <= n]
            self._rows[(lang, n)] = (self.tok.encode_target(fit, n) if fit
                                     else torch.empty(0, n, dtype=torch.int64))
        return self._rows[(lang, n)]


@torch.no_grad()
def snap_targets(embed, tgt: torch.Tensor, x0_hat: torch.Tensor, rows: torch.Tensor, langs: list[str],
                 bank: ProgramBank) -> tuple[torch.Tensor, int]:
    """``tgt`` (B, n) with each selected row's program replaced by its bank's program nearest to ``x0_hat``
    (B, n, d); ``rows`` (B,) bool: the rollout rows eligible; ``embed``: token ids → clean embeddings L(y).
    Returns the new targets and how many rows changed."""
    out = tgt.clone()
    changed = 0
    n = tgt.shape[1]
    for lang in bank.langs():
        pick = [i for i in range(tgt.shape[0]) if bool(rows[i]) and langs[i] == lang]
        cands = bank.rows(lang, n).to(tgt.device)
        if not pick or not len(cands):
            continue
        idx = torch.tensor(pick, device=tgt.device)
        x = x0_hat[idx].float().flatten(1)  # (R, n·d)
        e = embed(cands).float().flatten(1)  # (C, n·d)
        d2 = (x.pow(2).sum(1, keepdim=True) - 2 * x @ e.T + e.pow(2).sum(1)) / x.shape[1]
        own = (x - embed(tgt[idx]).float().flatten(1)).pow(2).mean(1)
        best_d2, best = d2.min(dim=1)
        # the own program is in the bank: only a strictly nearer other program (beyond rounding) replaces it
        take = best_d2 < own - 1e-4 * own.clamp_min(1.0)
        for j in torch.nonzero(take).flatten().tolist():
            if not torch.equal(cands[best[j]], tgt[pick[j]]):
                out[pick[j]] = cands[best[j]]
                changed += 1
    return out, changed
