"""The suites that score `codefusion eval --predictions` files: `bench compare` (two files, paired) and
`bench ranking` (one k-sample file, its ranked top-1 against its own samples)."""
import pytest


# --- compare: two eval predictions files, paired --------------------------------------------------

def _predictions(path, rows):
    import json
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _bash_dev(tmp_path):
    """The fixture's Bash pairs as a dev file for `codefusion eval`."""
    from conftest import PAIRS
    return _predictions(tmp_path / "dev.jsonl", [{"id": f"b{i}", "nl": nl, "code": code}
                                                 for i, (nl, code) in enumerate(PAIRS["nl2bash"])])


def _row(id_, syntax, generation="find . -type f -name x", reference="find . -type f -name x"):
    return {"id": id_, "nl": "list", "reference": reference, "generations": [generation],
            "metrics": {"syntax_valid@1": syntax, "exact_match@1": float(generation == reference), "bleu@1": 0.0}}


def test_bench_compare_pairs_rows_by_id_and_counts_flips(tmp_path, capsys):
    """Hand-worked: a 1 -> 1, b 0 -> 1 (gained), c 1 -> 0 (lost), d 1 -> 1; OTHER's file in another order."""
    import json

    from codefusion.cli import main
    base = _predictions(tmp_path / "a.jsonl", [_row("a", 1.0), _row("b", 0.0), _row("c", 1.0), _row("d", 1.0)])
    other = _predictions(tmp_path / "b.jsonl", [_row("d", 1.0), _row("c", 0.0, "ls -l"), _row("b", 1.0),
                                                _row("a", 1.0)])
    assert main(["bench", "compare", str(base), str(other), "--json", "--out", str(tmp_path / "out")]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    syntax = rows["syntax_valid@1"]
    assert (syntax["n"], syntax["base"], syntax["other"], syntax["diff"]) == (4, 0.75, 0.75, 0.0)
    assert (syntax["gained"], syntax["lost"]) == (1, 1) and syntax["diff_ci95"][0] < 0 < syntax["diff_ci95"][1]
    exact = rows["exact_match@1"]
    assert (exact["base"], exact["other"], exact["diff"], exact["gained"], exact["lost"]) == (1.0, 0.75, -0.25, 0, 1)
    # corpus BLEU recomputed from the generations (the stored sentence BLEU of 0 is not what is pooled)
    assert rows["bleu@1"]["base"] == pytest.approx(100.0) and rows["bleu@1"]["diff"] < 0
    assert "gained" not in rows["bleu@1"]
    assert (tmp_path / "out" / "compare.md").read_text().count("| syntax_valid@1 | 4 |") == 1
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["examples"] == 4


def test_bench_compare_top_k_rows_with_fewer_distinct_programs_than_k(tmp_path):
    """generations holds the distinct programs, often fewer than k; gained/lost only for the 0/1 metrics."""
    from codefusion.bench.compare import compare
    base, other = _row("a", 1.0), _row("a", 1.0, "ls -l")
    for row, edit in ((base, 0.0), (other, 1.0)):
        row["metrics"].update({"bleu@3": 0.0, "exact_match@3": row["metrics"]["exact_match@1"],
                               "edit_distance@3": edit})
    table = {r["metric"]: r for r in compare([base], [other])}
    assert table["bleu@3"]["base"] == pytest.approx(100.0) and table["bleu@3"]["other"] == 0.0
    assert (table["exact_match@3"]["gained"], table["exact_match@3"]["lost"]) == (0, 1)
    assert table["edit_distance@3"]["diff"] == 1.0 and "gained" not in table["edit_distance@3"]


def test_bench_compare_columns_equal_each_runs_own_eval(overfit_dir, tmp_path, capsys):
    """BASE and OTHER reproduce the figures `codefusion eval --json` printed for each run, BLEU included."""
    import json

    from codefusion.cli import main
    data = _bash_dev(tmp_path)
    runs = {}
    for name, flags in (("full", []), ("short", ["--max-length", "4"])):  # 4 tokens cut most programs short
        preds = tmp_path / f"pred_{name}.jsonl"
        assert main(["eval", "--model", str(overfit_dir), "--data", str(data), "--lang", "bash", "--steps", "20",
                     *flags, "--predictions", str(preds), "--json"]) == 0
        runs[name] = (preds, json.loads(capsys.readouterr().out)["metrics"])
    assert main(["bench", "compare", str(runs["full"][0]), str(runs["short"][0]), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["rows"]
    assert {r["metric"] for r in table} == set(runs["full"][1])
    assert {r["metric"]: r["diff"] < 0 for r in table}["exact_match@1"]
    for r in table:
        assert r["base"] == pytest.approx(runs["full"][1][r["metric"]], abs=1e-6)
        assert r["other"] == pytest.approx(runs["short"][1][r["metric"]], abs=1e-6)
        assert r["diff"] == pytest.approx(r["other"] - r["base"], abs=1e-5)


@pytest.mark.parametrize("other_rows,message", [
    ([_row("a", 1.0), _row("z", 1.0)], "different rows: 1 only in .*a.jsonl \\(first: 'b'\\); 1 only in .*"
                                       "\\(first: 'z'\\)"),
    ([_row("a", 1.0), _row("a", 1.0)], "repeats id 'a'"),
    ([_row("a", 1.0), _row("b", 1.0, reference="pwd")], "row 'b' has another reference"),
    ("not json\n", "b.jsonl:1 is not JSON"),
    ([{"id": "a"}], "b.jsonl:1 lacks reference, generations, metrics"),
    ("", "holds no rows"),
    (None, "does not exist"),
    ([{**_row("a", 1.0), "metrics": None}], "b.jsonl:1: 'metrics' must map names to numbers"),  # were tracebacks
    ([{**_row("a", 1.0), "metrics": {"exact_match@1": "yes"}}], "'metrics' must map names to numbers"),
    ([{**_row("a", 1.0), "generations": []}], "'generations' must be a non-empty list of strings"),
    ([{**_row("a", 1.0), "id": ["a"]}], "'id' must be a string or an integer"),
    (b"\xff\xfe", "is not UTF-8 text"),
])
def test_bench_compare_bad_input_is_one_line(tmp_path, capsys, other_rows, message):
    import re

    from codefusion.cli import main
    base = _predictions(tmp_path / "a.jsonl", [_row("a", 1.0), _row("b", 0.0)])
    other = tmp_path / "b.jsonl"
    if isinstance(other_rows, list):
        _predictions(other, other_rows)
    elif isinstance(other_rows, bytes):
        other.write_bytes(other_rows)
    elif other_rows is not None:
        other.write_text(other_rows)
    assert main(["bench", "compare", str(base), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


# --- ranking: the ranked top-1 of one k-sample eval file against its own samples -------------------

def _k_row(id_, samples, ranked, reference="ls -l"):
    """A k-sample predictions row: ``samples`` in sample order, ``ranked`` the distinct programs best first."""
    from codefusion.eval.bash import template_match
    from codefusion.eval.metrics import syntax_valid
    top = ranked[0]
    return {"id": id_, "nl": "list", "reference": reference, "generations": ranked, "samples": samples,
            "metrics": {"syntax_valid@1": float(syntax_valid(top, "bash")), "exact_match@1": float(top == reference),
                        "template_match@1": float(template_match(top, reference))}}


def test_bench_ranking_hand_worked(tmp_path, capsys):
    """a: samples (ok, broken, broken), ranked ok first; b: (broken, ok, broken), ranked broken first.
    One sample parses 2 of 6 = 1/3, per sample index (1/2, 1/2, 0); ranked 1/2; paired diff
    ((1 - 1/3) + (0 - 1/3)) / 2 = 1/6; any of k: both rows."""
    import json

    from codefusion.cli import main
    from codefusion.eval.metrics import syntax_valid
    ok, broken = "ls -l", "echo 'a"
    assert syntax_valid(ok, "bash") and not syntax_valid(broken, "bash")
    pred = _predictions(tmp_path / "k.jsonl", [_k_row("a", [ok, broken, broken], [ok, broken]),
                                               _k_row("b", [broken, ok, broken], [broken, ok])])
    assert main(["bench", "ranking", str(pred), "--lang", "bash", "--json", "--out", str(tmp_path / "out")]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {"syntax_valid@1", "exact_match@1", "template_match@1"}
    syntax = rows["syntax_valid@1"]
    assert (syntax["n"], syntax["k"], syntax["ranked"], syntax["any_of_k"]) == (2, 3, 0.5, 1.0)
    assert syntax["one_sample"] == pytest.approx(1 / 3, abs=1e-6)
    assert syntax["per_sample"] == [0.5, 0.5, 0.0]
    assert syntax["diff"] == pytest.approx(1 / 6, abs=1e-6)
    assert syntax["diff_ci95"][0] <= syntax["diff"] <= syntax["diff_ci95"][1]
    exact = rows["exact_match@1"]  # the reference is "ls -l" on both rows
    assert (exact["ranked"], exact["any_of_k"]) == (0.5, 1.0) and exact["one_sample"] == pytest.approx(1 / 3, abs=1e-6)
    assert (tmp_path / "out" / "ranking.md").read_text().count("| syntax_valid@1 | 2 | 3 |") == 1


def test_bench_ranking_reproduces_eval_top1(overfit_dir, tmp_path, capsys):
    """On a real `codefusion eval --num-samples 3` file: ranked equals eval's own @1 figures, and sample 0 is
    the program a one-sample run with the same seed writes."""
    import json

    from codefusion.cli import main
    data = _bash_dev(tmp_path)
    runs = {}
    for k in (1, 3):
        preds = tmp_path / f"pred_k{k}.jsonl"
        assert main(["eval", "--model", str(overfit_dir), "--data", str(data), "--lang", "bash", "--steps", "10",
                     "--num-samples", str(k), "--seed", "5", "--predictions", str(preds), "--json"]) == 0
        runs[k] = (preds, json.loads(capsys.readouterr().out)["metrics"])
    one = [json.loads(line) for line in runs[1][0].read_text().splitlines()]
    three = [json.loads(line) for line in runs[3][0].read_text().splitlines()]
    assert [r["samples"][0] for r in three] == [r["samples"][0] for r in one]
    assert main(["bench", "ranking", str(runs[3][0]), "--lang", "bash", "--json"]) == 0
    table = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    for name, row in table.items():
        assert row["ranked"] == pytest.approx(runs[3][1][name], abs=1e-6)
        assert row["per_sample"][0] == pytest.approx(runs[1][1][name], abs=1e-6)
        assert row["one_sample"] <= row["any_of_k"] and row["ranked"] <= row["any_of_k"]


@pytest.mark.parametrize("rows,lang,message", [
    ([_k_row("a", ["ls -l"], ["ls -l"])], "bash", "k.jsonl holds one sample per row, so there is nothing to rank"),
    ([_k_row("a", ["ls -l", "pwd"], ["ls -l", "pwd"]), _k_row("b", ["ls -l"] * 3, ["ls -l"])], "bash",
     "rows hold different numbers of samples \\(2 at row 'a', 3 at row 'b'\\)"),
    ([{**_k_row("a", ["ls"], ["ls"]), "samples": None}], "bash", "row 'a' has no samples"),
    ([_k_row("a", ["find . -name x", "ls"], ["find . -name x", "ls"])], "python",
     "row 'a' has syntax_valid@1 = 1.0 in the file and 0.0 recomputed with --lang python"),
    ([_k_row("a", ["ls", "pwd"], ["ls", "pwd"])], "sql", "--lang 'sql' is not one of bash, python, cf"),
])
def test_bench_ranking_bad_input_is_one_line(tmp_path, capsys, rows, lang, message):
    import re

    from codefusion.cli import main
    pred = _predictions(tmp_path / "k.jsonl", rows)
    assert main(["bench", "ranking", str(pred), "--lang", lang]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
