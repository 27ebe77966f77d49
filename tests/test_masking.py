"""CPD masking on real Python, Bash and CF snippets: what may be masked, and what never is."""
import random
import re

import pytest

from codefusion.train.masking import candidate_spans, cpd_mask


def words(code, lang):
    return [code[a:b] for a, b in candidate_spans(code, lang)]


def test_python_identifiers_and_keywords():
    code = "for k, v in sorted(d.items(), key=lambda kv: kv[1]): print(k) if v is not None else None"
    got = words(code, "python")
    for w in ("for", "k", "v", "in", "sorted", "d", "items", "key", "lambda", "kv", "print", "if", "is", "not",
              "None", "else"):
        assert w in got, w
    assert "1" not in got and ":" not in got  # literals and punctuation stay


def test_bash_commands_variables_and_reserved_words():
    code = 'for f in $(find . -name "*.txt"); do wc -l "$f" | sort -n; done'
    got = words(code, "bash")
    assert got == ["for", "f", "in", "find", "do", "wc", "f", "sort", "done"]
    assert "-name" not in got and "*.txt" not in got  # flags and arguments stay


def test_bash_exec_and_pipes():
    got = words("find /tmp -type f -exec rm {} \\; | xargs -I{} echo {}", "bash")
    assert got[:2] == ["find", "xargs"]


def test_cf_rule_functions():
    assert words("AND(GreaterThan(5),TextContains(\"a(b\"))", "cf") == ["AND", "GreaterThan", "TextContains"]


@pytest.mark.parametrize("code,lang", [("x = foo(bar)", "python"), ("ls -la | grep x", "bash"),
                                       ("OR(Top(1),Bottom(2))", "cf")])
def test_mask_replaces_only_candidates_and_keeps_the_rest(code, lang):
    rng, allowed = random.Random(3), set(words(code, lang))
    for _ in range(20):
        masked = cpd_mask(code, lang, rng)
        pattern = "".join("(\\w+)" if part == "<mask>" else re.escape(part) for part in re.split("(<mask>)", masked))
        match = re.fullmatch(pattern, code)
        assert match and match.groups() and set(match.groups()) <= allowed, masked


def test_code_without_candidates_is_unchanged():
    assert cpd_mask("42", "python", random.Random(0)) == "42"


def test_non_ascii_offsets():
    assert cpd_mask("größe = 1", "python", random.Random(0)) == "<mask> = 1"
