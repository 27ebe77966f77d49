"""`codefusion eval`: each metric on hand-worked examples, the aggregation, and the command end to end."""
import json

import numpy as np
import pytest
import torch
from sacrebleu.metrics import BLEU

from conftest import PAIRS

from codefusion.cli import main
from codefusion.eval import metrics as M
from codefusion.eval.codebert import codebert_scores, f1_from_embeddings
from codefusion.eval.evaluate import aggregate, report_ks, score_row


def test_exact_match_collapses_whitespace_only():
    assert M.exact_match("ls  -la\n", "ls -la")
    assert not M.exact_match("ls -la", "ls -al") and not M.exact_match("ls -la", "ls -l -a")


def test_exact_match_keeps_whitespace_that_means_something():
    """Inside quotes, line breaks, and Python's indentation are kept; runs elsewhere still collapse."""
    assert not M.exact_match('echo "a  b"', 'echo "a b"', "bash")
    assert not M.exact_match("s.split('  ')", "s.split(' ')", "python")
    assert not M.exact_match("ls\nrm x", "ls rm x", "bash")
    loop = "for x in xs:\n    f(x)\n    g(x)"
    assert not M.exact_match(loop, "for x in xs:\n    f(x)\ng(x)", "python")
    assert M.exact_match(loop + "  \n", "for  x in xs:\n    f(x) \n    g(x)", "python")
    assert M.exact_match("a\n  b", "a\nb", "bash")  # indentation carries no meaning in Bash
    assert M.exact_match("echo 'it''s'  x", "echo 'it''s' x", "bash")
    assert M.exact_match('print("a\\"  b")   ', 'print("a\\"  b")', "python")  # escaped quote stays inside
    assert not M.exact_match("echo 'open  x", "echo 'open x", "bash")  # unclosed: the rest is kept as written
    # an f-string's literal text as written; Python ≥ 3.12 tokenizes it in pieces (FSTRING_MIDDLE)
    assert not M.exact_match('print(f"a {x} b")', 'print(f"a{x}b")', "python")
    assert M.exact_match('print(f"a {x} b")', 'print( f"a {x} b" )', "python")
    assert not M.exact_match("TextContains(a  b)", "TextContains(a b)", "cf")  # a CF text argument as written


@pytest.mark.parametrize("pred, ref, lang", [
    ("sed 's/^,/ ,/' f | tr -d \\\"  |  column -s, -t", "sed 's/^,/ ,/' f | tr -d \\\" | column -s, -t", "bash"),
    ("echo don\\'t   stop", "echo don\\'t stop", "bash"),  # an escaped quote opens no string
    ("ls -l   # it's  here\nwc", "ls -l # it's here\nwc", "bash"),  # nor does an apostrophe in a comment
    ("ls ;\nls", "ls ; ls", "bash"), ("ls |\n  wc", "ls | wc", "bash"), ("ls \\\n -l", "ls -l", "bash"),
    ("a\r\nb", "a\nb", "bash"),
    ("x = 1 # it's the default\ny  =  2", "x = 1  # it's the default\ny = 2", "python"),
    ("foo(a,\n    b)", "foo(a, b)", "python"), ("if x:\n  y", "if x:\n    y", "python"), ("x=1", "x = 1", "python"),
    ("if x:\n\ty", "if x:\n    y", "python"),
    ("Between(1, 5)", "Between(1,5)", "cf"), ("AND(Equals(1), Equals(2))", "AND(Equals(1),Equals(2))", "cf"),
])
def test_exact_match_ignores_whitespace_without_meaning(pred, ref, lang):
    assert M.exact_match(pred, ref, lang)


def test_syntax_valid_is_false_on_deep_nesting():
    assert M.syntax_valid("-" * 3000 + "1", "python") is False


@pytest.mark.parametrize("code,ok", [("x[::-1]", True), ("sorted(d.items(), key=lambda kv: kv[1])", True),
                                     ("for i in x:\n    print(i)", True), ("print 'x'", False),
                                     ("sum(x", False), ("sum(x))", False), ("'\\d'", True), ("", False)])
