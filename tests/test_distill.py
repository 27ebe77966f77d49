"""Sequence-level distillation (``python -m codefusion.train.seq2seq RUN --distill OUT``): which teacher
programs replace a training row's own, and why the others do not."""
import json

import pytest
import torch

from codefusion.errors import DataError
from codefusion.train.data import load_split

from conftest import PAIRS, write_data


def test_distill_keeps_the_reference_where_the_teacher_did_not_finish(tmp_path, overfit_dir):
    """An untrained teacher writes loops that hit the target length: those rows keep their own program."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.distill import distill
    from codefusion.train.seq2seq import Seq2SeqTask
    model, tok, _ = load_checkpoint(overfit_dir)
    task = Seq2SeqTask(model).eval()
    loop = tok.encode_text(["ls"])[0][0]  # a teacher that repeats one token up to the target length
    task.greedy = lambda ids, mask, max_len: torch.full((len(ids), max_len), loop)
    data = write_data(tmp_path / "bash", {"nl2bash": PAIRS["nl2bash"]})
    finished = task.write_finished(tok, [nl for nl, _ in PAIRS["nl2bash"]], ["bash"] * 8)
    assert not any(done for _, done in finished)
    assert distill(task, tok, data, tmp_path / "distilled")["nl2bash"]["unfinished"] == 8
    rows = load_split(str(tmp_path / "distilled"), None, "train")
    assert [r.code for r in rows] == [code for _, code in PAIRS["nl2bash"]]


def test_distill_keeps_the_reference_where_the_teacher_is_wrong(tmp_path, overfit_dir):
    """A teacher program that does not parse, or (CF, with a table) computes other labels than the
    reference, is no target: the row keeps its own. A parsing one replaces it, right or not, where
    nothing can check it (Bash; CF without a table)."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.distill import distill
    from codefusion.train.seq2seq import Seq2SeqTask
    model, tok, _ = load_checkpoint(overfit_dir)
    task = Seq2SeqTask(model).eval()
    table = [["Index", "Value"], [0, ""], [1, "5"], [2, "20"]]
    rows = {"nl2bash": [{"nl": "list all files", "code": "ls -la"}, {"nl": "find txt files", "code": "find . -name '*.txt'"}],
            "cf": [{"nl": "values above 10", "code": "GreaterThan(10)", "data": table, "labels": [0, 0, 0, 1]},
                   {"nl": "values above 5", "code": "GreaterThan(5)", "data": table, "labels": [0, 0, 0, 1]},
                   {"nl": "values above 3", "code": "GreaterThan(3)"}]}
    teacher = {"list all files": "ls -l", "find txt files": "find . -name '*.txt",  # unbalanced quote
               "values above 10": "GreaterThan(2)",  # parses, labels [0, 0, 1, 1]
               "values above 5": "GreaterThan(9)",  # another program, the same labels
               "values above 3": "GreaterThan(30)"}  # no table: nothing to check it against
    task.write_finished = lambda tok, nls, langs, batch=64: [(teacher[nl], True) for nl in nls]
    for name, rs in rows.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    counts = distill(task, tok, tmp_path / "data", tmp_path / "distilled")
    assert counts == {"nl2bash": {"rows": 2, "teacher": 1, "unfinished": 0, "invalid": 1, "wrong": 0, "not_asked": 0,
                                  "written": 2},
                      "cf": {"rows": 3, "teacher": 2, "unfinished": 0, "invalid": 0, "wrong": 1, "not_asked": 0,
                             "written": 3}}
    out = {name: [json.loads(line) for line in (tmp_path / "distilled" / name / "train.jsonl").read_text().splitlines()]
           for name in rows}
    assert [r["code"] for r in out["nl2bash"]] == ["ls -l", "find . -name '*.txt'"]
    assert [r["code"] for r in out["cf"]] == ["GreaterThan(10)", "GreaterThan(9)", "GreaterThan(30)"]
    assert [r["code_ref"] for r in out["cf"]] == ["GreaterThan(10)", "GreaterThan(5)", "GreaterThan(3)"]
    assert out["cf"][0]["data"] == table and out["cf"][0]["labels"] == [0, 0, 0, 1]
    # --keep-wrong (the shipped lineage's phase 11): every finished teacher program is taken
    counts = distill(task, tok, tmp_path / "data", tmp_path / "unchecked", checked=False)
    assert [c["teacher"] for c in counts.values()] == [2, 3]
    taken = (tmp_path / "unchecked" / "cf" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line)["code"] for line in taken] == ["GreaterThan(2)", "GreaterThan(9)", "GreaterThan(30)"]
    # --only nl2bash: CF keeps every row's own program, untouched
    counts = distill(task, tok, tmp_path / "data", tmp_path / "bash_only", only="nl2bash")
    assert counts["cf"] == {"rows": 3, "teacher": 0, "unfinished": 0, "invalid": 0, "wrong": 0, "not_asked": 3,
                            "written": 3}
    kept = [json.loads(line) for line in (tmp_path / "bash_only" / "cf" / "train.jsonl").read_text().splitlines()]
    assert [r["code"] for r in kept] == [r["code"] for r in rows["cf"]]
    assert counts["nl2bash"]["teacher"] == 1
    # --drop-rejected: the refused rows are left out, so every target is the teacher's
    counts = distill(task, tok, tmp_path / "data", tmp_path / "dropped", drop=True)
    assert [(c["rows"], c["written"]) for c in counts.values()] == [(2, 1), (3, 2)]
    dropped = {name: [json.loads(line) for line in (tmp_path / "dropped" / name / "train.jsonl").read_text().splitlines()]
               for name in rows}
    assert [r["code"] for r in dropped["nl2bash"]] == ["ls -l"]
    assert [(r["code"], r["code_ref"]) for r in dropped["cf"]] == [("GreaterThan(9)", "GreaterThan(5)"),
                                                                  ("GreaterThan(30)", "GreaterThan(3)")]
    with pytest.raises(DataError, match="--only names conala, which"):
        distill(task, tok, tmp_path / "data", tmp_path / "absent", only="conala")


def test_distill_never_writes_over_the_data_or_an_earlier_copy(tmp_path, overfit_dir, capsys):
    from codefusion.train.seq2seq import main
    data = write_data(tmp_path / "bash", {"nl2bash": PAIRS["nl2bash"]})
    before = (data / "nl2bash" / "train.jsonl").read_text()
    earlier = write_data(tmp_path / "earlier", {"nl2bash": PAIRS["nl2bash"][:2]})
    for out, message in ((data, "writes a copy of --data"), (earlier, "already holds a data folder")):
        with pytest.raises(SystemExit):
            main([str(overfit_dir), "--data", str(data), "--distill", str(out)])
        assert message in capsys.readouterr().err
    assert (data / "nl2bash" / "train.jsonl").read_text() == before
