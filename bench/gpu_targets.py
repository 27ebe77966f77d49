"""The floor and the Triton issue's GPU targets, from the rows `bench/gpu_check.py` measures.

Pure arithmetic (no GPU needed), so tests/test_gpu_check.py checks it on CPU: a slip here would
otherwise cost a GPU lease to find.
"""
from __future__ import annotations


def floor_ms(cost: dict, rate: dict) -> float:
    """The step's lower bound on this GPU: compute at the big-matmul rate or traffic at the copy rate."""
    compute = cost["gflop_per_step"] * 1e9 / (rate["matmul_tflops_square_8192"] * 1e12)
    memory = cost["mb_per_step"] * 2**20 / (rate["copy_gb_per_s"] * 1e9)
    return round(max(compute, memory) * 1e3, 4)


def floors(cost: dict, rate: dict) -> dict:
    """Both floors of a step: at the big-matmul rate (the issue's), and at the rate cuBLAS reaches on the
    step's own largest GEMM shape (what these shapes allow)."""
    return {"floor_ms": floor_ms(cost, rate),
            "floor_ms_at_step_gemm_rate": round(cost["gflop_per_step"] / rate["matmul_tflops_paper_mlp_b64"], 4)}


def targets(rows: list[dict]) -> dict:
    """The issue's GPU targets from the e2e rows: batch 1 triton + graph ≥ 8× eager reference and ≥ 1.3×
    torch + graph (compass ≤ 100 µs); batch 64 triton + graph within 2× of the measured floor."""
    def get(backend, batch, graph):
        row = next((r for r in rows if r["backend"] == backend and r["batch"] == batch), None)
        if row is None:
            return None, None
        return (row["graph_ms_per_step"].get("ms_p50") if graph else row["ms_per_step_p50"]), row

    out = {}
    tri1, _ = get("triton", 1, True)
    ref1, _ = get("reference", 1, False)
    torch1, _ = get("torch", 1, True)
    tri64, row64 = get("triton", 64, True)
    if tri1 and ref1:
        out["b1_triton_graph_vs_reference_eager"] = {"x": round(ref1 / tri1, 2), "target": 8.0}
    if tri1 and torch1:
        out["b1_triton_graph_vs_torch_graph"] = {"x": round(torch1 / tri1, 2), "target": 1.3}
    if tri1:
        out["b1_triton_graph_us_per_step"] = {"us": round(tri1 * 1e3, 1), "compass": 100}
    if tri64 and row64.get("floor_ms"):
        out["b64_triton_graph_over_floor"] = {"x": round(tri64 / row64["floor_ms"], 2), "target_at_most": 2.0}
    for v in out.values():
        if "target" in v:
            v["met"] = v["x"] >= v["target"]
        elif "target_at_most" in v:
            v["met"] = v["x"] <= v["target_at_most"]
    return out
