"""What train refuses, and when: bad options before any data is read, bad data with its file and line, a --out
that holds files of its own; and the CLI's tokenizer and train commands."""
import json
import subprocess
import sys

import pytest

from codefusion.cli import main
from codefusion.errors import CodeFusionError, DataError
from codefusion.train.config import TrainConfig
from codefusion.train.data import load_split
from codefusion.train.trainer import train

from conftest import train_config


@pytest.mark.parametrize("kw, message", [
    (dict(minutes=-1), "--minutes must be > 0, got -1"), (dict(max_steps=0), "--max-steps must be at least 1"),
    (dict(batch_size=0), "--batch-size must be at least 1"), (dict(lr=-1.0), "--lr must be > 0"),
    (dict(warmup=-3), "--warmup must be ≥ 0"), (dict(task="length", resume=True), "has no --resume"),
    (dict(dev_steps=0), "--dev-steps must be an integer in 1..1200, got 0"),  # failed after training, run lost
    (dict(dev_steps=5000), "--dev-steps must be an integer in 1..1200"),
    (dict(dev_every=-1), "--dev-every must be ≥ 0"), (dict(dev_rows=-3), "--dev-rows must be ≥ 0"),
    (dict(seed=10 ** 20), r"--seed must be in −2\^63\.\.2\^63"),
    (dict(out="{tmp}/a-file/sub"), "is not a writable directory"),  # a traceback after all the set-up
    (dict(init="{tmp}", tokenizer="{tmp}/tok.json"), "--tokenizer starts a fresh model"),  # silently ignored
    (dict(task="length", init="{tmp}", minutes=1.0), "takes no --minutes"),
    (dict(repeat="cf=2,cf=3"), "--repeat names cf twice"),
])
def test_bad_numbers_are_refused_before_any_data_is_read(tmp_path, kw, message):
    (tmp_path / "a-file").write_text("")
    kw = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises(CodeFusionError, match=message):
        train(train_config(tmp_path, tmp_path / "no-data", **kw))


def test_a_fresh_run_never_overwrites_files_in_out(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "tokenizer.json").write_text("my tokenizer")
    with pytest.raises(CodeFusionError, match="already holds tokenizer.json .* remove it or choose another --out"):
        train(train_config(tmp_path, tmp_path / "no-data", out=str(out)))
    assert (out / "tokenizer.json").read_text() == "my tokenizer"


def test_empty_split_and_non_text_nl_are_data_errors(tmp_path, data_dir):
    bad = tmp_path / "bad"
    (bad / "cf").mkdir(parents=True)
    (bad / "cf" / "train.jsonl").write_text("")
    (bad / "cf" / "pretrain.jsonl").write_text(json.dumps({"code": "Top(1)", "nl": 5}) + "\n")
    with pytest.raises(DataError, match="train.jsonl holds no rows"):
        load_split(bad, "cf", "train")
    with pytest.raises(DataError, match="pretrain.jsonl:1: field 'nl' is not a string"):
        load_split(bad, "cf", "pretrain")


def _bad_data(tmp_path, data_dir):
    bad = tmp_path / "bad"
    (bad / "cf").mkdir(parents=True)
    good = (data_dir / "cf" / "train.jsonl").read_text().splitlines()
    lines = [good[0], '{"nl": "x", "code": ', good[1], '{"nl": "y"}', "[1, 2]", good[2]]
    data = "\n".join(lines).encode() + b'\n{"nl": "z", "code": "\xff"}\n'
    (bad / "cf" / "train.jsonl").write_bytes(data)
    return bad


def test_malformed_line_stops_with_file_and_line(tmp_path, data_dir):
    bad = _bad_data(tmp_path, data_dir)
    with pytest.raises(DataError, match=r"cf/train.jsonl:2: not valid JSON .*--on-bad-line skip"):
        load_split(bad, "cf", "train")


def test_malformed_lines_skipped_when_asked(tmp_path, data_dir, capsys):
    rows = load_split(_bad_data(tmp_path, data_dir), "cf", "train", on_bad_line="skip")
    assert len(rows) == 3 and all(r.lang == "cf" for r in rows)
    err = capsys.readouterr().err
    assert ("train.jsonl:2:" in err and "train.jsonl:4: field 'code'" in err
            and "train.jsonl:5: not a JSON object" in err)
    assert "train.jsonl:7: not UTF-8" in err


def test_data_selection_errors(tmp_path, data_dir):
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "nowhere", None, "train")
    with pytest.raises(DataError, match="unknown dataset 'spider'"):
        load_split(data_dir, "nl2bash,spider", "train")
    with pytest.raises(DataError, match="names 'cf' twice"):
        load_split(data_dir, "cf,nl2bash,cf", "train")
    assert {e.lang for e in load_split(data_dir, None, "train")} == {"bash", "python", "cf"}


