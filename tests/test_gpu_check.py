"""bench/gpu_check.py's arithmetic (bench/gpu_targets.py), checked here so a GPU lease is not spent finding a slip in it."""
import pytest

from codefusion.bench.gpu_targets import floor_ms, floors, targets
from codefusion.bench.latency import step_cost
from codefusion.config import get_preset

RATE = {"matmul_tflops_square_8192": 800.0, "copy_gb_per_s": 3000.0}


def test_floor_is_the_slower_of_compute_and_memory():
    # 400 GFLOP at 800 TFLOP/s = 0.5 ms; 30 MiB at 3 TB/s = 0.0105 ms → compute-bound
    assert floor_ms({"gflop_per_step": 400.0, "mb_per_step": 30.0}, RATE) == pytest.approx(0.5)
    # 1 GFLOP → 1.25 µs; 3000 MiB → 1.0486 ms → memory-bound
    assert floor_ms({"gflop_per_step": 1.0, "mb_per_step": 3000.0}, RATE) == pytest.approx(1.0486, abs=1e-4)


def test_paper_step_cost_and_floor_at_batch_64():
    cost = step_cost(get_preset("paper"), 64, 128, 64, 2)
    assert cost["gflop_per_step"] == pytest.approx(315.68, abs=0.01)  # the figure the H100 run reported
    assert floor_ms(cost, RATE) == pytest.approx(315.68 / 800, abs=1e-3)
    both = floors(cost, {**RATE, "matmul_tflops_paper_mlp_b64": 300.0})
    assert both["floor_ms"] == floor_ms(cost, RATE)
    assert both["floor_ms_at_step_gemm_rate"] == pytest.approx(315.68 / 300, abs=1e-3)


def test_step_cost_of_rows_at_several_lengths():
    """Each prompt runs at its own bucket: the FLOPs of a mixed batch add up per length, the weights count once
    when the groups share one pass."""
    cfg = get_preset("small")
    short, long = step_cost(cfg, 3, 16, 64, 2), step_cost(cfg, 1, 32, 64, 2)
    mixed = step_cost(cfg, 4, 32, 64, 2, rows_at={16: 3, 32: 1})
    assert mixed["gflop_per_step"] == pytest.approx(short["gflop_per_step"] + long["gflop_per_step"], abs=2e-4)
    weights_mb = step_cost(cfg, 0, 16, 64, 2)["mb_per_step"]
    assert mixed["mb_per_step"] == pytest.approx(short["mb_per_step"] + long["mb_per_step"] - weights_mb, abs=0.02)
    assert step_cost(cfg, 4, 32, 64, 2) == step_cost(cfg, 4, 32, 64, 2, rows_at={32: 4})
    # a backend that runs each length group as its own loop reads the weights once per group; the rounding of
    # x̂0 (decode: the decoder and head) is per group on every backend
    looped = step_cost(cfg, 4, 32, 64, 2, rows_at={16: 3, 32: 1}, one_pass=False)
    assert looped["mb_per_step"] == pytest.approx(short["mb_per_step"] + long["mb_per_step"], abs=0.02)
    weights = lambda clamp, rows: step_cost(cfg, 0, 32, 64, 2, clamp, rows_at=rows)["mb_per_step"]  # noqa: E731
    one, two = {32: 0}, {16: 0, 32: 0}  # no rows: the weights alone
    assert weights("none", two) == weights("none", one)
    assert weights("decode", two) - weights("decode", one) == pytest.approx(
        weights("decode", one) - weights("none", one), abs=0.02)  # one more decoder + head read


def _row(backend, batch, eager, graph, floor=None):
    row = {"backend": backend, "batch": batch, "ms_per_step_p50": eager,
           "graph_ms_per_step": {"ms_p50": graph} if graph is not None else {"error": "capture failed"}}
    if floor is not None:
        row["floor_ms"] = floor
    return row


def test_targets_from_the_h100_rows():
    rows = [_row("reference", 1, 8.119, 1.359), _row("torch", 1, 5.994, 1.056), _row("triton", 1, 11.285, 0.438),
            _row("triton", 64, 5.935, 1.326, floor=0.3927)]
    t = targets(rows)
    assert t["b1_triton_graph_vs_reference_eager"] == {"x": 18.54, "target": 8.0, "met": True}
    assert t["b1_triton_graph_vs_torch_graph"] == {"x": 2.41, "target": 1.3, "met": True}
    assert t["b1_triton_graph_us_per_step"] == {"us": 438.0, "compass": 100}
    assert t["b64_triton_graph_over_floor"] == {"x": 3.38, "target_at_most": 2.0, "met": False}


def test_targets_skip_what_was_not_measured():
    # a failed capture or a missing backend leaves its target out instead of inventing a ratio
    t = targets([_row("reference", 1, 8.0, None), _row("triton", 1, 11.0, None)])
    assert t == {}
    t = targets([_row("reference", 1, 8.0, None), _row("triton", 1, 11.0, 0.5)])
    assert set(t) == {"b1_triton_graph_vs_reference_eager", "b1_triton_graph_us_per_step"}


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_the_e2e_state_steps_on_every_backend(tiny_model, backend):
    """What gpu_check's e2e and profile sections build before they time anything: a random batch's sampler state
    for each backend, stepped; run here on the CPU (triton interpreted) so a Python error shows before GPU time."""
    import copy

    import torch

    from codefusion.backends import get_backend
    from codefusion.bench.gpu_check import paper_state

    be = get_backend(backend)(copy.deepcopy(tiny_model), torch.device("cpu"), torch.float32)
    state = paper_state(be, tiny_model.cfg, 2, device="cpu")
    assert len(state.table) == 50 and state.x_t.shape == (2, tiny_model.cfg.max_target_len, tiny_model.cfg.d_embed)
    for i in range(3):
        state = be.step(state, i)
    assert bool(torch.isfinite(state.x_t).all())
