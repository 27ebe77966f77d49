"""The step-time probe runs and reports what it says (no timing assertions: benchmarks are not tests)."""
import json

import pytest

from codefusion.bench.steptime import environment, time_steps


def test_steptime_row():
    row = time_steps("tiny", "reference", "float32", batch=2, n=16, device="cpu", warmup=1, timed=2)
    assert (row["preset"], row["batch"], row["n"], row["timed_steps"]) == ("tiny", 2, 16, 2)
    assert 0 < row["ms_per_step_p10"] <= row["ms_per_step_p50"] <= row["ms_per_step_p90"]
    assert set(environment()) == {"machine", "cpu", "cpu_flags", "cpus", "threads", "torch", "python", "commit"}


def test_bench_parity_cli_torch_fp32_matches_reference(tmp_path, capsys):
    import json

    from codefusion.cli import main
    assert main(["bench", "parity", "--preset", "tiny", "--dtype", "float32", "--steps", "8", "--out",
                 str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert (row["backend"], row["dtype"], row["steps"], row["prompts"]) == ("torch", "float32", 8, 8)
    assert row["max_abs_err"] <= 1e-5 and row["token_agreement"] == 1.0 and row["program_agreement"] == 1.0
    assert 0 <= row["max_step_err"] <= 1e-5
    saved = json.loads((tmp_path / "parity.json").read_text())
    assert saved["rows"] == [row] and saved["environment"]["commit"]
    assert "| torch | cpu | float32 |" in (tmp_path / "parity.md").read_text()


def test_parity_one_step_error_starts_from_the_reference_state(tiny_model, tokenizer):
    """An engine whose x_t drifts after every step but whose x̂0 is exact: the free-running error grows
    with the drift, the one-step error (each step from the reference's state) stays 0."""
    from dataclasses import replace

    import torch

    from codefusion.backends import get_backend
    from codefusion.bench.parity import _lockstep
    from codefusion.diffusion.schedule import NoiseSchedule
    from codefusion.diffusion.solvers import step_table

    ref = get_backend("reference")(tiny_model, torch.device("cpu"), torch.float32)

    class Drifting(type(ref)):
        def step(self, state, i):
            out = super().step(state, i)
            return replace(out, x_t=out.x_t + 1e-2)

    drifting = Drifting(tiny_model, torch.device("cpu"), torch.float32)
    table = step_table(NoiseSchedule.sqrt().respace(6), "ddpm")
    worst, step_worst, _, _, _ = _lockstep(ref, [drifting], tokenizer, ["list all files"], "bash", 16, table,
                                           [table], seed=0, k=1)
    assert worst[0] > 1e-4 and step_worst[0] == 0.0


def test_parity_decided_agreement_leaves_out_the_reference_near_ties(tiny_model, tokenizer):
    """decided_agreement counts the positions whose reference top-2 logit margin is at least margin_eps: all of
    them at 0 (then it is token_agreement), none above every margin (then there is nothing to judge)."""
    from codefusion.bench.parity import parity

    rows = {eps: parity(tiny_model, tokenizer, ["list all files", "sum a list"], "bash", ["torch"], ["bfloat16"],
                        steps=3, n=16, progress=False, margin_eps=eps)[0] for eps in (0.0, 1e9)}
    assert rows[0.0]["near_ties"] == 0 and rows[0.0]["decided_agreement"] == rows[0.0]["token_agreement"]
    assert rows[1e9]["near_ties"] == 2 * 16 and rows[1e9]["decided_agreement"] is None


def test_bench_latency_rows_and_plot(tmp_path, capsys):
    import json

    from codefusion.cli import main
    assert main(["bench", "latency", "--preset", "tiny", "--backend", "torch", "--dtype", "float32", "--batch", "1,2",
                 "--steps", "3", "--repeats", "2", "--out", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["batch"], r["steps"]) for r in rows] == [(1, 3), (2, 3)]
    for r in rows:
        assert 0 < r["ms_per_step_p50"] <= r["ms_per_step_p90"] and r["total_ms_p50"] <= r["total_ms_p90"]
        assert r["cold_start_ms"] > 0 and r["gflop_per_step"] > 0 and r["n"] == 32
    assert rows[1]["gflop_per_step"] > rows[0]["gflop_per_step"]
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_latency_runs_the_models_own_sampler(tmp_path, capsys, tiny_model, tokenizer):
    """A checkpoint whose config.json makes "decode" its default is timed with it, as `generate` runs it (the
    decoder pass counts in the step's cost); --clamp none times the reference sampler instead."""
    import json

    from codefusion.checkpoint import save_checkpoint
    from codefusion.cli import main
    ckpt = save_checkpoint(tmp_path / "ck", tiny_model, tokenizer)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "generation": {"clamp": "decode"}}))
    rows = {}
    for clamp in ([], ["--clamp", "none"]):
        assert main(["bench", "latency", "--model", str(ckpt), "--backend", "torch", "--dtype", "float32",
                     "--batch", "1", "--steps", "2", "--repeats", "1", "--max-length", "16", "--out", str(tmp_path),
                     "--json", "--force", *clamp]) == 0
        (row,) = json.loads(capsys.readouterr().out)["rows"]
        rows[row["clamp"]] = row
    assert set(rows) == {"decode", "none"} and rows["decode"]["gflop_per_step"] > rows["none"]["gflop_per_step"]


