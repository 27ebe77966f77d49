"""Code-specific continuous paragraph denoising (CPD, CodeFusion §3.2): mask identifiers and
built-in keywords of a program; the model reconstructs the full program from the masked one.

Candidates per language (parsed with tree-sitter, which yields a tree even for broken code):
    python  identifier leaves; keywords (def, for, in, import, …); True / False / None
    bash    command names (find, xargs, …); variable names; reserved words (for, do, done, if, …)
    cf      rule functions and connectives (GreaterThan, Between, AND, OR, …): a regex on ``Name(``
Each candidate is replaced by ``<mask>`` with probability ``p`` (at least one when any exists).
"""
from __future__ import annotations

import functools
import keyword
import random
import re

from ..tokenizer import MASK

PY_KEYWORDS = set(keyword.kwlist)
PY_NAMED_CONSTANTS = {"true", "false", "none"}
BASH_RESERVED = {"if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until", "case", "esac",
                 "function", "select", "time", "declare", "local", "export", "readonly", "unset"}
CF_FUNCTION = re.compile(r'"(?:[^"\\]|\\.)*"|([A-Za-z_][A-Za-z0-9_]*)(?=\s*\()')  # skips quoted strings


@functools.lru_cache(maxsize=None)
def _parser(lang: str):
    import tree_sitter
    if lang == "python":
        import tree_sitter_python as grammar
    else:
        import tree_sitter_bash as grammar
    return tree_sitter.Parser(tree_sitter.Language(grammar.language()))


def _leaves(node):
    if node.child_count == 0:
        yield node
    for child in node.children:
        yield from _leaves(child)


def _is_candidate(node, lang: str) -> bool:
    if lang == "python":
        return node.type == "identifier" or node.type in PY_NAMED_CONSTANTS or (
            not node.is_named and node.type in PY_KEYWORDS)
    parent = node.parent.type if node.parent is not None else ""
    return (node.type == "word" and parent == "command_name") or node.type == "variable_name" or (
        not node.is_named and node.type in BASH_RESERVED)


def candidate_spans(code: str, lang: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of maskable identifiers/keywords, in order."""
    if lang == "cf":
        return [m.span(1) for m in CF_FUNCTION.finditer(code) if m.group(1)]
    data = code.encode("utf-8")
    tree = _parser(lang).parse(data)
    spans = [(n.start_byte, n.end_byte) for n in _leaves(tree.root_node) if _is_candidate(n, lang)]
    # byte offsets → character offsets (the code may hold non-ASCII text)
    return [(len(data[:a].decode("utf-8", "replace")), len(data[:b].decode("utf-8", "replace"))) for a, b in spans]


def cpd_mask(code: str, lang: str, rng: random.Random, p: float = 0.5) -> str:
    """``code`` with a random subset of its candidate spans replaced by <mask>."""
    spans = candidate_spans(code, lang)
    if not spans:
        return code
    chosen = [s for s in spans if rng.random() < p] or [rng.choice(spans)]
    out, last = [], 0
    for a, b in chosen:
        out += [code[last:a], MASK]
        last = b
    out.append(code[last:])
    return "".join(out)
