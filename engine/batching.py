"""One length bucket of a ``generate_many`` call as a batch of rows: the helpers ``CodeFusion`` runs it with.

The bucket's requests become rows, request-major (``select_rows``, ``_GroupRun``); the loop over them runs in
chunks, for progress reports, trace steps and early exit (``_sample``); its rows are read back per request and
ranked (``_per_request``, ``_rank``). Apart from api.py so that it reads as the one public object and its verbs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .backends.base import SamplerState
from .config import GenerationConfig
from .diffusion.loop import run


def select_rows(memory, rows: torch.Tensor):
    """The memory (any backend's: E_s, masks, cached K/V) gathered at ``rows`` of its batch dimension."""
    def pick(x):
        if isinstance(x, torch.Tensor):
            return x.index_select(0, rows)
        if isinstance(x, tuple):
            return tuple(pick(o) for o in x)
        return x
    return replace(memory, **{f: pick(getattr(memory, f)) for f in memory.__dataclass_fields__})


@dataclass
class _GroupRun:
    """One length bucket of a generate_many call: its requests, their rows and the loop's initial state."""

    members: list[int]  # request indices
    spans: list[tuple[int, int, int]]  # per member: (first row, prompts, samples per prompt)
    prompt_of: list[int]  # per row: the prompt (index into the call's prompts) it samples for
    keep: list[int]  # per member: tokens kept of each of its rows (its max_length, or its bucket)
    state: SamplerState  # at step 0


def _per_request(entry: dict, a: int, n_prompts: int, k: int) -> dict:
    """A trace entry (one text per row) cut to one request's rows, grouped per prompt."""
    return {"step": entry["step"], "timestep": entry["timestep"],
            "texts": [entry["rows"][a + p * k:a + (p + 1) * k] for p in range(n_prompts)]}


PROGRESS_CHUNKS = 50  # a loop with a progress callback runs in about this many chunks


class _Progress:
    """Steps done over every loop of a generate_many call, handed to the caller's ``progress(done, total)``."""

    def __init__(self, callback, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def reach(self, backend, start: int, stop: int) -> None:
        """Steps [start, stop) of one loop have been queued: wait for them (GPU), then report."""
        backend.synchronize()
        self.done += stop - start
        self.callback(self.done, self.total)


def _chunk_stops(K: int, bar: "_Progress | None") -> list[int]:
    """Where a K-step loop pauses: at its end, and every ~K/PROGRESS_CHUNKS steps when progress is reported
    (equal chunks, so a CUDA-graph backend captures at most two chunk lengths)."""
    every = K if bar is None else -(-K // PROGRESS_CHUNKS)
    return [*range(every, K, every), K]


EARLY_EXIT_CHECKS = 20  # early exit: decode x̂0 this many times over a run …
EARLY_EXIT_PATIENCE = 3  # … and freeze a sample whose tokens held for this many checks


def _sample(backend, tokenizer, state, config: GenerationConfig, row_keep: list[int], publish=None,
            bar: "_Progress | None" = None):
    """Run the loop → (state, trace, steps run). With ``trace_steps``, stop after each requested step
    count and decode x̂0 (one text per row; handed to ``publish`` at once when given); with
    ``early_exit``, stop once every row has settled; with ``bar``, report progress between chunks."""
    if config.early_exit:
        state, steps_run = _sample_early_exit(backend, state, bar)
        return state, None, steps_run
    K = len(state.table)
    trace, done = [], 0
    for stop in sorted(set(config.trace_steps) | set(_chunk_stops(K, bar))):
        state = run(backend, state, done, stop)
        if bar:
            bar.reach(backend, done, stop)
        done = stop
        if stop not in config.trace_steps:
            continue
        ids = backend.decode_ids(state.x0_hat, state.memory)
        trace.append({"step": stop, "timestep": int(state.table.timesteps[stop - 1]),
                      "rows": [tokenizer.decode(row[:cut]) for row, cut in zip(ids.cpu().tolist(), row_keep)]})
        if publish is not None:
            publish(trace[-1])
    return state, (trace if config.trace_steps else None), K


def _sample_early_exit(backend, state, bar: "_Progress | None" = None):
    """DESIGN §3: every K/EARLY_EXIT_CHECKS steps decode x̂0; a sample whose tokens were unchanged for
    EARLY_EXIT_PATIENCE checks is frozen (its x̂0 becomes its result, by a masked where); the loop
    stops when all are. One host sync per check, none inside the chunks."""
    K = len(state.table)
    every = -(-K // EARLY_EXIT_CHECKS)  # ceil: at most EARLY_EXIT_CHECKS checks
    frozen = torch.zeros(state.x_t.shape[0], dtype=torch.bool, device=state.x_t.device)
    stable = torch.zeros_like(frozen, dtype=torch.int64)
    result, last, done = state.x_t, None, 0
    while done < K:
        stop = min(done + every, K)
        state = run(backend, state, done, stop)
        if bar:
            bar.reach(backend, done, stop)
        done = stop
        if done == K:
            break
        ids = backend.decode_ids(state.x0_hat, state.memory)
        if last is not None:
            stable = torch.where((ids == last).all(dim=1), stable + 1, 0)
        last = ids
        settle = (stable >= EARLY_EXIT_PATIENCE) & ~frozen
        result = torch.where(settle[:, None, None], state.x0_hat, result)
        frozen = frozen | settle
        if bool(frozen.all()):
            break
    return replace(state, x_t=torch.where(frozen[:, None, None], result, state.x_t)), done


def _rank(tokenizer, ids: torch.Tensor, logp: torch.Tensor, n_prompts: int, k: int):
    """Score = mean log-prob up to and including the first </s>; dedupe; best first (ties: sample order)."""
    texts, scores, samples, lengths = [], [], [], []
    for p in range(n_prompts):
        best: dict[str, float] = {}
        samples.append([])
        lengths.append([])
        for row in range(p * k, (p + 1) * k):
            row_ids = ids[row].tolist()
            content = tokenizer.content_length(row_ids)
            score = float(logp[row, :min(content + 1, len(row_ids))].mean())
            text = tokenizer.decode(row_ids)
            samples[-1].append(text)
            lengths[-1].append(content)
            if text not in best or score > best[text]:
                best[text] = score
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        texts.append([t for t, _ in ranked])
        scores.append([round(s, 6) for _, s in ranked])
    return texts, scores, samples, lengths
