"""Sequence-level knowledge distillation from the seq2seq teacher (``python -m codefusion.train.seq2seq RUN --data
DIR --distill OUT``): a copy of a data folder whose train programs are the teacher's greedy ones, each checked
before it replaces the row's own."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import DataError
from .data import DATASET_LANG, read_jsonl, select_datasets
from .seq2seq import Seq2SeqTask


def _kept_or_why(text: str, finished: bool, row: dict, lang: str, checked: bool = True) -> str:
    """"teacher" when the teacher's program replaces the row's own, else why not: "unfinished" (empty,
    or cut off at the target length: typically a loop repeating a token), "invalid" (does not parse),
    "wrong" (CF: runs on the row's table but gives other labels than the reference, which gives them).
    Unless ``checked``, only unfinished programs are refused (the distillation of the shipped lineage)."""
    from ..eval.evaluate import exec_flags
    from ..eval.metrics import syntax_valid

    if not text or not finished:
        return "unfinished"
    if not checked:
        return "teacher"
    if not syntax_valid(text, lang):
        return "invalid"
    if lang == "cf" and exec_flags(row, [text]) == [False]:  # None: no table, or the reference cannot run on it
        return "wrong"
    return "teacher"


def distill(task: Seq2SeqTask, tok, data_dir: str | Path, out_dir: str | Path,
            checked: bool = True, only: str | None = None, drop: bool = False) -> dict[str, dict[str, int]]:
    """Sequence-level knowledge distillation (Kim & Rush 2016): a copy of ``data_dir`` whose train rows
    carry the seq2seq model's greedy program as ``code`` (the original kept as ``code_ref``), for the
    denoiser to learn one program per request instead of averaging several at high noise. Dev and
    pre-training splits are copied unchanged. A row keeps its own program where the teacher's is no
    better a target (``_kept_or_why``): unfinished, not parsing, or, on a CF row with a table, computing
    other labels; the student would otherwise learn the teacher's mistakes (``checked=False`` refuses only
    unfinished programs, as the shipped lineage's phase 11 did). ``only`` (comma-separated dataset names)
    distils those datasets and copies the others' train rows unchanged (counted as "not_asked"): where the
    teacher is no better than the data, e.g. CF, whose teacher writes a few programs for every request.
    ``drop`` leaves the refused rows out instead of keeping their own programs, so every target is one the
    teacher wrote: a mix of the teacher's programs and the data's own gives the denoiser two modes for
    similar requests again, which is what distillation removes.
    The copy is written whole or not at all: datasets go into a hidden sibling folder first.
    Returns, per dataset, the rows read and written and how many took the teacher's program or kept their
    own (or were dropped), and why."""
    data_dir, names = select_datasets(data_dir, None)
    asked = set(select_datasets(data_dir, only)[1])  # an unknown name fails before any writing
    if asked - set(names):
        raise DataError(f"--only names {', '.join(sorted(asked - set(names)))}, which {data_dir} does not hold")
    written = {}
    final = Path(out_dir)
    building = final.with_name(f".{final.name}.partial")  # renamed onto out_dir once whole (a long job)
    shutil.rmtree(building, ignore_errors=True)  # what an interrupted run of this left
    for name in names:
        src, dst, lang = data_dir / name, building / name, DATASET_LANG[name]
        rows = read_jsonl(src / "train.jsonl")
        if name in asked:  # (why, the teacher's program) per row
            written_by = task.write_finished(tok, [r["nl"] for r in rows], [lang] * len(rows))
            decided = [(_kept_or_why(text, done, r, lang, checked), text) for r, (text, done) in zip(rows, written_by)]
        else:
            decided = [("not_asked", "")] * len(rows)
        counts = {"rows": len(rows), **dict.fromkeys(("teacher", "unfinished", "invalid", "wrong", "not_asked"), 0),
                  "written": 0}
        dst.mkdir(parents=True, exist_ok=True)
        with open(dst / "train.jsonl", "w", encoding="utf-8") as f:
            for r, (why, text) in zip(rows, decided):
                counts[why] += 1
                if drop and why not in ("teacher", "not_asked"):
                    continue
                counts["written"] += 1
                f.write(json.dumps({**r, "code": text if why == "teacher" else r["code"], "code_ref": r["code"]})
                        + "\n")
        for split in ("dev", "pretrain"):
            if (src / f"{split}.jsonl").is_file():
                shutil.copyfile(src / f"{split}.jsonl", dst / f"{split}.jsonl")
        written[name] = counts
    final.mkdir(parents=True, exist_ok=True)
    for part in building.iterdir():
        part.rename(final / part.name)
    building.rmdir()
    return written
