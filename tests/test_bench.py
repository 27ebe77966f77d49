"""The step-time probe runs and reports what it says (no timing assertions: benchmarks are not tests)."""
from codefusion.bench.steptime import environment, time_steps


def test_steptime_row():
    row = time_steps("tiny", "reference", "float32", batch=2, n=16, device="cpu", warmup=1, timed=2)
    assert (row["preset"], row["batch"], row["n"], row["timed_steps"]) == ("tiny", 2, 16, 2)
    assert 0 < row["ms_per_step_p10"] <= row["ms_per_step_p50"] <= row["ms_per_step_p90"]
    assert set(environment()) == {"machine", "cpus", "torch", "python", "commit"}


def test_bench_parity_cli_torch_fp32_matches_reference(tmp_path, capsys):
    import json

    from codefusion.cli import main
    assert main(["bench", "parity", "--preset", "tiny", "--dtype", "float32", "--steps", "8", "--out",
                 str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert (row["backend"], row["dtype"], row["steps"], row["prompts"]) == ("torch", "float32", 8, 8)
    assert row["max_abs_err"] <= 1e-5 and row["token_agreement"] == 1.0 and row["program_agreement"] == 1.0
    saved = json.loads((tmp_path / "parity.json").read_text())
    assert saved["rows"] == [row] and saved["environment"]["commit"]
    assert "| torch | cpu | float32 |" in (tmp_path / "parity.md").read_text()


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


def test_bench_bad_flag_is_one_line(capsys):
    from codefusion.cli import main
    assert main(["bench", "latency", "--preset", "tiny", "--batch", "1,x"]) == 2
    assert "expected comma-separated integers" in capsys.readouterr().err
