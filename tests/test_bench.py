"""The step-time probe runs and reports what it says (no timing assertions: benchmarks are not tests)."""
from codefusion.bench.steptime import environment, time_steps


def test_steptime_row():
    row = time_steps("tiny", "reference", "float32", batch=2, n=16, device="cpu", warmup=1, timed=2)
    assert (row["preset"], row["batch"], row["n"], row["timed_steps"]) == ("tiny", 2, 16, 2)
    assert 0 < row["ms_per_step_p10"] <= row["ms_per_step_p50"] <= row["ms_per_step_p90"]
    assert set(environment()) == {"machine", "cpus", "torch", "python", "commit"}