def test_bench_bad_flag_is_one_line(capsys, tmp_path):
    from codefusion.cli import main
    empty, afile = tmp_path / "empty.jsonl", tmp_path / "afile"
    empty.write_text("")
    afile.write_text("keep")
    badline = tmp_path / "badline.jsonl"
    badline.write_text('{"nl": "a", "code": "b"}\nnot json\n')
    quick = ["--preset", "tiny", "--steps", "2", "--repeats", "1"]
    cases = [(["latency", "--preset", "tiny", "--batch", "1,x"], "expected comma-separated integers"),
             (["parity", "--preset", "tiny", "--steps", "3,50"], "runs one --steps and one --batch"),
             (["parity", "--preset", "tiny", "--steps", ","], "--steps needs a step count"),
             (["latency", *quick, "--data", str(tmp_path / "nofile.jsonl")], "is not a file"),
             (["latency", *quick, "--data", str(empty)], "holds no rows"),
             (["latency", *quick, "--limit", "-1"], "--limit must be at least 1"),
             (["latency", *quick, "--out", str(afile)], "is a file: choose a directory"),
             (["latency", *quick, "--backend", "torch,onnxruntime", "--dtype", "float32,bfloat16", "--out",
               str(tmp_path / "ort")],
              "not torch.bfloat16: use --dtype float32"),
             (["serve", "--preset", "tiny", "--steps", "2", "--concurrency", "1", "--requests", "1", "--url",
               "http://127.0.0.1:9", "--out", str(tmp_path / "s")], "cannot reach http://127.0.0.1:9"),
             # the interpreter's times are not the kernels'
             (["latency", *quick, "--backend", "triton", "--device", "cpu"], "would time Triton's interpreter"),
             (["parity", "--preset", "tiny", "--steps", "2", "--margin-eps", "nan"], "a finite number ≥ 0, got nan"),
             (["serve", "--preset", "tiny", "--steps", "2", "--max-wait-ms", "nan"],  # a batch never closed
              "--max-wait-ms and --quiet-ms must be finite and ≥ 0, got nan"),
             (["quality", "--preset", "tiny", "--data", str(tmp_path), "--lang", "bash"], "is not a file"),
             (["quality", "--preset", "tiny", "--data", str(empty), "--lang", "bash", "--steps", ","],
              "--steps, --solver and --clamp each need at least one value"),
             (["trajectory", "--preset", "tiny", "--data", str(tmp_path / "nofile.jsonl"), "--lang", "bash"],
              "is not a file"),
             (["quality", "--preset", "tiny", "--data", str(badline), "--lang", "bash"],
              "badline.jsonl:2: not valid JSON (Expecting value at column 1); fix the line\n"),  # no such flag
             (["quality", "--preset", "tiny", "--data", str(badline), "--lang", "bash", "--batch", "0"],
              "--limit and --batch must be at least 1")]
    for argv, message in cases:
        assert main(["bench", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, err
    assert afile.read_text() == "keep"
    assert not (tmp_path / "latency.json").exists()


def test_bench_keeps_an_earlier_runs_results_unless_forced(tmp_path, capsys):
    from codefusion.cli import main
    args = ["bench", "latency", "--preset", "tiny", "--backend", "torch", "--dtype", "float32", "--batch", "1",
            "--steps", "2", "--repeats", "1", "--out", str(tmp_path)]
    (tmp_path / "latency.png").write_text("an old plot")
    assert main(args) == 2
    assert "latency.png holds an earlier run's results: pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert (tmp_path / "latency.json").is_file() and not (tmp_path / "latency.png").exists()  # no stale plot left


def test_bench_latency_limit_takes_the_first_built_in_prompts(tmp_path, capsys):
    from codefusion.cli import main
    assert main(["bench", "latency", "--preset", "tiny", "--backend", "torch", "--dtype", "float32", "--batch", "1",
                 "--steps", "2", "--repeats", "1", "--limit", "2", "--solver", "ddim", "--out", str(tmp_path),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompts"] == 2 and out["solver"] == "ddim" and out["rows"][0]["solver"] == "ddim"
    assert "| solver |" in (tmp_path / "latency.md").read_text()


def test_paired_difference_and_interval():
    from codefusion.bench.quality import paired
    base = [{"exact_match@1": v} for v in (1, 1, 0, 0, 1, None)]
    other = [{"exact_match@1": v} for v in (1, 0, 0, 0, 1, 1)]
    diff, (lo, hi) = paired(base, other, "exact_match@1")
    assert diff == -0.2 and lo <= diff <= hi and lo >= -0.6 and hi == 0.0  # row 5 lacks a base value
    same, interval = paired(base, base, "exact_match@1")
    assert same == 0.0 and interval == [0.0, 0.0]
    assert paired(base, other, "template_match@1") is None


def test_bench_quality_paired_rows_and_plot(overfit_dir, data_dir, tmp_path, capsys):
    import json

    from codefusion.cli import main
    assert main(["bench", "quality", "--model", str(overfit_dir), "--data", str(data_dir / "nl2bash" / "dev.jsonl"),
                 "--lang", "bash", "--steps", "40,4", "--solver", "ddpm,ddim", "--clamp", "none,decode",
                 "--length-quantile", "0.5", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    labels = [(r["solver"], r["steps"], r.get("clamp", "none"), r["variant"]) for r in rows]
    assert labels == [("ddpm", 40, "none", "baseline"), ("ddpm", 4, "none", ""), ("ddpm", 40, "decode", ""),
                      ("ddpm", 4, "decode", ""), ("ddpm", 40, "none", "early_exit"), ("ddim", 40, "none", ""),
                      ("ddim", 4, "none", ""), ("ddim", 40, "decode", ""), ("ddim", 4, "decode", ""),
                      ("ddim", 40, "none", "early_exit"), ("ddpm", 40, "none", "length=32"),
                      ("ddpm", 40, "none", "length_quantile=0.5")]
    base = rows[0]
    assert base["n"] == 8 and "diff_exact_match@1" not in base and out["baseline"] == "ddpm, 40 steps"
    for r in rows[1:]:  # paired over the same 8 rows: the difference of means is the difference
        assert abs(r["diff_exact_match@1"] - (r["exact_match@1"] - base["exact_match@1"])) < 1e-6
        lo, hi = r["diff_ci95_syntax_valid@1"]
        assert lo <= r["diff_syntax_valid@1"] <= hi
    assert (tmp_path / "quality_bash.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ddpm | 40 | none | baseline | 8 |" in (tmp_path / "quality_bash.md").read_text()


@pytest.mark.parametrize("main_model", ["same", "random"])
def test_bench_quality_pairs_two_models(overfit_dir, data_dir, tmp_path, capsys, main_model):
    """--baseline-model runs the baseline row on another checkpoint and this model's same configuration after
    it: against itself every difference is exactly 0; random weights lose the pairs the fixture reproduces."""
    import json

    from codefusion.cli import main
    chosen = ["--model", str(overfit_dir)] if main_model == "same" else ["--preset", "tiny"]
    assert main(["bench", "quality", *chosen, "--baseline-model", str(overfit_dir), "--data",
                 str(data_dir / "nl2bash" / "dev.jsonl"), "--lang", "bash", "--steps", "8", "--solver", "ddim",
                 "--no-early-exit", "--no-length", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    base, row, ddim = out["rows"]  # this model also runs the baseline's sampler (ddpm), though --solver omits it
    assert [(r["solver"], r["steps"], r["variant"]) for r in out["rows"]] == [
        ("ddpm", 8, "baseline_model"), ("ddpm", 8, ""), ("ddim", 8, "")]
    assert out["baseline"] == f"ddpm, 8 steps, model {overfit_dir}"
    assert base["exact_match@1"] > 0.5
    if main_model == "same":
        for name in ("exact_match@1", "syntax_valid@1", "template_match@1", "bleu@1"):
            assert row[name] == base[name] and row[f"diff_{name}"] == 0.0, name
    else:
        assert row["diff_exact_match@1"] == row["exact_match@1"] - base["exact_match@1"] < 0
        assert row["diff_ci95_exact_match@1"][1] < 0


def test_bench_quality_bad_input_is_one_line(data_dir, capsys, tmp_path):
    from codefusion.cli import main
    assert main(["bench", "quality", "--preset", "tiny", "--data", str(data_dir / "nl2bash" / "dev.jsonl"),
                 "--solver", "euler"]) == 2
    assert "unknown solver 'euler'" in capsys.readouterr().err
    assert main(["bench", "quality", "--preset", "tiny", "--data", str(data_dir / "nl2bash" / "dev.jsonl"),
                 "--clamp", "none,round"]) == 2
    assert "clamp must be one of none, nearest, decode" in capsys.readouterr().err
    assert main(["bench", "quality", "--preset", "tiny", "--data", str(data_dir / "nl2bash" / "dev.jsonl"),
                 "--length-quantile", "0.5,1.5"]) == 2
    assert "--length-quantile values must lie in (0, 1)" in capsys.readouterr().err
    assert main(["bench", "quality", "--preset", "tiny", "--data", str(data_dir / "nl2bash" / "dev.jsonl"),
                 "--baseline-model", str(data_dir / "no_such_model"), "--out", str(tmp_path)]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_bench_serve_counts_every_answer(tmp_path, capsys):
    import json

    from codefusion.cli import main
    assert main(["bench", "serve", "--preset", "tiny", "--dtype", "float32", "--steps", "3", "--concurrency", "1,4",
                 "--requests", "8", "--lang", "mix", "--out", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    rows = out["rows"]
    assert out["lang"] == "mix" and out["quiet_ms"] == 10.0 and out["clamp"] == "none"
    assert "start `codefusion serve` and pass --url" in captured.err  # the in-process figures say what they are
    assert [r["concurrency"] for r in rows] == [1, 4]
    for r in rows:
        assert (r["ok"], r["errors"], r["lost"], r["duplicated"], r["mismatched"]) == (8, 0, 0, 0, 0)
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["throughput_rps"] > 0 and r["requests_per_batch"] >= 1
    assert rows[0]["requests_per_batch"] == 1.0 and rows[0]["speedup_vs_first"] == 1.0
    assert (tmp_path / "serve.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_serve_drives_a_server_running_apart(tmp_path, capsys):
    """--url: the load generator talks to a server it did not start, and records that server's settings."""
    import json

    import torch

    from codefusion import CodeFusion
    from codefusion.cli import main
    from codefusion.config import get_preset
    from codefusion.model import CodeFusionModel
    from codefusion.tokenizer import CodeTokenizer
    from codefusion.bench.serve import _start_in_process

    torch.manual_seed(0)
    model = CodeFusionModel(get_preset("tiny")).eval()
    tok = CodeTokenizer.train(["ls -la", "find . -name x", "print(1)", "list files"] * 20, 512)
    url, stop = _start_in_process(CodeFusion(model, tok, "torch"), max_batch=8, max_wait_ms=5)
    try:
        assert main(["bench", "serve", "--preset", "tiny", "--url", url, "--steps", "2", "--concurrency", "2",
                     "--requests", "4", "--out", str(tmp_path), "--json"]) == 0
    finally:
        stop()
    out = json.loads(capsys.readouterr().out)
    assert out["server"] == "separate process" and out["max_batch"] == 8 and out["max_wait_ms"] == 5
    (row,) = out["rows"]
    assert (row["ok"], row["lost"], row["duplicated"], row["mismatched"]) == (4, 0, 0, 0)


def test_bench_trajectory_scores_x0_along_the_loop(overfit_dir, data_dir, tmp_path, capsys):
    """x̂0 decoded at chosen steps and scored like an output: at the last step it is the output, so its figures
    equal `codefusion eval`'s; a second model runs on the same rows, first."""
    import json

    from codefusion import CodeFusion, GenerationConfig
    from codefusion.cli import main
    from codefusion.eval.evaluate import evaluate
    from codefusion.train.data import read_jsonl
    dev = data_dir / "nl2bash" / "dev.jsonl"
    assert main(["bench", "trajectory", "--preset", "tiny", "--baseline-model", str(overfit_dir), "--data",
                 str(dev), "--lang", "bash", "--steps", "40", "--at", "40,1,20", "--batch", "3", "--out",
                 str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["step"]) for r in out["rows"]] == [
        (str(overfit_dir), 1), (str(overfit_dir), 20), (str(overfit_dir), 40),
        ("preset:tiny", 1), ("preset:tiny", 20), ("preset:tiny", 40)]
    assert [r["timestep"] for r in out["rows"][:3]] == [1199, 615, 0]  # 40 steps respaced over T = 1200
    final = evaluate(CodeFusion.from_pretrained(overfit_dir, backend="torch", dtype="bfloat16"),
                     read_jsonl(dev), "bash", GenerationConfig(lang="bash", steps=40, seed=0), progress=False)
    overfit_end, random_end = out["rows"][2], out["rows"][5]
    for name in ("exact_match@1", "syntax_valid@1", "template_match@1", "bleu@1"):
        assert overfit_end[name] == final.metrics[name], name
    assert overfit_end["exact_match@1"] > 0.5 and random_end["exact_match@1"] < overfit_end["exact_match@1"]
    lo, hi = overfit_end["ci95_syntax_valid@1"]
    assert lo <= overfit_end["syntax_valid@1"] <= hi
    assert (tmp_path / "trajectory_bash.png").read_bytes()[:4] == b"\x89PNG"
    assert f"| {overfit_dir} | 40 | 0 | 8 |" in (tmp_path / "trajectory_bash.md").read_text()


def test_bench_trajectory_bad_input_is_one_line(data_dir, capsys):
    from codefusion.cli import main
    dev = str(data_dir / "nl2bash" / "dev.jsonl")
    assert main(["bench", "trajectory", "--preset", "tiny", "--data", dev, "--steps", "10", "--at", "5,11"]) == 2
    assert "trace_steps must be step counts in 1..10, got 11" in capsys.readouterr().err
    assert main(["bench", "trajectory", "--preset", "tiny", "--data", dev, "--limit", "0"]) == 2
    assert "--limit and --batch must be at least 1" in capsys.readouterr().err
    assert main(["bench", "trajectory", "--preset", "tiny", "--data", dev, "--at", "1,x"]) == 2
    assert "expected comma-separated integers" in capsys.readouterr().err


def test_ctrl_c_during_a_bench_run_is_one_line_and_130(monkeypatch, capsys):
    """bench (and export) parse and run their own commands: Ctrl-C there ended in an 85-line traceback, exit 1."""
    from codefusion import cli
    from codefusion.bench import cli as bench_cli

    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(bench_cli, "main", interrupted)
    assert cli.main(["bench", "latency", "--preset", "tiny"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_bench_quality_names_what_exec_match_counts(tmp_path, capsys):
    """A CF row's exec_match is computed on the rows the interpreter can run: the row says on how many
    (n_exec_match@1), and the record carries what a rule that ignores its table scores there."""
    import json

    from codefusion.cli import main
    table = [["Index", "Value"], [0, "1"], [1, "5"]]
    rows = [{"nl": "above 2", "code": "GreaterThan(2)", "data": table, "labels": [0, 0, 1]},
            {"nl": "above 0", "code": "GreaterThan(0)", "data": table, "labels": [0, 1, 1]},
            {"nl": "below 3", "code": "LessThan(3)"}]
    data = tmp_path / "cf.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["bench", "quality", "--preset", "tiny", "--data", str(data), "--lang", "cf", "--steps", "2",
                 "--solver", "ddpm", "--no-early-exit", "--no-length", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["n"] == 3 and out["rows"][0]["n_exec_match@1"] == 2
    assert "a rule that ignores its table matches 1 (50.0%) of those rows" in out["notes"][0]