def test_python_syntax(code, ok):
    assert M.syntax_valid(code, "python") is ok


def test_bleu_pools_ngram_counts_like_sacrebleu():
    pairs = [("find . -name x", "find . -name y"), ("ls -la", "ls -la"), ("wc -l a.txt", "grep foo a.txt")]
    stats = np.stack([M.bleu_stats(p, r) for p, r in pairs])
    direct = BLEU(tokenize="13a").corpus_score([p for p, _ in pairs], [[r for _, r in pairs]]).score
    assert M.corpus_bleu(stats) == pytest.approx(direct, abs=1e-9)
    assert M.sentence_bleu(M.bleu_stats("a b c d", "a b c d")) == pytest.approx(100.0)
    assert M.sentence_bleu(M.bleu_stats("ColorScale()", "ColorScale()")) == pytest.approx(100.0)  # < 4 tokens
    assert M.sentence_bleu(M.bleu_stats("ls -l", "ls -l")) == pytest.approx(
        BLEU(tokenize="13a", effective_order=True).sentence_score("ls -l", ["ls -l"]).score)
    # 3/4 unigrams, 2/3 bigrams, 1/2 trigrams, 0/1 4-grams (exp smoothing: 1/2) → (3/4·2/3·1/2·1/2)^(1/4)
    assert M.sentence_bleu(M.bleu_stats("find . -name x", "find . -name y")) == pytest.approx(
        100 * (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25, abs=1e-6)


def test_diversity_by_hand():
    assert M.distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # ab bc ab bd
    assert M.distinct_n(["a b", "a b"], 4) is None  # no 4-grams at all: the row is left out of the mean
    assert M.edit_distance(["a b c", "a x c"]) == pytest.approx(1 / 3)
    assert M.edit_distance(["a b", "a b", "a b c d"]) == pytest.approx((0 + 2 / 4 + 2 / 4) / 3)
    assert M.edit_distance(["same"]) == 0.0


def test_bootstrap_interval():
    assert M.bootstrap_ci(np.full(50, 0.3)) == pytest.approx((0.3, 0.3))
    vals = np.array([1.0] * 30 + [0.0] * 70)
    lo, hi = M.bootstrap_ci(vals, seed=1)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45  # ±1.96·√(.21/100) ≈ ±0.09
    assert M.bootstrap_ci(vals, seed=1) == (lo, hi)


def test_report_ks():
    assert report_ks(1) == [1] and report_ks(3) == [1, 3] and report_ks(5) == [1, 3, 5] and report_ks(8) == [1, 3, 5, 8]


def test_score_row_top_k_semantics():
    bleu = BLEU(tokenize="13a")
    row = {"code": "sum(x)"}
    s = score_row(row, ["sum(x", "sum(y)", "max(x)"], ["sum(x", "sum(y)", "max(x)"], "python", [1, 3], bleu)
    assert s["syntax_valid@1"] == 0.0  # top-1 only
    assert s["exact_match@1"] == 0.0 and s["exact_match@3"] == 0.0
    s = score_row(row, ["max(x)", "sum( x )"], ["max(x)", "sum( x )"], "python", [1, 3], bleu)
    assert s["exact_match@1"] == 0.0 and s["exact_match@3"] == 1.0  # the same Python tokens
    s = score_row(row, ["max(x)", "sum(x)"], ["max(x)", "sum(x)", "max(x)"], "python", [1, 3], bleu)
    assert s["exact_match@1"] == 0.0 and s["exact_match@3"] == 1.0 and s["bleu@3"] == pytest.approx(100.0)
    assert s["distinct_2@3"] == pytest.approx(M.distinct_n(["max(x)", "sum(x)", "max(x)"], 2))


def test_cf_exec_match_on_mixed_rows_and_the_constant_rule_baseline():
    """exec_match_mixed counts only rows whose data rows mix 0 and 1 labels (there a rule that ignores its table
    fails); the note gives what such a rule scores on the rows exec_match counts."""
    from codefusion.eval.evaluate import constant_rule_baseline

    bleu = BLEU(tokenize="13a")
    table = [["Index", "Value"], [0, "1"], [1, "5"]]
    mixed = {"code": "GreaterThan(2)", "data": table, "labels": [0, 0, 1]}
    every = {"code": "GreaterThan(0)", "data": table, "labels": [0, 1, 1]}
    empty = {"code": "GreaterThan(0)", "data": table[:1], "labels": [0]}
    s = score_row(mixed, ["GreaterThan(3)"], ["GreaterThan(3)"], "cf", [1], bleu)
    assert s["exec_match@1"] == 1.0 and s["exec_match_mixed@1"] == 1.0
    s = score_row(every, ["ColorScale()"], ["ColorScale()"], "cf", [1], bleu)
    assert s["exec_match@1"] == 1.0 and "exec_match_mixed@1" not in s
    note = constant_rule_baseline([mixed, every, empty])
    assert "matches 2 (66.7%) of those rows" in note and "only the 1 rows whose labels mix" in note


def test_best_of_k_bleu_takes_a_short_exact_match():
    """A reference shorter than four tokens: its exact match is the best of k (it used to score 0, so the
    smoothed near miss won and bleu@2 came out below bleu@1)."""
    bleu = BLEU(tokenize="13a")
    rows = [{"code": "ColorScale()"}, {"code": "GreaterThan(550)"}]
    tops = [["ColorScale()", "top(10%)"], ["GreaterThan(500)", "LessThan(550)"]]
    scored = [score_row(r, t, t, "cf", [1, 2], bleu) for r, t in zip(rows, tops)]
    assert scored[0]["bleu@1"] == scored[0]["bleu@2"] == pytest.approx(100.0)
    means = aggregate(scored)[0]
    assert means["bleu@2"] >= means["bleu@1"]


def test_aggregate_means_intervals_and_counts():
    bleu = BLEU(tokenize="13a")
    rows = [score_row({"code": c}, [p], [p], "python", [1], bleu)
            for c, p in [("a(1)", "a(1)"), ("b(2)", "b(3"), ("c", "c"), ("d", "e")]]
    metrics, ci, counts = aggregate(rows)
    assert metrics["exact_match@1"] == 0.5 and metrics["syntax_valid@1"] == 0.75 and counts["exact_match@1"] == 4
    assert ci["exact_match@1"][0] <= 0.5 <= ci["exact_match@1"][1]
    direct = BLEU(tokenize="13a").corpus_score(["a(1)", "b(3", "c", "e"], [["a(1)", "b(2)", "c", "d"]]).score
    assert metrics["bleu@1"] == pytest.approx(direct, abs=1e-5)


def test_codebert_greedy_f1_by_hand():
    pred, ref = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert f1_from_embeddings(pred, ref) == pytest.approx(2 * 1 * 0.5 / 1.5)  # P = 1, R = 1/2
    assert f1_from_embeddings(pred[:0], ref) == 0.0


@pytest.fixture(scope="module")
def local_bert(tmp_path_factory):
    """A tiny random RoBERTa and a word-level tokenizer saved locally: the shape of a CodeBERT directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    words = ["<pad>", "<unk>", "<s>", "</s>", "ls", "-la", "find", ".", "-name", "x", "y"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("codebert")
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=40, pad_token_id=0)).save_pretrained(path)
    return path


def test_codebert_scores_from_a_local_model(local_bert, tmp_path):
    same, other = codebert_scores(str(local_bert), ["find . -name x", "ls -la"], ["find . -name x", "find . -name y"])
    assert same == pytest.approx(1.0, abs=1e-5) and other < same
    from codefusion.errors import CodeFusionError
    with pytest.raises(CodeFusionError, match="not a local transformers model"):
        codebert_scores(str(tmp_path), ["a"], ["a"])


# --- the command ---------------------------------------------------------------------------------

def _dev_file(tmp_path, rows):
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_cli_on_the_overfit_model(overfit_dir, tmp_path, capsys):
    rows = [{"id": f"b{i}", "nl": nl, "code": code} for i, (nl, code) in enumerate(PAIRS["nl2bash"])]
    data, preds = _dev_file(tmp_path, rows), tmp_path / "preds.jsonl"
    assert main(["eval", "--model", str(overfit_dir), "--data", str(data), "--lang", "bash", "--steps", "1200",
                 "--predictions", str(preds), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 8 and out["steps"] == 1200 and out["solver"] == "ddpm"
    for name in ("exact_match@1", "syntax_valid@1", "template_match@1"):
        assert out["metrics"][name] == 1.0 and out["ci95"][name] == [1.0, 1.0] and out["counts"][name] == 8
    assert out["metrics"]["bleu@1"] == pytest.approx(100.0)
    assert "codebert_f1@1" in out["not_computed"]
    written = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [w["id"] for w in written] == [r["id"] for r in rows]
    assert written[0]["reference"] == rows[0]["code"] and written[0]["generations"][0] == rows[0]["code"]
    assert written[0]["metrics"]["exact_match@1"] == 1.0


def test_eval_cli_top_k_keys_and_table(overfit_dir, tmp_path, capsys, monkeypatch):
    rows = [{"id": str(i), "nl": nl, "code": code} for i, (nl, code) in enumerate(PAIRS["nl2bash"][:3])]
    data = _dev_file(tmp_path, rows)
    import codefusion.eval.evaluate as evaluate_module
    quantiles = []
    real = evaluate_module.evaluate

    def spy(cf, *args, **kwargs):
        quantiles.append(cf.length_quantile)
        return real(cf, *args, **kwargs)
    monkeypatch.setattr(evaluate_module, "evaluate", spy)
    assert main(["eval", "--model", str(overfit_dir), "--data", str(data), "--lang", "bash", "--steps", "10",
                 "--num-samples", "3", "--limit", "2", "--length-quantile", "0.6"]) == 0
    assert quantiles == [0.6]
    table = capsys.readouterr().out
    assert "2 rows" in table and "95% CI" in table
    for name in ("exact_match@3", "template_match@3", "distinct_4@3", "edit_distance@3", "syntax_valid@1"):
        assert name in table
    assert "codebert_f1@1: not computed" in table


@pytest.mark.parametrize("argv,message", [
    (["--data", "{tmp}/missing.jsonl"], "is not a file"),
    (["--data", "{data}", "--limit", "0"], "--limit must be at least 1"),
    (["--data", "{data}", "--lang", "java"], "--lang must be one of bash, python, cf"),
    (["--data", "{tmp}/odd.jsonl"], "cannot tell the language"),
    (["--data", "{data}", "--predictions", "{data}", "--force"], "is --data itself: write the predictions elsewhere"),
    (["--data", "{data}", "--predictions", "{tmp}/odd.jsonl"], "exists: choose another path or pass --force"),
    (["--data", "{data}", "--predictions", "{tmp}"], "is a directory"),
    (["--data", "{nocode}", "--lang", "bash"], "field 'code' is missing or not a non-empty string"),
    (["--data", "{badtable}", "--lang", "cf"], "row 1: 'data' must be a list of rows"),
])
def test_eval_bad_input_is_one_line(overfit_dir, tmp_path, capsys, argv, message):
    (tmp_path / "odd.jsonl").write_text(json.dumps({"nl": "a", "code": "b"}) + "\n")
    (tmp_path / "nocode.jsonl").write_text(json.dumps({"nl": "a", "code": 3}) + "\n")
    data = tmp_path / "nl2bash"
    data.mkdir()
    (data / "dev.jsonl").write_text(json.dumps({"nl": "list files", "code": "ls"}) + "\n")
    (tmp_path / "badtable.jsonl").write_text(json.dumps({"nl": "a", "code": "GreaterThan(1)",
                                                          "data": [["a", "Value"], [1, 2]], "labels": 5}) + "\n")
    subs = {"tmp": str(tmp_path), "data": str(data / "dev.jsonl"), "nocode": str(tmp_path / "nocode.jsonl"),
            "badtable": str(tmp_path / "badtable.jsonl")}
    args = ["eval", "--model", str(overfit_dir), "--steps", "2"] + [a.format(**subs) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
