"""``codefusion eval``: generate for every row of a JSONL split, score, aggregate with 95% intervals.

    rows → batches of prompts (k samples each) → CodeFusion.generate → per-row metrics → corpus
    figures, each with its bootstrap interval and the number of rows it rests on.

Works with any backend the CodeFusion object was built with. Rates are fractions in [0, 1];
BLEU is on sacrebleu's 0–100 scale.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import LANGS, GenerationConfig, clamp_mode
from ..errors import DataError
from ..validate import check_config
from . import metrics as M


@dataclass
class EvalResult:
    n: int
    metrics: dict[str, float]
    ci95: dict[str, list[float]]
    counts: dict[str, int]  # rows behind each figure
    config: dict
    not_computed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # one per example: what --predictions writes
    scored: list[dict] = field(default_factory=list, repr=False)  # per-row values incl. BLEU stats (paired tests)

    def to_json(self) -> dict:
        return {"n": self.n, "metrics": self.metrics, "ci95": self.ci95, "counts": self.counts, **self.config,
                "not_computed": self.not_computed, "notes": self.notes}


def report_ks(num_samples: int) -> list[int]:
    """top-1, and top-3 / top-5 / top-k where k samples allow them."""
    return sorted({1, *[k for k in (3, 5) if k <= num_samples], num_samples})


def check_rows(rows: list[dict], lang: str) -> None:
    if lang not in LANGS:
        raise DataError(f"--lang must be one of {', '.join(LANGS)}, got {lang!r}")
    if not rows:
        raise DataError("the evaluation file has no rows")
    missing = next((i for i, r in enumerate(rows) if not isinstance(r.get("code"), str)), None)
    if missing is not None:
        raise DataError(f"row {missing + 1} has no string 'code' to compare against")
    if lang == "cf":  # a malformed table would fail the interpreter after the whole generation
        bad = next((i for i, r in enumerate(rows) if not _table_ok(r.get("data"), r.get("labels"))), None)
        if bad is not None:
            raise DataError(f"row {bad + 1}: 'data' must be a list of rows (lists, the header first) and 'labels' a "
                            "list of 0/1 integers, or both left out")


def _table_ok(data, labels) -> bool:
    if data is None and labels is None:
        return True
    return (isinstance(data, list) and all(isinstance(r, list) for r in data) and isinstance(labels, list)
            and all(type(x) is int and x in (0, 1) for x in labels))


def generate_all(cf, rows: list[dict], config: GenerationConfig, batch_size: int, progress: bool | None = True,
                 on_output=None):
    """(top-k distinct programs best first, all k samples) per row, in batches of ≤ batch_size sequences.
    Without a max_length, rows are batched by the length bucket the model predicts for each, so a
    batch runs at its own bucket rather than at the longest one of a mixed batch. ``on_output(rows,
    output)``, if given, sees each batch's row indices and whole GenerationOutput (its trace, say). ``progress``:
    a bar on stderr; None shows it when stderr is a terminal."""
    per_batch = max(1, batch_size // config.num_samples)
    prompts = [r["nl"] for r in rows]
    if config.max_length:
        buckets = [0] * len(rows)
    else:
        buckets = [b for i in range(0, len(rows), 256) for b in cf.length_buckets(prompts[i:i + 256], config.lang)]
    order = sorted(range(len(rows)), key=lambda i: buckets[i])
    tops, samples = [None] * len(rows), [None] * len(rows)
    hidden = None if progress is None else not progress  # tqdm: None hides the bar when stderr is no terminal
    bar = tqdm(total=len(rows), desc=f"eval {config.lang}", unit="row", disable=hidden, dynamic_ncols=True)
    start = 0
    while start < len(order):
        chunk = [i for i in order[start:start + per_batch] if buckets[i] == buckets[order[start]]]
        out = cf.generate([prompts[i] for i in chunk], config)
        for i, top, smp in zip(chunk, out.texts, out.samples):
            tops[i], samples[i] = top, smp
        if on_output is not None:
            on_output(chunk, out)
        start += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return tops, samples


def bleu_by_k(ref: str, top: list[str], ks: list[int], bleu) -> dict:
    """bleu@k (sentence BLEU of the best of the first k candidates) and that candidate's statistics
    (``_bleu_stats@k``), which corpus BLEU and its paired bootstrap pool over rows."""
    stats = [M.bleu_stats(t, ref, bleu) for t in top]
    sent = [M.sentence_bleu(s) for s in stats]
    out: dict = {}
    for k in ks:
        best = int(np.argmax(sent[:k]))
        out[f"_bleu_stats@{k}"], out[f"bleu@{k}"] = stats[best], sent[best]
    return out


def score_row(row: dict, top: list[str], samples: list[str], lang: str, ks: list[int], bleu) -> dict:
    """Per-row metric values (booleans as 0/1) and the BLEU statistics of each k's best candidate."""
    ref = row["code"]
    out: dict = {"syntax_valid@1": float(M.syntax_valid(top[0], lang)), **bleu_by_k(ref, top, ks, bleu)}
    exec_ok = exec_flags(row, top) if lang == "cf" else None
    template = _template_flags(ref, top) if lang == "bash" else None
    for k in ks:
        out[f"exact_match@{k}"] = float(any(M.exact_match(t, ref, lang) for t in top[:k]))
        if template is not None:
            out[f"template_match@{k}"] = float(any(template[:k]))
        if exec_ok is not None:
            out[f"exec_match@{k}"] = float(any(exec_ok[:k]))
            if mixed_labels(row):
                out[f"exec_match_mixed@{k}"] = out[f"exec_match@{k}"]
        if k > 1:
            out[f"distinct_2@{k}"] = M.distinct_n(samples[:k], 2)
            out[f"distinct_4@{k}"] = M.distinct_n(samples[:k], 4)
            out[f"edit_distance@{k}"] = M.edit_distance(samples[:k])
    return out


