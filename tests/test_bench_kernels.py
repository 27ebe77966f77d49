"""`codefusion bench kernels`: the rows it reports, the implementations behind them (each checked against the fp32
oracle, so a wrong layout or argument shows as an error), and its bad input. No timing assertions."""
import json

import pytest
import torch

from codefusion.bench.kernels import _cpp_built, bench_kernels
from codefusion.cli import main
from codefusion.config import get_preset

ATTENTION = ["sdpa", "sdpa+merge", "eager"]


def _by(rows, batch):
    table = {}
    for r in rows:
        if r["batch"] == batch:
            table.setdefault(r["kernel"], []).append(r["impl"])
    return table


def test_cli_rows_on_cpu(tmp_path, capsys):
    assert main(["bench", "kernels", "--preset", "tiny", "--dtype", "float32", "--batch", "1,3", "--repeats", "2",
                 "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows, solver = out["rows"], (["cpp", "torch+cpp-philox"] if _cpp_built() else []) + ["eager"]
    assert out["suite"] == "kernels" and out["preset"] == "tiny"
    for batch in (1, 3):
        assert _by(rows, batch) == {"self_attention": ATTENTION, "cross_attention_masked": ATTENTION,
                                    "add_layernorm": ["eager"], "add_layernorm_pos_time": ["eager"],
                                    "solver_step": solver}
    for r in rows:
        assert r["device"] == "cpu" and r["dtype"] == "float32" and 0 < r["us_p10"] <= r["us_p50"] <= r["us_p90"]
        first = r["impl"] == _by(rows, r["batch"])[r["kernel"]][0]
        assert ("fused_speedup" in r) != first and "graph_us_p50" not in r  # no CUDA graphs on CPU
        exact = r["impl"] == "eager" or r["impl"] == "torch+cpp-philox"  # the oracle's own arithmetic in fp32
        assert r["max_abs_err"] == 0 if exact else r["max_abs_err"] <= 1e-5, r
    saved = json.loads((tmp_path / "kernels.json").read_text())
    assert saved["rows"] == rows and "| solver_step | 3 | eager | cpu | float32 |" in (tmp_path / "kernels.md").read_text()


def test_triton_rows_are_wired_like_the_oracle():
    """The GPU rows, run by Triton's interpreter here: each kernel's output, in the layout the suite reads it,
    equals the fp32 oracle (fp32 inputs), and it is the case's fused implementation."""
    rows = bench_kernels(get_preset("tiny"), torch.device("cpu"), torch.float32, [2], reps=1, n=19, progress=False,
                         triton=True)
    table = _by(rows, 2)
    assert all(impls[0] == "triton" for impls in table.values()) and set(table) == {
        "self_attention", "cross_attention_masked", "add_layernorm", "add_layernorm_pos_time", "solver_step"}
    for r in rows:
        assert r["max_abs_err"] <= 2e-5, r
        assert (r["impl"] == "triton") == ("fused_speedup" not in r)


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch, --repeats and --max-length must be at least 1"),
    (["--repeats", "0"], "--batch, --repeats and --max-length must be at least 1"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--dtype", "float64"], "unknown dtype"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_input_is_one_line(args, message, capsys):
    assert main(["bench", "kernels", "--preset", "tiny", "--out", "", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_a_gpu_says_so(capsys):
    assert main(["bench", "kernels", "--preset", "tiny", "--device", "cuda", "--out", ""]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