def test_the_cli_parser_with_its_train_options_imports_no_torch():
    """`codefusion --help` and the commands that never train stay quick to start: the train options are declared
    without importing torch or transformers (train/arguments.py), their checks (train/options.py) run in train."""
    code = ("import sys, codefusion.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_cli_tokenizer_and_train(tmp_path, data_dir, capsys):
    tok = tmp_path / "tok.json"
    assert main(["tokenizer", "--data", str(data_dir), "--vocab-size", "300", "--out", str(tok)]) == 0
    assert main(["train", "--preset", "tiny", "--data", str(data_dir), "--datasets", "cf", "--out", str(tmp_path / "r"),
                 "--tokenizer", str(tok), "--max-steps", "3", "--batch-size", "2", "--dev-rows", "0",
                 "--dtype", "float32"]) == 0
    assert (tmp_path / "r" / "model.safetensors").is_file()
    assert main(["train", "--preset", "huge", "--data", str(data_dir), "--out", str(tmp_path / "r2")]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--data", str(data_dir), "--out", str(tmp_path / "r3")]) == 2
    assert "give the run a length" in capsys.readouterr().err


def test_no_row_fits_the_target_length(tmp_path):
    from conftest import write_data

    data = write_data(tmp_path / "long", {"nl2bash": [("long", "echo " + "x " * 200)]})
    with pytest.raises(DataError, match="no training row fits"):
        train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "r"), max_steps=1, dev_rows=0))


def test_bad_noise_clipping_is_refused(tmp_path):
    with pytest.raises(CodeFusionError, match="--t-min is a fraction of T"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, t_min=1.0))
    with pytest.raises(CodeFusionError, match="--t-min-share is a probability"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, t_min_share=2))


def test_bad_t_sampling_is_refused(tmp_path):
    with pytest.raises(CodeFusionError, match="--t-sampling must be uniform or high"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, t_sampling="low"))


@pytest.mark.parametrize("spec", ["cf", "cf=0", "cf=1.5", "spider=2", "cf=2,,"])
def test_bad_repeat_is_refused_before_any_data_is_read(tmp_path, spec):
    with pytest.raises(CodeFusionError, match="--repeat takes DATASET=TIMES"):
        train(TrainConfig(preset="tiny", data=str(tmp_path / "absent"), out=str(tmp_path / "o"), max_steps=1,
                          repeat=spec))
    with pytest.raises(CodeFusionError, match="drop it for --task pretrain"):
        train(TrainConfig(preset="tiny", data=str(tmp_path / "absent"), out=str(tmp_path / "o"), max_steps=1,
                          task="pretrain", repeat="cf=2"))


def test_an_unpaired_surrogate_is_a_bad_line(tmp_path):
    """JSON can escape a lone surrogate; the tokenizer then failed with a traceback, past --on-bad-line."""
    from codefusion.train.data import read_jsonl

    path = tmp_path / "s.jsonl"
    path.write_text('{"nl": "\\ud800 x", "code": "GreaterThan(1)"}\n{"nl": "ok", "code": "LessThan(2)"}\n')
    with pytest.raises(DataError, match=r"s.jsonl:1: field 'nl' holds an unpaired surrogate"):
        read_jsonl(path, "stop")
    assert read_jsonl(path, "skip") == [{"nl": "ok", "code": "LessThan(2)"}]


def test_pretraining_keeps_each_program_once_as_exact_match_tells_them_apart():
    """Whitespace that carries meaning keeps two programs apart (Python's indentation, text inside quotes); the
    rest does not (a re-indented block, `ls  -l`)."""
    from codefusion.train.data import Example, unique_programs

    codes = [("python", "for x in y:\n    f(x)\n    g(x)"), ("python", "for x in y:\n    f(x)\ng(x)"),
             ("python", "for x in y:\n  f(x)\n  g(x)"), ("bash", 'echo "a  b"'), ("bash", 'echo "a b"'),
             ("bash", "ls -l | wc"), ("bash", "ls  -l |  wc"), ("cf", "GreaterThan(1)"), ("bash", "GreaterThan(1)")]
    kept, dropped = unique_programs([Example(str(i), "", code, lang) for i, (lang, code) in enumerate(codes)])
    assert [e.id for e in kept] == ["0", "1", "3", "4", "5", "7", "8"] and dropped == 2


def test_warm_up_of_a_run_bounded_by_minutes_alone_ends_by_a_tenth_of_its_time():
    """With --minutes, warm-up rises with time as well and ends by 10% of the budget (a short run ended before the
    rate ever rose: lr 4e-05 of 5e-4 at its last step); with --max-steps alone it is as before."""
    import math
    from types import SimpleNamespace

    from codefusion.train.optim import lr_at

    timed = SimpleNamespace(lr=1.0, warmup=500, max_steps=None, minutes=1.0)
    assert lr_at(timed, 10, 0.05) == pytest.approx(0.5)  # half of the first tenth of the time
    assert lr_at(timed, 10, 0.2) == pytest.approx(0.5 * (1 + math.cos(0.2 * math.pi)))  # cosine from there
    assert lr_at(timed, 249, 0.01) == pytest.approx(0.5)  # by steps, where they come first
    counted = SimpleNamespace(lr=1.0, warmup=50, max_steps=1000, minutes=None)
    assert lr_at(counted, 10, 0.9) == pytest.approx(11 / 50) and lr_at(counted, 49, 0.05) == 1.0
    both = SimpleNamespace(lr=1.0, warmup=500, max_steps=100_000, minutes=1.0)  # the time ends it first
    assert lr_at(both, 10, 0.05) == pytest.approx(0.5) and lr_at(both, 10, 0.99) < 1e-3
