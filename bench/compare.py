"""``codefusion bench compare BASE OTHER``: two ``codefusion eval --predictions`` files of the same rows, paired.

Two runs scored on the same rows (two checkpoints, two samplers, 1200 steps against 20) differ by less than
their separate intervals suggest, because most rows pass or fail in both. The paired bootstrap resamples rows,
the same rows for both runs, and gives the interval of the difference itself; an interval that excludes 0 is a
real change. For a 0/1 metric the table also counts the rows each run alone gets right (``gained``: OTHER only,
``lost``: BASE only). BLEU is compared as corpus BLEU, its n-gram statistics recomputed from the generations
with the statistics ``codefusion eval`` pools, so the BASE and OTHER columns equal the two runs' own figures.

Rows are matched by ``id`` and taken in BASE's order; the resamples depend only on that order and ``--seed``.
Each metric is compared on the rows where both runs have a value (``n``): CF execution only on the rows the
interpreter runs, the diversity metrics only where the samples are long enough. Where ``n`` is under the number of
rows, the two figures can differ from each run's own report, which averages over its own rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from codefusion.errors import CodeFusionError
from codefusion.eval import metrics as M
from codefusion.eval.evaluate import bleu_by_k

from .quality import paired

COLUMNS = ["metric", "n", "base", "other", "diff", "diff_ci95", "gained", "lost"]
PASS_FAIL = ("syntax_valid@", "exact_match@", "template_match@", "exec_match@", "exec_match_mixed@")  # 0/1 metrics
FIELDS = ("id", "reference", "generations", "metrics")


def read_predictions(path: str | Path) -> list[dict]:
    """The rows of one ``--predictions`` file; a clear error for a missing file, a broken line or a repeated id."""
    path = Path(path)
    if not path.is_file():
        raise CodeFusionError(f"{path} does not exist: pass files written by `codefusion eval --predictions FILE`")
    rows, seen = [], set()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CodeFusionError(f"{path} is not UTF-8 text (byte {e.start + 1}): pass a `codefusion eval --predictions` "
                              "file") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CodeFusionError(f"{path}:{n} is not JSON ({e.msg}): pass a `codefusion eval --predictions` "
                                  f"file") from None
        missing = [f for f in FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise CodeFusionError(f"{path}:{n} lacks {', '.join(missing)}: pass a `codefusion eval --predictions` "
                                  f"file")
        wrong = _malformed(row)
        if wrong:
            raise CodeFusionError(f"{path}:{n}: {wrong}: pass a `codefusion eval --predictions` file")
        if row["id"] in seen:
            raise CodeFusionError(f"{path}:{n} repeats id {row['id']!r}: each row of a predictions file needs its "
                                  f"own id")
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise CodeFusionError(f"{path} holds no rows")
    return rows


def _malformed(row: dict) -> str | None:
    """What is wrong with a row's fields, as eval writes them, or None."""
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
        return "'id' must be a string or an integer"
    generations = row["generations"]
    if not isinstance(generations, list) or not generations or not all(isinstance(g, str) for g in generations):
        return "'generations' must be a non-empty list of strings"
    metrics = row["metrics"]
    if not isinstance(metrics, dict) or not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in metrics.values()):
        return "'metrics' must map names to numbers (or null)"
    return None


def match(base: list[dict], other: list[dict], names: tuple[str, str]) -> list[dict]:
    """OTHER's rows in BASE's order; an error naming the first unmatched id when the two hold different rows."""
    by_id = {r["id"]: r for r in other}
    only_base = [r["id"] for r in base if r["id"] not in by_id]
    only_other = sorted(set(by_id) - {r["id"] for r in base}, key=str)
    if only_base or only_other:
        parts = [f"{len(ids)} only in {name} (first: {ids[0]!r})"
                 for ids, name in ((only_base, names[0]), (only_other, names[1])) if ids]
        raise CodeFusionError(f"the two files hold different rows: {'; '.join(parts)}. Compare predictions of the "
                              f"same --data, --limit and rows")
    for r in base:
        if by_id[r["id"]]["reference"] != r["reference"]:
            raise CodeFusionError(f"row {r['id']!r} has another reference in {names[1]} than in {names[0]}: "
                                  f"compare predictions of the same data file")
    return [by_id[r["id"]] for r in base]


def scored(rows: list[dict], names: list[str]) -> list[dict]:
    """Per-row values of ``names`` as ``quality.paired`` reads them: the stored metric values, and for bleu@k
    the statistics of the best of the first k generations (recomputed: the file keeps only sentence BLEU)."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="13a")
    ks = sorted(int(n[5:]) for n in names if n.startswith("bleu@"))
    out = []
    for r in rows:
        s = {n: r["metrics"].get(n) for n in names if not n.startswith("bleu@")}
        if ks:  # generations holds the distinct programs, so often fewer than k: eval scores the best of those
            s.update(bleu_by_k(r["reference"], r["generations"], ks, bleu))
        out.append(s)
    return out


def _value(rows: list[dict], name: str, idx: list[int]) -> float:
    if name.startswith("bleu@"):
        return M.corpus_bleu(np.stack([rows[i][f"_bleu_stats@{name[5:]}"] for i in idx]))
    return float(np.mean([rows[i][name] for i in idx]))


def compare(base: list[dict], other: list[dict], seed: int = 0, names: tuple[str, str] = ("BASE", "OTHER")
            ) -> list[dict]:
    """One row per metric present in both files: n (rows where both runs have a value), both runs' figures on
    those rows, the paired difference OTHER − BASE with its 95% bootstrap interval, and for 0/1 metrics the rows
    won and lost."""
    other = match(base, other, names)
    metric_names = sorted(set.intersection(*({k for r in rows for k in r["metrics"]} for rows in (base, other))))
    a, b = scored(base, metric_names), scored(other, metric_names)
    table = []
    for name in metric_names:
        idx = [i for i in range(len(a)) if a[i].get(name) is not None and b[i].get(name) is not None]
        if not idx:
            continue
        diff, ci = paired(a, b, name, seed)
        row = {"metric": name, "n": len(idx), "base": round(_value(a, name, idx), 6),
               "other": round(_value(b, name, idx), 6), "diff": diff, "diff_ci95": ci}
        if name.startswith(PASS_FAIL):
            row["gained"] = sum(1 for i in idx if b[i][name] > a[i][name])
            row["lost"] = sum(1 for i in idx if b[i][name] < a[i][name])
        table.append(row)
    return table
