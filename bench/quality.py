"""``codefusion bench quality``: what step skipping, solvers, early exit and length buckets cost in
quality, against the 1200-step ancestral sampler, on the same rows and seeds (paired).

Every configuration is scored by the eval module (engine/eval) on the same dev rows with the same
seed, so the noise of x_T is identical across configurations and a row-level difference is the
configuration's effect alone. For each metric the table gives the value and the paired difference
to the baseline with its 95% percentile-bootstrap interval (rows resampled jointly; BLEU as a
corpus statistic of the resampled rows). An interval that excludes 0 is a real change.
"""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from codefusion.config import GenerationConfig
from codefusion.eval import metrics as M
from codefusion.eval.evaluate import evaluate

BASELINE = ("ddpm", 1200)
RESAMPLES = 1000


def configurations(steps: list[int], solvers: list[str], early_exit: bool, full_length: bool, max_len: int,
                   clamps: tuple[str, ...] = ("none",), quantiles: tuple[float, ...] = (),
                   baseline_model: bool = False):
    """(label fields, GenerationConfig overrides) in run order; the baseline (unclamped ancestral) first. An
    override ``length_quantile`` is not a config field: it sets ``cf.length_quantile`` for that run. With
    ``baseline_model`` the baseline runs on another checkpoint, so this model runs its configuration too."""
    top = max(steps)
    base = ({"solver": "ddpm", "steps": top, "clamp": "none"}, {"solver": "ddpm", "steps": top})
    out = [({**base[0], "variant": "baseline_model" if baseline_model else "baseline"}, base[1])]
    if baseline_model:  # this model on the baseline's own sampler, whatever --solver and --clamp list
        out.append(({**base[0], "variant": ""}, base[1]))
    for solver in solvers:
        for clamp in clamps:
            for s in sorted(steps, reverse=True):
                if (solver, s, clamp) != ("ddpm", top, "none"):
                    out.append(({"solver": solver, "steps": s, "clamp": clamp, "variant": ""},
                                {"solver": solver, "steps": s, "clamp": clamp}))
        if early_exit:
            out.append(({"solver": solver, "steps": top, "clamp": "none", "variant": "early_exit"},
                        {"solver": solver, "steps": top, "early_exit": True}))
    if full_length:  # every request at the model's longest bucket instead of the predicted one
        out.append(({"solver": "ddpm", "steps": top, "clamp": "none", "variant": f"length={max_len}"},
                    {"solver": "ddpm", "steps": top, "max_length": max_len}))
    for q in quantiles:  # every request at the bucket of another quantile of the length head
        out.append(({"solver": "ddpm", "steps": top, "clamp": "none", "variant": f"length_quantile={q}"},
                    {"solver": "ddpm", "steps": top, "length_quantile": q}))
    # every run takes the clamp its label names: a config left without one would run the model's default
    return [(label, {**overrides, "clamp": label["clamp"]}) for label, overrides in out]


def paired(base: list[dict], other: list[dict], name: str, seed: int = 0) -> tuple[float, list[float]] | None:
    """(difference of means or of corpus BLEU, 95% interval) over rows that have ``name`` in both runs."""
    idx = [i for i, (a, b) in enumerate(zip(base, other)) if a.get(name) is not None and b.get(name) is not None]
    if not idx:
        return None
    draws = np.random.default_rng(seed).integers(0, len(idx), size=(RESAMPLES, len(idx)))
    if name.startswith("bleu@"):
        key = f"_bleu_stats@{name[5:]}"
        a = np.stack([base[i][key] for i in idx])
        b = np.stack([other[i][key] for i in idx])
        diff = M.corpus_bleu(b) - M.corpus_bleu(a)
        boot = np.array([M.corpus_bleu(b[d]) - M.corpus_bleu(a[d]) for d in draws])
    else:
        d = np.array([other[i][name] - base[i][name] for i in idx], dtype=np.float64)
        diff, boot = float(d.mean()), d[draws].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return round(float(diff), 6), [round(float(lo), 6), round(float(hi), 6)]


def quality(cf, rows: list[dict], lang: str, steps: list[int], solvers: list[str], seed: int, num_samples: int,
            batch_size: int, early_exit: bool, full_length: bool, progress: bool = True,
            clamps: tuple[str, ...] = ("none",), quantiles: tuple[float, ...] = (), baseline_cf=None) -> list[dict]:
    """One row per configuration, each paired against the first (the baseline); ``baseline_cf``, another
    loaded model, runs the baseline instead: two checkpoints compared on the same rows, seeds and sampler."""
    out, base, default_quantile = [], None, cf.length_quantile
    configs = configurations(steps, solvers, early_exit, full_length, cf.cfg.max_target_len, clamps, quantiles,
                             baseline_cf is not None)
    for k, (label, overrides) in enumerate(tqdm(configs, desc="quality", disable=not progress)):
        overrides = dict(overrides)
        model = baseline_cf if k == 0 and baseline_cf is not None else cf
        cf.length_quantile = overrides.pop("length_quantile", default_quantile)
        config = GenerationConfig(lang=lang, seed=seed, num_samples=num_samples, **overrides)
        t0 = time.perf_counter()
        try:
            result = evaluate(model, rows, lang, config, batch_size, progress=False)
        finally:
            cf.length_quantile = default_quantile
        seconds = time.perf_counter() - t0
        row = {**label, "n": result.n, "ms_per_row": round(seconds * 1e3 / result.n, 1), **result.metrics,
               **row_counts(result.counts, result.n)}
        if base is None:
            base = result
        else:
            for name in result.metrics:
                d = paired(base.scored, result.scored, name, seed)
                if d is not None:
                    row[f"diff_{name}"], row[f"diff_ci95_{name}"] = d
        out.append(row)
    return out


def row_counts(counts: dict[str, int], n: int) -> dict[str, int]:
    """``n_<metric>`` for each metric computed on fewer rows than the table's n (CF exec_match: the rows the
    interpreter can run)."""
    return {f"n_{name}": c for name, c in counts.items() if c != n}


def headline(lang: str) -> list[str]:
    """The metrics the Markdown table and the plot show for a language."""
    return {"bash": ["syntax_valid@1", "template_match@1", "bleu@1"], "python": ["syntax_valid@1", "bleu@1"],
            "cf": ["syntax_valid@1", "exec_match@1", "bleu@1"]}[lang]


def plot_quality(rows: list[dict], lang: str, path) -> object | None:
    """Quality vs steps, one line per solver (and rounding), one panel per headline metric (log steps)."""
    def lines(name):
        for solver, clamp in sorted({(r["solver"], r.get("clamp", "none")) for r in rows}):
            pts = sorted((r["steps"], r.get(name)) for r in rows
                         if (r["solver"], r.get("clamp", "none")) == (solver, clamp)
                         and r["variant"] in ("", "baseline") and r.get(name) is not None)
            yield solver if clamp == "none" else f"{solver}, clamp={clamp}", pts
    return plot_headline(lang, lines, "steps", path, log_x=True)


def plot_headline(lang: str, lines, xlabel: str, path, log_x: bool = False, legend_size=None) -> object | None:
    """One panel per headline metric of ``lang``; ``lines(name)`` yields (label, [(x, y), …]) for each line
    of that panel (an empty list draws nothing). None where matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = headline(lang)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, pts in lines(name):
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
