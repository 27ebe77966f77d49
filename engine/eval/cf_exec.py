"""Evaluation of a parsed CF rule (:class:`codefusion.eval.cf.Node`) on a table.

The formatted range is the ``Value`` column (column 1 if no header says ``Value``); the
result has one label per row of ``data``: 0 for the header row, then 1 if the cell is
highlighted, else 0.

Cells are numbers (ints/floats, or strings such as "8.25", "1E-3"), booleans, blanks (""
or None), Excel error literals ("#N/A", ...) or text.  The semantics are the ones that
reproduce the benchmark's labels (measured on train+dev, see :mod:`codefusion.eval.cf`):

* numeric tests (GreaterThan ... NotEquals with a number, Between, top/bottom, averages)
  use the cell's number, with text, blanks, booleans and errors counted as 0 (Excel would
  rank text above all numbers); Between accepts its bounds in either order;
* a comparison with a text operand compares text case-insensitively (no labelled example);
* TextContains / TextEquals / TextStartsWith: case-insensitive, on the cell as written
  (booleans as TRUE / FALSE), no wildcards;
* top(N) / top(N%): value >= the k-th largest, k = N or floor(N% of the cells), at least 1;
  bottom(...): value <= the k-th *largest* (how the labels have it, 58/68 rows);
* aboveAverage / belowAverage: strictly above / below the mean of the number cells;
* Duplicate(): 1 for the first occurrence of each exact value, 0 for repeats (47/47 rows);
* ColorScale, DataBar, IconSet, Blanks(): every cell; Errors(): error literals (no
  labelled example).
"""
from __future__ import annotations

import math
import re

from codefusion.eval.cf import CellRef, CFExecError, Node, Num

_ERRORS = {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A",
           "#GETTING_DATA", "#SPILL!", "#CALC!", "#FIELD!", "#BLOCKED!", "#UNKNOWN!"}
_NUMERIC = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class Cell:
    """One cell.  ``kind``: blank / number / bool / error / text; ``num`` is the numeric value
    with every non-number coerced to 0; ``text`` is what text tests look at; ``key`` is the
    exact raw value (Duplicate)."""

    __slots__ = ("kind", "num", "text", "key")

    def __init__(self, raw):
        if isinstance(raw, bool):
            self.kind, self.text = "bool", "TRUE" if raw else "FALSE"
        elif isinstance(raw, (int, float)):
            if not math.isfinite(raw):
                raise CFExecError(f"non-finite cell value {raw!r}")
            self.kind, self.text = "number", _num_text(float(raw))
        elif raw is None or raw == "":
            self.kind, self.text = "blank", ""
        elif not isinstance(raw, str):
            raise CFExecError(f"unsupported cell value {raw!r}")
        elif _NUMERIC.fullmatch(raw):
            self.kind, self.text = "number", raw
        else:
            self.kind, self.text = ("error" if raw.upper() in _ERRORS else "text"), raw
        self.num = float(self.text) if self.kind == "number" else 0.0
        self.key = (type(raw).__name__, raw)


def _num_text(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


_OPS = {"GreaterThan": lambda a, b: a > b, "GreaterThanEqual": lambda a, b: a >= b,
        "LessThan": lambda a, b: a < b, "LessThanEqual": lambda a, b: a <= b,
        "Equals": lambda a, b: a == b, "NotEquals": lambda a, b: a != b}


def _compare(name: str, cell: Cell, arg) -> bool:
    """Numeric operand: the cell's coerced number (text/blank count as 0) against it.
    Text operand: case-insensitive string comparison with the cell's text."""
    if isinstance(arg, CellRef):
        raise CFExecError(f"cell reference {arg.ref} cannot be resolved without the sheet")
    if isinstance(arg, Num):
        return _OPS[name](cell.num, arg.value)
    return _OPS[name](cell.text.lower(), arg.value.lower())


def _between(cell: Cell, lo, hi) -> bool:
    if not (isinstance(lo, Num) and isinstance(hi, Num)):
        raise CFExecError("Between needs two numeric bounds")
    low, high = sorted((lo.value, hi.value))
    return low <= cell.num <= high


def _text_test(name: str, cell: Cell, needle: str) -> bool:
    hay, needle = cell.text.lower(), needle.lower()
    if name == "TextContains":
        return needle in hay
    if name == "TextStartsWith":
        return hay.startswith(needle)
    return hay == needle  # TextEquals


def _rank(cells: list[Cell], top: bool, n: int, percent: bool) -> list[bool]:
    """top: value >= k-th largest.  bottom: value <= k-th LARGEST (how the benchmark labels
    bottom-N; Excel would use the k-th smallest).  k = n, or floor(n% of cells), at least 1."""
    if not cells:
        return []
    desc = sorted((c.num for c in cells), reverse=True)
    k = max(1, math.floor(len(desc) * n / 100)) if percent else min(n, len(desc))
    cut = desc[k - 1]
    return [(c.num >= cut) if top else (c.num <= cut) for c in cells]


def _average(cells: list[Cell], above: bool) -> list[bool]:
    """Mean of the number cells; every cell (text as 0) is compared strictly with it."""
    nums = [c.num for c in cells if c.kind == "number"]
    if not nums:
        return [False] * len(cells)
    mean = sum(nums) / len(nums)
    return [(c.num > mean) if above else (c.num < mean) for c in cells]


def _first_occurrence(cells: list[Cell]) -> list[bool]:
    """Duplicate(): the benchmark marks the first occurrence of each exact value."""
    seen: set = set()
    out = []
    for c in cells:
        out.append(c.key not in seen)
        seen.add(c.key)
    return out


def _mask(node: Node, cells: list[Cell]) -> list[bool]:
    name, args = node.name, node.args
    if name in ("AND", "OR"):
        join = all if name == "AND" else any
        return [join(col) for col in zip(*(_mask(a, cells) for a in args))]
    if name == "NOT":
        return [not x for x in _mask(args[0], cells)]
    if name in _OPS:
        return [_compare(name, c, args[0]) for c in cells]
    if name == "Between":
        return [_between(c, *args) for c in cells]
    if name.startswith("Text"):
        return [_text_test(name, c, args[0].value) for c in cells]
    if name in ("top", "bottom"):
        return _rank(cells, name == "top", *args)
    if name in ("aboveAverage", "belowAverage"):
        return _average(cells, name == "aboveAverage")
    if name == "Duplicate":
        return _first_occurrence(cells)
    if name == "Errors":
        return [c.kind == "error" for c in cells]
    if name in ("Blanks", "ColorScale", "DataBar", "IconSet"):
        return [True] * len(cells)
    raise CFExecError(f"no semantics for {name}")


def value_column(data: list[list]) -> int:
    header = data[0]
    for i, h in enumerate(header):
        if isinstance(h, str) and h.strip().lower() == "value":
            return i
    if len(header) < 2:
        raise CFExecError("table has no Value column")
    return 1


def evaluate(node: Node, data: list[list]) -> list[int]:
    """Labels of ``node`` on ``data`` (header row first, labelled 0)."""
    if not isinstance(data, (list, tuple)) or not data or not isinstance(data[0], (list, tuple)):
        raise CFExecError("data must be a non-empty list of rows (header first)")
    col = value_column(data)
    try:
        cells = [Cell(row[col]) for row in data[1:]]
    except (IndexError, TypeError) as exc:
        raise CFExecError(f"malformed table row: {exc}") from None
    return [0] + [int(x) for x in _mask(node, cells)]
