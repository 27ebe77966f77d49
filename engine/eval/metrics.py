"""The metrics of ``codefusion eval``, one row at a time, and their corpus aggregates.

Per row (pred = a generated program, ref = the reference, top = the k generations, best first):
    exact_match@k     some of the top k equals ref up to whitespace that carries no meaning (``normalize``:
                      Python by its tokens; else runs outside quotes collapsed, line breaks that end a
                      command kept); CF rules by their parse trees
    bleu@k            corpus BLEU (sacrebleu, 13a tokens, exp smoothing) over each row's best-of-k
                      by sentence BLEU (effective order, so a short exact match scores 100); @1 is plain
                      corpus BLEU of the top-1 programs
    syntax_valid@1    the top-1 parses: Python `ast`, Bash (bash.is_valid), CF rules (cf.is_valid)
    template_match@k  Bash only: some of the top k has ref's NL2Bash template (bash.template_match)
    exec_match@k      CF only: some of the top k, run on the row's table, gives its labels
    distinct_n@k      distinct n-grams / all n-grams over the k samples of a row (whitespace tokens)
    edit_distance@k   mean pairwise token edit distance / longer length over the k samples

Corpus figures are means over rows, except BLEU, which pools n-gram counts (``corpus_bleu``); both
come with a percentile bootstrap 95% interval over rows (``bootstrap_ci``).
"""
from __future__ import annotations

import ast
import itertools
import warnings

import numpy as np


def _python_tokens(code: str) -> tuple | None:
    """Python's own tokens of ``code``: strings and comments exactly as written, indentation as its nesting
    (INDENT / DEDENT, not its width), line breaks only where they end a statement (NEWLINE, not the NL inside
    brackets); None if it does not tokenize."""
    import io
    import tokenize

    skip = {tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
    blank = {tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE}
    # a string's text as written: Python ≥ 3.12 yields an f-string's literal text as FSTRING_MIDDLE tokens
    # (3.11: one STRING), whose spaces must not be stripped, or f"a {x} b" would equal f"a{x}b"
    literal = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING),
               getattr(tokenize, "TSTRING_MIDDLE", tokenize.STRING)}
    try:
        toks = [(t.type, "" if t.type in blank else t.string if t.type in literal else t.string.strip())
                for t in tokenize.generate_tokens(io.StringIO(code.strip()).readline) if t.type not in skip]
    except (tokenize.TokenError, SyntaxError, ValueError):  # IndentationError is a SyntaxError
        return None
    while toks and toks[-1][0] in (tokenize.NEWLINE, tokenize.DEDENT):
        toks.pop()
    return tuple(toks)


_CONTINUES = set("|;&(")  # Bash: a line break after these is only a space


def _text(code: str, lang: str | None) -> str:
    """Whitespace outside quotes made canonical: a run becomes one space, or one line break where the line
    break ends a command (not after | ; && ( or a backslash); inside '…' and "…" (Bash's '…' has no escapes) and
    after a backslash it is kept as written; a Bash comment (# at the start of a word) to the end of its line
    has its spaces collapsed and opens no quote. An unclosed quote keeps the rest as written."""
    out, i, n = [], 0, len(code)

    def last() -> str:
        return next((ch for piece in reversed(out) for ch in reversed(piece) if not ch.isspace()), "")

    def space(sep: str) -> None:  # one separator between words: a line break wins over a space
        if out and out[-1] in (" ", "\n"):
            out[-1] = "\n" if "\n" in (sep, out[-1]) else " "
        else:
            out.append(sep)
    while i < n:
        c = code[i]
        if c == "\\":
            if code[i + 1:i + 2] == "\n":  # a line continuation: one space
                space(" ")
            else:
                out.append(code[i:i + 2])
            i += 2
            continue
        if c in "'\"":
            escapes = c == '"' or lang != "bash"
            j = i + 1
            while j < n and code[j] != c:
                j += 2 if escapes and code[j] == "\\" else 1
            out.append(code[i:j + 1])
            i = j + 1
            continue
        if c == "#" and lang == "bash" and (i == 0 or code[i - 1].isspace()):
            j = code.find("\n", i)
            j = n if j < 0 else j
            out.append(" ".join(code[i:j].split()))
            i = j
            continue
        if c.isspace():
            j = i
            while j < n and code[j].isspace():
                j += 1
            breaks = "\n" in code[i:j] or "\r" in code[i:j]
            space("\n" if breaks and last() not in _CONTINUES else " ")
            i = j
            continue
        out.append(c)
        i += 1
    return "".join(out).strip()


