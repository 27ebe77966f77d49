"""Training data: ``<data>/<dataset>/{train,dev,pretrain}.jsonl`` (the layout of ../shared/data).

Each line is a JSON object with at least ``code`` (and ``nl`` for supervised splits). The loader
knows each dataset's language. A malformed line is reported as ``file:line: what is wrong`` and
either stops the run (default) or is skipped with a warning, as the user asks (--on-bad-line).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import LANGS
from ..errors import CodeFusionError, DataError
from ..tokenizer import check_split_brackets

DATASET_LANG = {"nl2bash": "bash", "conala": "python", "cf": "cf"}


@dataclass(frozen=True)
class Example:
    id: str
    nl: str
    code: str
    lang: str


def read_jsonl(path: Path, on_bad_line: str = "stop", need_nl: bool = True) -> list[dict]:
    """Rows of a JSONL file; blank lines are ignored, bad lines stop or are skipped (with a warning)."""
    if on_bad_line not in ("stop", "skip"):
        raise DataError(f"--on-bad-line must be skip or stop, got {on_bad_line!r}")
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row, problem = _parse(raw, need_nl)
            if problem is None:
                rows.append(row)
                continue
            message = f"{path}:{lineno}: {problem}"
            if on_bad_line == "stop":
                raise DataError(f"{message}; fix the line or pass --on-bad-line skip")
            print(f"warning: skipped {message}", file=sys.stderr)
    return rows


def _parse(raw: bytes, need_nl: bool) -> tuple[dict | None, str | None]:
    """→ (row, None) or (None, what is wrong with the line)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 (byte {e.start + 1})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    for key in ("nl", "code") if need_nl else ("code",):
        if not isinstance(row.get(key), str) or not row[key].strip():
            return None, f"field {key!r} is missing or not a non-empty string"
    if not need_nl and row.get("nl") is not None and not isinstance(row["nl"], str):  # optional, but text if given
        return None, "field 'nl' is not a string"
    for key in ("nl", "code"):  # JSON may escape a lone surrogate ("\ud800"), which no tokenizer can encode
        if isinstance(row.get(key), str) and not row[key].isascii():
            try:
                row[key].encode("utf-8")
            except UnicodeEncodeError as e:
                return None, f"field {key!r} holds an unpaired surrogate (character {e.start + 1})"
    return row, None


def select_datasets(data_dir: str | Path, datasets: str | None) -> tuple[Path, list[str]]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist: point --data at a folder laid out like "
                        "shared/data (<dataset>/{train,dev,pretrain}.jsonl)")
    names = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else \
        [d for d in DATASET_LANG if (data_dir / d).is_dir()]
    twice = sorted({d for d in names if names.count(d) > 1})
    if twice:
        raise DataError(f"--datasets names {twice[0]!r} twice: give each once (--repeat weights a dataset)")
    unknown = [d for d in names if d not in DATASET_LANG]
    if unknown:
        raise DataError(f"unknown dataset {unknown[0]!r}: choose from {', '.join(DATASET_LANG)}")
    if not names:
        raise DataError(f"{data_dir} holds none of the datasets {', '.join(DATASET_LANG)}")
    return data_dir, names


def load_split(data_dir: str | Path, datasets: str | None, split: str, on_bad_line: str = "stop") -> list[Example]:
    """All rows of ``split`` over the chosen datasets, each tagged with its language."""
    data_dir, names = select_datasets(data_dir, datasets)
    out = []
    for name in names:
        path = data_dir / name / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(f"{path} is missing: dataset {name} has no {split} split")
        rows = read_jsonl(path, on_bad_line, need_nl=split != "pretrain")
        if not rows:
            raise DataError(f"{path} holds no rows: fill it, or leave dataset {name} out with --datasets")
        out += [Example(str(r.get("id", f"{name}-{i}")), r.get("nl", "") or "", r["code"], DATASET_LANG[name])
                for i, r in enumerate(rows)]
    return out


def unique_programs(examples: list[Example]) -> tuple[list[Example], int]:
    """The first occurrence of each (language, program): the code-only corpora repeat lines many times
    (cf pre-training: 226k lines, 3.5k distinct), which would spend most of pre-training on a few
    thousand programs. Returns the kept rows and how many were dropped. Two rows are one program when their
    ``eval.metrics.normalize`` forms are equal (Python: its tokens; else whitespace outside quotes collapsed):
    whitespace that carries meaning (Python's indentation, inside quotes) keeps them apart."""
    from ..eval.metrics import normalize

    seen: set[tuple] = set()
    kept = []
    for e in examples:
        key = (e.lang, normalize(e.code, e.lang))
        if key not in seen:
            seen.add(key)
            kept.append(e)
    return kept, len(examples) - len(kept)


def tokenizer_texts(examples: list[Example]) -> list[str]:
    """What the BPE tokenizer trains on: every program and every non-empty utterance."""
    return [t for e in examples for t in (e.code, e.nl) if t]


def parse_repeat(spec: str | None) -> dict[str, int]:
    """--repeat "conala=2,cf=4" → {"python": 2, "cf": 4} (keyed by language, as Examples are)."""
    if not spec:
        return {}
    out: dict[str, int] = {}
    for part in spec.split(","):
        name, _, times = part.strip().partition("=")
        if name not in DATASET_LANG or not times.isdigit() or int(times) < 1:
            raise CodeFusionError(f"--repeat takes DATASET=TIMES pairs (datasets {', '.join(DATASET_LANG)}; "
                                  f"TIMES a whole number ≥ 1), e.g. conala=2,cf=4; got {part.strip()!r}")
        if DATASET_LANG[name] in out:
            raise CodeFusionError(f"--repeat names {name} twice ({spec!r}): give each dataset once")
        out[DATASET_LANG[name]] = int(times)
    return out


def repeat_rows(rows: list[Example], times: dict[str, int]) -> list[Example]:
    """Each language's rows, in their order, as ``times[lang]`` consecutive copies of the whole block: the
    same list as a data folder whose train file holds that many copies of itself."""
    blocks: dict[str, list[Example]] = {}
    for r in rows:
        blocks.setdefault(r.lang, []).append(r)
    return [r for lang, block in blocks.items() for _ in range(times.get(lang, 1)) for r in block]


def parse_split_brackets(spec: str) -> tuple[str, ...]:
    """--split-brackets "cf,python" → ("cf", "python"); "none" → ()."""
    langs = [] if spec.strip() == "none" else [part.strip() for part in spec.split(",")]
    try:
        return check_split_brackets(langs)
    except CodeFusionError:
        raise CodeFusionError(f"--split-brackets takes languages from {', '.join(LANGS)} (comma-separated) or none; "
                              f"got {spec!r}") from None


def balanced(rows: list[Example], n: int) -> list[Example]:
    """Up to n rows, taken in turn from each language, so the dev check covers all of them."""
    by_lang: dict[str, list[Example]] = {}
    for r in rows:
        by_lang.setdefault(r.lang, []).append(r)
    picked: list[Example] = []
    for i in range(max((len(q) for q in by_lang.values()), default=0)):
        picked += [q[i] for q in by_lang.values() if i < len(q)]
        if len(picked) >= n:
            break
    return picked[:n]
