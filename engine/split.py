"""A request whose prompts fall in several length buckets, split into one part per bucket and joined back.

Each prompt runs at the bucket the length head gives it (or the request's max_length), whatever else it is
batched with, so its answer equals ``generate`` of that prompt alone. ``CodeFusion.generate_many`` runs the
parts like requests of their own; ``join`` and ``TraceJoin`` put each request's answer and streamed trace back
in prompt order.
"""
from __future__ import annotations

from dataclasses import replace


def split_by_length(reqs, first: list[int], lengths, cfg):
    """→ (parts, index, owner, keep), one entry per part: (its prompts, the request's config); its prompts as
    indices into the call's encoded batch; (its request, the request's prompt indices it holds); the tokens
    its rows keep (the request's max_length, else the bucket; ``lengths`` None: the model's maximum)."""
    parts, index, owner, keep = [], [], [], []
    for r, (ps, c) in enumerate(reqs):
        by_length: dict[int, list[int]] = {}
        for j in range(len(ps)):
            n = c.max_length or (cfg.max_target_len if lengths is None else cfg.bucket_for(int(lengths[first[r] + j])))
            by_length.setdefault(n, []).append(j)
        for n, js in by_length.items():
            parts.append(([ps[j] for j in js], c))
            index.append([first[r] + j for j in js])
            owner.append((r, js))
            keep.append(n)
    return parts, index, owner, keep


def join(parts: list, n_prompts: int, one_loop: bool):
    """One request's GenerationOutput from its parts (``parts``: (the request's prompt indices, that part's
    output)), per-prompt lists back in prompt order. Timings: the longest length, the most steps and rows;
    sampling and decoding times of loops run one after another add up (``one_loop``: one shared loop, whose
    times every part reports)."""
    if len(parts) == 1:
        return parts[0][1]

    def place(lists):
        out = [None] * n_prompts
        for (js, _), values in zip(parts, lists):
            for j, v in zip(js, values):
                out[j] = v
        return out
    outs = [o for _, o in parts]
    timings = {"steps": max(o.timings["steps"] for o in outs), "length": max(o.timings["length"] for o in outs),
               "batch_rows": max(o.timings["batch_rows"] for o in outs)}
    for key in ("sample_ms", "decode_ms"):
        values = [o.timings[key] for o in outs]
        timings[key] = round(max(values) if one_loop else sum(values), 3)
    trace = None
    if outs[0].trace is not None:
        trace = [{**entries[0], "texts": place([e["texts"] for e in entries])}
                 for entries in zip(*(o.trace for o in outs))]
    return replace(outs[0], texts=place([o.texts for o in outs]), scores=place([o.scores for o in outs]),
                   timings={k: timings[k] for k in outs[0].timings}, warnings=[], trace=trace,
                   samples=place([o.samples for o in outs]),
                   sample_lengths=None if outs[0].sample_lengths is None else place([o.sample_lengths for o in outs]))


class TraceJoin:
    """Streaming (``on_trace``) for requests split into parts: a part's trace entry is held until every part
    of its request has reached that step, then the request's entry goes out whole, prompts in order."""

    def __init__(self, on_trace, owner: list[tuple[int, list[int]]], n_prompts: list[int]):
        self.on_trace, self.owner, self.n_prompts = on_trace, owner, n_prompts
        self.parts = [sum(o[0] == r for o in owner) for r in range(len(n_prompts))]
        self.pending: dict[tuple[int, int], list] = {}

    def __call__(self, q: int, entry: dict) -> None:
        r, js = self.owner[q]
        if self.parts[r] == 1:
            self.on_trace(r, entry)
            return
        held = self.pending.setdefault((r, entry["step"]), [])
        held.append((js, entry))
        if len(held) == self.parts[r]:
            texts = [None] * self.n_prompts[r]
            for part_js, part in held:
                for j, t in zip(part_js, part["texts"]):
                    texts[j] = t
            del self.pending[(r, entry["step"])]
            self.on_trace(r, {**entry, "texts": texts})
