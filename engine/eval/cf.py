"""Grammar and interpreter of the CodeFusion Excel conditional-formatting (CF) rule language.

Used for the CF metrics "syntactic validity" (:func:`is_valid`) and "execution match"
(:func:`exec_match`).  Parsing lives here; cell semantics live in :mod:`codefusion.eval.cf_exec`.

Notation (EBNF; ``ws`` = optional blanks, allowed between all tokens except inside TEXT)::

    rule     = ws call ws EOF ;
    call     = logic | compare | between | textcall | rank | nullary ;
    logic    = ( "AND" | "OR" ) "(" call { "," call } ")" | "NOT" "(" call ")" ;
    compare  = CMP "(" value ")" ;
    between  = "Between" "(" value "," value ")" ;
    textcall = TXT "(" ( STRING | TEXT ) ")" ;
    rank     = ( "top" | "bottom" ) "(" INT [ "%" ] ")" ;         (* INT >= 1; percent <= 100 *)
    nullary  = NULLARY "(" ")" ;
    value    = NUMBER | CELLREF | STRING | BARE ;
    CMP      = "GreaterThan" | "GreaterThanEqual" | "LessThan" | "LessThanEqual"
             | "Equals" | "NotEquals" ;
    TXT      = "TextContains" | "TextEquals" | "TextStartsWith" ;
    NULLARY  = "Duplicate" | "Blanks" | "Errors" | "aboveAverage" | "belowAverage"
             | "ColorScale" | "DataBar" | "IconSet" ;
    NUMBER   = [ "-" | "+" ] ( digits [ "." { digit } ] | "." digits )
               [ ( "e" | "E" ) [ "-" | "+" ] digits ] ;
    CELLREF  = [ "$" ] letter [ letter [ letter ] ] [ "$" ] digits ;  (* $E$13, F316 *)
    STRING   = '"' { char - '"' | '""' } '"' ;
    BARE     = non-empty run of chars other than '(' ')' ',' '"' (e.g. "13 Days") ;
    TEXT     = raw, possibly empty text, kept verbatim (blanks included): it ends at the ')'
               that balances the opening one; if there is none, at the first ')' followed
               by ws and ',' / ')' / EOF (so ``TextContains(()`` is the text "(").

Function names are matched case-insensitively (the data has ``top(1)`` and ``Top(1)``, and
Excel names are case-insensitive).  Heads not seen in the data (Unique, TextEndsWith, ...)
are rejected, so are ``OR()`` and ``AND()`` (no operand).

Labels (what :func:`execute` returns, as in the dataset): one int per row of ``data``; the
header row is always 0, then 1 if that row's ``Value`` cell is highlighted, else 0.  The
semantics follow what reproduces the benchmark's labels (see :mod:`.cf_exec`), which differs
from Excel in places: non-numbers count as 0 in numeric tests, ``Duplicate()`` marks the first
occurrence of each value, ``bottom(N)`` keeps values <= the N-th largest, and ColorScale /
DataBar / IconSet / Blanks mark every cell.

Measured on /work/shared/data/cf (train 662, dev 47 rows):

* Syntactic validity of the distinct programs: train 275/275, dev 31/31, pretrain
  3493/3494 (99.97%; the one rejected is ``OR(TextEquals(0),OR())``, an empty OR).
* Reference program reproduces its labels: train 500/662 (75.5%), dev 36/47 (76.6%);
  on the rows that have one label per data row: train 500/559 (89.4%), dev 36/42 (85.7%).
  What it cannot reproduce, and why:

  - 104 rows (cf-0001 ... cf-0104): ``labels`` is just ``[0]`` although the table has rows,
    i.e. no per-row labels were recorded; no interpreter can match them.
  - 4 rows (cf-0115, cf-0134, cf-0135, cf-0138): more labels than table rows.
  - 50 top/bottom/aboveAverage/belowAverage rows: ``data`` is a sample (often the first 100
    rows) of a larger range, and the cut-off/mean was taken over the whole range.
  - 14 GreaterThan/GreaterThanEqual/LessThan/Between rows whose labels are visibly shifted
    against the rows or noisy (e.g. "5" highlighted by ``GreaterThanEqual(64)``).
  - 1 row with a cell reference operand (``GreaterThan($E$13)``): the sheet is not given,
    so it raises :class:`CFExecError`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

__all__ = ["CFSyntaxError", "CFExecError", "Node", "Num", "Text", "CellRef", "parse",
           "is_valid", "execute", "exec_match", "reference_executes"]


class CFSyntaxError(ValueError):
    """The rule is outside the grammar; ``pos`` is the 0-based character offset."""

    def __init__(self, msg: str, pos: int, rule: str):
        self.pos = pos
        super().__init__(f"{msg} at position {pos} of {rule!r}")


class CFExecError(ValueError):
    """The rule parses but cannot be evaluated on the given table."""


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Text:
    value: str


@dataclass(frozen=True)
class CellRef:
    ref: str


Arg = Union["Node", Num, Text, CellRef, int]


@dataclass(frozen=True)
class Node:
    """A call: canonical function ``name`` and its ``args``.

    AND/OR/NOT: child Nodes; comparisons/Between: Num/Text/CellRef; Text*: one Text;
    top/bottom: (n, percent); nullary: ().
    """

    name: str
    args: tuple = ()


COMPARE = ("GreaterThan", "GreaterThanEqual", "LessThan", "LessThanEqual", "Equals", "NotEquals")
TEXTUAL = ("TextContains", "TextEquals", "TextStartsWith")
NULLARY = ("Duplicate", "Blanks", "Errors", "aboveAverage", "belowAverage",
           "ColorScale", "DataBar", "IconSet")
RANK = ("top", "bottom")
LOGIC = ("AND", "OR", "NOT")
_CANON = {n.lower(): n for n in COMPARE + TEXTUAL + NULLARY + RANK + LOGIC + ("Between",)}

_NAME = re.compile(r"[A-Za-z_]\w*")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_CELLREF = re.compile(r"\$?[A-Za-z]{1,3}\$?\d+")
_STRING = re.compile(r'"(?:[^"]|"")*"')
_INT = re.compile(r"\d+")


class _Parser:
    """Recursive descent over the rule string; tokens are lexed on demand at ``pos``."""

    def __init__(self, rule: str):
        self.src = rule
        self.pos = 0

    # -- lexing helpers -------------------------------------------------------------
    def fail(self, msg: str, pos: int | None = None):
        raise CFSyntaxError(msg, self.pos if pos is None else pos, self.src)

    def skip_ws(self) -> None:
        while self.pos < len(self.src) and self.src[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.src[self.pos: self.pos + 1]

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            found = repr(self.src[self.pos]) if self.pos < len(self.src) else "end of rule"
            self.fail(f"expected {ch!r} {what}, found {found}")
        self.pos += 1

    def match(self, pattern: re.Pattern) -> str | None:
        self.skip_ws()
        m = pattern.match(self.src, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    # -- grammar --------------------------------------------------------------------
    def rule(self) -> Node:
        node = self.call()
        self.skip_ws()
        if self.pos != len(self.src):
            self.fail(f"unexpected trailing text {self.src[self.pos:self.pos + 10]!r}")
        return node

    def call(self) -> Node:
        start = self.pos
        name = self.match(_NAME)
        if name is None:
            self.fail("expected a function name")
        canon = _CANON.get(name.lower())
        if canon is None:
            self.fail(f"unknown function {name!r}", start)
        self.expect("(", f"after {canon}")
        if canon in ("AND", "OR"):
            args = [self.call()]
            while self.peek() == ",":
                self.pos += 1
                args.append(self.call())
        elif canon == "NOT":
            args = [self.call()]
        elif canon in COMPARE:
            args = [self.value(canon)]
        elif canon == "Between":
            args = [self.value(canon)]
            self.expect(",", "between the two bounds of Between")
            args.append(self.value(canon))
        elif canon in TEXTUAL:
            return Node(canon, (self.text_arg(canon),))  # text_arg consumed the ')'
        elif canon in RANK:
            args = self.rank_args(canon)
        else:
            args = []
        self.expect(")", f"closing {canon}")
        return Node(canon, tuple(args))

    def value(self, fn: str) -> Num | Text | CellRef:
        self.skip_ws()
        start = self.pos
        if self.src.startswith('"', start):
            lit = self.match(_STRING)
            if lit is None:
                self.fail("unterminated string")
            return Text(lit[1:-1].replace('""', '"'))
        end = start
        while end < len(self.src) and self.src[end] not in '(),"':
            end += 1
        chunk = self.src[start:end].strip()
        if not chunk:
            self.fail(f"expected a value argument of {fn}")
        if end < len(self.src) and self.src[end] in '("':
            self.fail(f"unexpected {self.src[end]!r} in argument of {fn}", end)
        self.pos = end
        if _NUMBER.fullmatch(chunk):
            return Num(float(chunk))
        if _CELLREF.fullmatch(chunk):
            return CellRef(chunk.upper())
        return Text(chunk)

    def rank_args(self, fn: str) -> list:
        digits = self.match(_INT)
        if digits is None:
            self.fail(f"expected a positive integer argument of {fn}")
        n = int(digits)
        percent = self.peek() == "%"
        if percent:
            self.pos += 1
        if n < 1 or (percent and n > 100):
            self.fail(f"{fn} count out of range: {digits}{'%' if percent else ''}")
        return [n, percent]

    def text_arg(self, fn: str) -> Text:
        """Read the raw text argument and its closing ')' (see TEXT in the docstring)."""
        src, start = self.src, self.pos
        probe = _Parser(src)
        probe.pos = start
        if probe.peek() == '"':
            lit = probe.match(_STRING)
            if lit is not None and probe.peek() == ")":
                self.pos = probe.pos + 1
                return Text(lit[1:-1].replace('""', '"'))
        depth = 0
        for i in range(start, len(src)):
            if src[i] == "(":
                depth += 1
            elif src[i] == ")":
                if depth == 0:
                    self.pos = i + 1
                    return Text(src[start:i])
                depth -= 1
        for m in re.finditer(r"\)\s*(?=[,)]|$)", src[start:]):
            self.pos = start + m.start() + 1
            return Text(src[start:start + m.start()])
        self.fail(f"expected ')' closing {fn}", len(src))


def parse(rule: str) -> Node:
    """Parse ``rule`` into a :class:`Node` tree; raise :class:`CFSyntaxError` if invalid."""
    if not isinstance(rule, str):
        raise CFSyntaxError(f"rule must be a string, not {type(rule).__name__}", 0, str(rule))
    return _Parser(rule).rule()


def is_valid(rule: str) -> bool:
    """True iff ``rule`` parses."""
    try:
        parse(rule)
    except CFSyntaxError:
        return False
    return True


def execute(rule: str, data: list[list]) -> list[int]:
    """Labels of ``rule`` on ``data``: 0 for the header, then 1/0 per data row (highlighted)."""
    from codefusion.eval.cf_exec import evaluate

    return evaluate(parse(rule), data)


def exec_match(pred: str, data: list[list], labels: list) -> bool:
    """``execute(pred, data) == labels``; False on any syntax or execution error."""
    try:
        return execute(pred, data) == list(labels)
    except (CFSyntaxError, CFExecError):
        return False


def reference_executes(code: str, data: list[list], labels: list) -> bool:
    """True iff the reference program ``code`` reproduces its own ``labels``."""
    return exec_match(code, data, labels)
