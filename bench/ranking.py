"""``codefusion bench ranking PRED --lang L``: what ranking k samples buys over one sample, from one eval file.

``codefusion eval --num-samples K --predictions PRED`` keeps every row's K samples in sample order (``samples``)
and the distinct programs ranked by the decoder's mean log-probability (``generations``, best first). Sample j of
a row is the program a one-sample run would write with noise stream j, so the K samples hold K one-sample runs
of the same rows, and the ranked top-1 can be paired against them without running anything again:

- ``one_sample``: the mean over the K samples, what one sample scores on these rows (``per_sample``: each j);
- ``ranked``: the top-1 of the K samples, as ``codefusion eval`` reports it;
- ``diff``: ranked − one_sample, paired by row (each row's ranked value minus the mean of its K samples), with a
  95% bootstrap interval over rows;
- ``any_of_k``: the share of rows with at least one of the K samples right, what a perfect ranker would reach.

Only metrics that need nothing but the program and the reference are recomputed: syntax validity and exact match
(every language), template match (Bash). The ranked top-1 must reproduce the file's own ``@1`` values, which
catches a ``--lang`` other than the one the file was scored with.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from codefusion.config import LANGS
from codefusion.errors import CodeFusionError
from codefusion.eval import metrics as M
from codefusion.eval.bash import template_match

from .quality import paired

COLUMNS = ["metric", "n", "k", "one_sample", "per_sample", "ranked", "diff", "diff_ci95", "any_of_k"]


def _metrics(lang: str) -> dict[str, Callable[[str, str], bool]]:
    """name -> f(program, reference)."""
    out = {"syntax_valid": lambda code, _ref: M.syntax_valid(code, lang),
           "exact_match": lambda code, ref: M.exact_match(code, ref, lang)}
    if lang == "bash":
        out["template_match"] = template_match
    return out


def sample_count(rows: list[dict], source: str) -> int:
    """K, the same on every row and at least 2; a one-line error otherwise."""
    counts = {}
    for r in rows:
        samples = r.get("samples")
        if not isinstance(samples, list) or not samples:
            raise CodeFusionError(f"{source}: row {r['id']!r} has no samples: pass a file written by "
                                  f"`codefusion eval --num-samples K --predictions FILE`")
        counts.setdefault(len(samples), r["id"])
    if len(counts) > 1:
        (k1, id1), (k2, id2) = sorted(counts.items())[:2]
        raise CodeFusionError(f"{source}: rows hold different numbers of samples ({k1} at row {id1!r}, {k2} at row "
                              f"{id2!r}): pass the predictions of one eval run")
    k = next(iter(counts))
    if k < 2:
        raise CodeFusionError(f"{source} holds one sample per row, so there is nothing to rank: run "
                              f"`codefusion eval --num-samples K` with K >= 2")
    return k


def ranking(rows: list[dict], lang: str, seed: int = 0, source: str = "PRED") -> list[dict]:
    """One table row per recomputable metric at @1 (see the module docstring)."""
    if lang not in LANGS:
        raise CodeFusionError(f"--lang {lang!r} is not one of {', '.join(LANGS)}")
    k = sample_count(rows, source)
    table = []
    for name, fn in _metrics(lang).items():
        key = f"{name}@1"
        per = np.array([[fn(s, r["reference"]) for s in r["samples"]] for r in rows], dtype=np.float64)  # (n, k)
        top = np.array([fn(r["generations"][0], r["reference"]) if r["generations"] else False for r in rows],
                       dtype=np.float64)
        for r, value in zip(rows, top):
            stored = r["metrics"].get(key)
            if stored is not None and float(stored) != value:
                raise CodeFusionError(f"{source}: row {r['id']!r} has {key} = {stored} in the file and {value} "
                                      f"recomputed with --lang {lang}: pass the --lang the file was scored with")
        diff, ci = paired([{key: v} for v in per.mean(axis=1)], [{key: v} for v in top], key, seed)
        table.append({"metric": key, "n": len(rows), "k": k, "one_sample": round(float(per.mean()), 6),
                      "per_sample": [round(float(v), 6) for v in per.mean(axis=0)],
                      "ranked": round(float(top.mean()), 6), "diff": diff, "diff_ci95": ci,
                      "any_of_k": round(float(per.max(axis=1).mean()), 6)})
    return table