def normalize(code: str, lang: str | None = None):
    """``code`` up to the whitespace that carries no meaning: for Python its token stream (``_python_tokens``:
    ``x=1`` equals ``x = 1``, and a re-indented block its original), else (and for Python that does not
    tokenize) ``_text``. Whitespace that does carry meaning (inside quotes, a line break that ends a command,
    Python's nesting) is kept, so ``echo "a  b"`` ≠ ``echo "a b"``."""
    if lang == "python":
        toks = _python_tokens(code)
        if toks is not None:
            return toks
    return _text(code, lang)


def exact_match(pred: str, ref: str, lang: str | None = None) -> bool:
    """``normalize``d texts equal; for CF rules, equal parse trees: whitespace between tokens carries no meaning
    there (``Between(1, 5)`` is ``Between(1,5)``, both spellings are in the references), a text argument keeps
    its own, and numbers compare by value."""
    if lang == "cf":
        from .cf import CFSyntaxError, parse
        try:
            return parse(pred) == parse(ref)
        except CFSyntaxError:
            pass
    return normalize(pred, lang) == normalize(ref, lang)


def python_valid(code: str) -> bool:
    try:
        with warnings.catch_warnings():  # invalid escape sequences are warnings, not syntax errors
            warnings.simplefilter("ignore")
            ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a NUL byte; the others: deep nesting
        return False
    return True


def syntax_valid(code: str, lang: str) -> bool:
    if not code.strip():
        return False
    if lang == "python":
        return python_valid(code)
    if lang == "bash":
        from . import bash
        return bash.is_valid(code)
    from . import cf
    return cf.is_valid(code)


# --- BLEU: per-row n-gram statistics, pooled per corpus (so rows can be resampled) ---------------

def _bleu():
    from sacrebleu.metrics import BLEU
    return BLEU(tokenize="13a")


def bleu_stats(pred: str, ref: str, metric=None) -> np.ndarray:
    """(10,) = matches for 1..4-grams, totals for 1..4-grams, hypothesis length, reference length."""
    s = (metric or _bleu()).corpus_score([pred], [[ref]])
    return np.array([*s.counts, *s.totals, s.sys_len, s.ref_len], dtype=np.int64)


def corpus_bleu(stats: np.ndarray) -> float:
    """BLEU (0–100) of the rows whose statistics are stacked in ``stats`` (m, 10)."""
    from sacrebleu.metrics import BLEU
    tot = stats.sum(axis=0).tolist()
    return float(BLEU.compute_bleu(tot[0:4], tot[4:8], tot[8], tot[9], smooth_method="exp").score)


def sentence_bleu(stats: np.ndarray) -> float:
    """BLEU (0–100) of one row, as sacrebleu's sentence BLEU: exp smoothing with effective order, so a
    program shorter than four tokens that equals its reference scores 100 (without it, its empty 4-gram
    precision makes it 0, and the best of k would pass an exact match over for a smoothed near miss)."""
    from sacrebleu.metrics import BLEU
    s = stats.tolist()
    return float(BLEU.compute_bleu(s[0:4], s[4:8], s[8], s[9], smooth_method="exp", effective_order=True).score)


# --- diversity of one row's k samples ------------------------------------------------------------

def distinct_n(texts: list[str], n: int) -> float | None:
    """None when no sample has n tokens (e.g. 4-grams of `ls -la`): such rows are left out of the mean."""
    grams = [tuple(toks[i:i + n]) for toks in (t.split() for t in texts) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def _edit(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_distance(texts: list[str]) -> float:
    """Mean over pairs of token-level Levenshtein distance / the longer length (0 = all identical)."""
    pairs = list(itertools.combinations([t.split() for t in texts], 2))
    if not pairs:
        return 0.0
    return float(np.mean([_edit(a, b) / max(len(a), len(b), 1) for a, b in pairs]))


# --- confidence intervals ------------------------------------------------------------------------

def bootstrap_ci(values: np.ndarray, statistic=None, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of ``statistic`` (default: the mean) over the rows of ``values``."""
    values = np.asarray(values)
    m = len(values)
    if m == 0:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, m, size=(resamples, m))
    if statistic is None:
        draws = values[idx].mean(axis=1)
    else:
        draws = np.array([statistic(values[i]) for i in idx])
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return (float(lo), float(hi))
