"""``codefusion bench trajectory``: where along the sampling loop the programs form, and where they break.

The loop is stopped at chosen step counts (``trace_steps``) and the model's x̂0 there is decoded and
scored like a final output, on the same dev rows and seeds, so each point of the curve is "what the model
would answer if the loop ended here". A model whose x̂0 parses at step 300 and no longer at step 600 is
broken in the middle of the noise range, whatever its loss or its 20-step dev check says (session 13's
students: CF programs lose their closing parenthesis between t = 900 and t = 700). With a second model
(``--baseline-model``), both run on the same rows and seeds.
"""
from __future__ import annotations

import math

from tqdm import tqdm

from codefusion.config import GenerationConfig
from codefusion.eval.evaluate import aggregate, generate_all, score_rows

from .quality import headline, plot_headline, row_counts


def stops(steps: int, count: int) -> list[int]:
    """``count`` step counts from 1 to ``steps``, denser near both ends (where the loop changes most)."""
    if count < 2:
        return [steps]
    marks = {1 + round((steps - 1) * (1 - math.cos(math.pi * k / (count - 1))) / 2) for k in range(count)}
    return sorted(marks)


def trajectory(models: list[tuple[str, object]], rows: list[dict], lang: str, steps: int, at: list[int], seed: int,
               batch_size: int, progress: bool = True) -> list[dict]:
    """One row per (model, stop): the step, its timestep and the eval metrics of the decoded x̂0, with
    95% intervals of the headline metrics."""
    config = GenerationConfig(lang=lang, steps=steps, seed=seed, trace_steps=at, clamp="none")  # the reference loop
    out = []
    for label, cf in models:
        texts: dict[int, list] = {}
        timestep: dict[int, int] = {}

        def keep(chunk, output):
            for entry in output.trace:
                column = texts.setdefault(entry["step"], [None] * len(rows))
                timestep[entry["step"]] = entry["timestep"]
                for i, per_sample in zip(chunk, entry["texts"]):
                    column[i] = per_sample[:1]

        generate_all(cf, rows, config, batch_size, progress, on_output=keep)
        for step in tqdm(sorted(texts), desc=f"score {label}", disable=not progress):
            metrics, ci, counts = aggregate(score_rows(rows, texts[step], texts[step], lang, [1]))
            row = {"model": label, "step": step, "timestep": timestep[step], "n": len(rows), **metrics,
                   **row_counts(counts, len(rows))}
            row.update({f"ci95_{name}": ci[name] for name in headline(lang) if name in ci})
            out.append(row)
    return out


def plot_trajectory(rows: list[dict], lang: str, path) -> object | None:
    """Headline metrics of x̂0 against the step count, one line per model."""
    def lines(name):
        for model in dict.fromkeys(r["model"] for r in rows):
            yield model, [(r["step"], r[name]) for r in rows if r["model"] == model and r.get(name) is not None]
    return plot_headline(lang, lines, "step of the loop (x̂0 decoded there)", path, legend_size=7)