def score_rows(rows: list[dict], tops: list[list[str]], samples: list[list[str]], lang: str,
               ks: list[int]) -> list[dict]:
    """``score_row`` for every row; for CF, rows the interpreter cannot run carry exec_match@k = None, so
    they count nowhere (and are reported)."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="13a")
    scored = [score_row(r, t, s, lang, ks, bleu) for r, t, s in zip(rows, tops, samples)]
    if lang == "cf":
        for s in scored:
            for k in ks:
                s.setdefault(f"exec_match@{k}", None)
    return scored


def _template_flags(ref: str, top: list[str]) -> list[bool]:
    from .bash import template_match
    return [template_match(t, ref) for t in top]


def mixed_labels(row: dict) -> bool:
    """Whether the row's data rows are labelled both 0 and 1: only there does a rule that ignores its table (every
    cell highlighted, or none) fail. On the CF dev split 26 of the 36 runnable rows are not mixed, so
    ``ColorScale()`` alone executes correctly on 19 of them (52.8%); exec_match_mixed counts the other 10."""
    return {0, 1} <= set(row["labels"][1:])


def exec_flags(row: dict, top: list[str]) -> list[bool] | None:
    """None when the row has no table, or the interpreter cannot reproduce its labels from the reference."""
    from . import cf
    data, labels = row.get("data"), row.get("labels")
    if data is None or labels is None or not cf.reference_executes(row["code"], data, labels):
        return None
    return [cf.exec_match(t, data, labels) for t in top]


def aggregate(scored: list[dict], resamples: int = 1000, seed: int = 0):
    """Corpus figure, 95% interval and row count for every metric present in the scored rows."""
    names = sorted({k for s in scored for k in s if not k.startswith("_")})
    metrics, ci, counts = {}, {}, {}
    for name in names:
        if name.startswith("bleu@"):
            stats = np.stack([s[f"_bleu_stats@{name[5:]}"] for s in scored])
            value, interval = M.corpus_bleu(stats), M.bootstrap_ci(stats, M.corpus_bleu, resamples, seed)
            n = len(stats)
        else:
            vals = np.array([s[name] for s in scored if s.get(name) is not None], dtype=np.float64)
            if not len(vals):
                continue
            value, interval, n = float(vals.mean()), M.bootstrap_ci(vals, None, resamples, seed), len(vals)
        metrics[name], ci[name], counts[name] = round(value, 6), [round(x, 6) for x in interval], n
    return metrics, ci, counts


def evaluate(cf, rows: list[dict], lang: str, config: GenerationConfig, batch_size: int = 64,
             progress: bool | None = True, codebert: str | None = None) -> EvalResult:
    check_rows(rows, lang)
    config = check_config(config, cf.cfg, cf.backend.name)  # before any generation: a bad flag fails in a second
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if codebert:
        from .codebert import _load
        _load(codebert)  # a wrong directory fails now, not after the whole run
    ks = report_ks(config.num_samples)
    tops, samples = generate_all(cf, rows, config, batch_size, progress)
    scored = score_rows(rows, tops, samples, lang, ks)
    not_computed, notes = {}, []
    if codebert:
        from .codebert import codebert_scores
        for s, f1 in zip(scored, codebert_scores(codebert, [t[0] for t in tops], [r["code"] for r in rows])):
            s["codebert_f1@1"] = f1
    else:
        not_computed["codebert_f1@1"] = "no --codebert DIR given (a local CodeBERT model; nothing is downloaded)"
    metrics, ci, counts = aggregate(scored)
    if lang == "cf":
        runnable = counts.get("exec_match@1", 0)
        with_table = sum(1 for r in rows if r.get("data") is not None and r.get("labels") is not None)
        notes.append(f"exec_match: the interpreter reproduces the labels of {runnable} of {with_table} rows with a "
                     f"table ({len(rows)} rows in all); the others are left out of exec_match")
        notes.append(constant_rule_baseline([r for r, s in zip(rows, scored) if s.get("exec_match@1") is not None]))
    config_json = {"lang": lang, "steps": config.steps, "solver": config.solver, "num_samples": config.num_samples,
                   "seed": config.seed, "max_length": config.max_length, "clamp": clamp_mode(cf.resolve(config).clamp)}
    return EvalResult(len(rows), metrics, ci, counts, config_json, not_computed, notes,
                      prediction_rows(rows, tops, samples, scored), scored)


def constant_rule_baseline(runnable: list[dict]) -> str:
    """What exec_match gives a rule that ignores its table, on the rows exec_match counts."""
    every = sum(all(x == 1 for x in r["labels"][1:]) for r in runnable)
    none = sum(all(x == 0 for x in r["labels"][1:]) for r in runnable)
    mixed = sum(mixed_labels(r) for r in runnable)
    share = lambda c: f"{c} ({100 * c / max(len(runnable), 1):.1f}%)"  # noqa: E731
    return (f"exec_match baseline: a rule that ignores its table matches {share(max(every, none))} of those rows "
            f"(every cell highlighted, e.g. ColorScale(): {share(every)}; none: {share(none)}; rows without data "
            f"rows count for both); exec_match_mixed counts only the {mixed} rows whose labels mix 0 and 1")


def prediction_rows(rows: list[dict], tops: list[list[str]], samples: list[list[str]],
                    scored: list[dict]) -> list[dict]:
    """One ``--predictions`` row per example: id, request, reference, the generations best first, the samples and
    the row's metric values (what ``codefusion bench compare`` reads)."""
    return [{"id": r.get("id", str(i)), "nl": r["nl"], "reference": r["code"], "generations": t, "samples": smp,
             "metrics": {k: v for k, v in s.items() if not k.startswith("_")}}
            for i, (r, t, smp, s) in enumerate(zip(rows, tops, samples, scored))]


def write_predictions(path: str | Path, per_row: list[dict]) -> None:
    """Written whole or not at all (a temporary file renamed onto ``path``): a full disk leaves no cut file."""
    from ..checkpoint import replace_atomically

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in per_row)
    replace_atomically(Path(path), write)


def format_report(result: EvalResult, title: str) -> str:
    """The human-readable table: value, 95% interval and n per metric (rates in %)."""
    lines = [title, f"{'metric':<20}{'value':>9}  {'95% CI':<18}{'n':>6}"]
    for name, value in result.metrics.items():
        scale = 1.0 if name.startswith("bleu@") else 100.0
        lo, hi = result.ci95[name]
        unit = "" if name.startswith("bleu@") else "%"
        lines.append(f"{name:<20}{value * scale:>8.1f}{unit or ' '}  [{lo * scale:5.1f}, {hi * scale:5.1f}]{'':<5}"
                     f"{result.counts[name]:>6}")
    lines += [f"{name}: not computed — {why}" for name, why in result.not_computed.items()]
    lines += result.notes
    return "\n".join(lines)
