"""One-call GPU check (H100/H200): kernel micro-benchmarks, per-step latency of the `paper` preset (torch vs
triton), then the GPU tests — JSON in --out, each section in try/except, ~250 s in all on an H100 (the
tests end by --budget-s, 150 s after the start; the engine section by 90 s after that).

    python3 -m pip install --no-deps --no-build-isolation -e . && python3 bench/gpu_check.py --out $OUT

Sections, in order (a failed section prints its traceback and the next one runs):
    environment   GPU, versions, commit
    kernels       `codefusion bench kernels --device cuda --dtype bfloat16` at the paper shapes (d 384, 6 heads × 64,
                  n 128, S 64, d_embed 128), batch 1/8/64: µs per call, eager (CUDA events) and CUDA-graph replayed
                  (GPU time alone), fused attention vs SDPA (+ the head-merge copy the torch backend pays) vs the
                  written-out softmax; add_layernorm vs add + F.layer_norm, also at the first block (pos + the
                  time-table row: whether fusing them pays); solver_step vs noise.gaussian + (★); max error of each
                  against the fp32 oracle
    rates         this GPU's measured bf16 matmul TFLOP/s and device-memory GB/s (the floor's denominators)
    e2e           ms per denoising step (median, p10, p90 of CUDA events and of host wall time), `paper`
                  preset, random weights, bf16, batch 1/8/64, `reference`, `torch` and `triton` backends,
                  eager and with 10 steps captured in one CUDA graph; beside each, the step's floor
                  max(FLOPs / measured TFLOP/s, bytes / measured GB/s); then the issue's targets, checked
    profile       kernels per step and the top kernels by device time (torch.profiler), torch vs triton, batch 1/64
    engine        the product path: `codefusion bench latency` on the embedded model (CodeFusion.generate,
                  whose loop replays captured CUDA graphs on a GPU), reference / torch / triton, batch 1 and 64,
                  with the model's own sampler (decode since the model made it its default; the README's H100
                  rows predate that)
    tests         pytest -m cuda over tests/test_graphs.py, then tests/test_kernels.py and tests/test_triton_backend.py
                  on the GPU (minus the sm_90 compile-only test and the CPU-trained fixture), in the time left
Statistics are medians over `--reps` calls after warm-up; Triton compiles on first use (not timed).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from codefusion.bench.kernels import cuda_times
from codefusion.config import get_preset
from codefusion.kernels._common import interpreting

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 8, 64)


def environment() -> dict:
    import triton

    from codefusion.bench.report import versions
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "capability": list(torch.cuda.get_device_capability(0)),
            "sms": props.multi_processor_count, "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "commit": versions()["commit"],
            "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")}


def kernels(reps: int) -> dict:
    """`codefusion bench kernels --device cuda --dtype bfloat16` at the paper shapes, printed as it goes."""
    from codefusion.bench.kernels import bench_kernels

    rows = bench_kernels(get_preset("paper"), torch.device("cuda"), torch.bfloat16, list(BATCHES), reps,
                         progress=False)
    for r in rows:
        print(f"  {r['kernel']:24s} B={r['batch']:<3d} {r['impl']:18s} eager {r['us_p50']:8.1f} µs  graph "
              f"{r.get('graph_us_p50')} µs  x{r.get('graph_fused_speedup', '-')}  err {r['max_abs_err']}", flush=True)
    return {"statistic": "median (p10, p90) µs per call: us_* = CUDA events around each eager call (host launch "
                         "overhead included); graph_us_p50 = 10 calls captured in one CUDA graph, per replay / 10; "
                         "(graph_)fused_speedup = this row's time / triton's",
            "dtype": "bfloat16", "rows": rows}


def graph_step_ms(be, state, steps: int = 10, reps: int = 10) -> dict:
    """ms per step with ``steps`` steps captured in one CUDA graph (device step counter), median over replays."""
    try:
        with torch.inference_mode():
            start = torch.zeros((), dtype=torch.int64, device=state.x_t.device)

            def body():
                s, i = state, start.clone()
                for _ in range(steps):
                    s = be.step(s, i)
                    i = i + 1
                return s.x_t

            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                body()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = body()
            t = cuda_times(graph.replay, reps, warmup=1)
            return {"ms_p50": round(t["us_p50"] / steps / 1e3, 3), "finite": bool(torch.isfinite(out).all())}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def rates() -> dict:
    """The floor's denominators, measured now: bf16 matmul rate at a large square shape and at the paper
    step's own MLP shape (64 × 128 rows), and device-to-device copy bandwidth (bytes read + written)."""
    dev, out = torch.device("cuda"), {}
    paper = get_preset("paper")  # its MLP and fused-QKV GEMM at batch 64: (64 · 128) × d_model → d_ff (= 3 · d_model)
    shapes = {"square_8192": (8192, 8192, 8192), "paper_mlp_b64": (64 * paper.max_target_len, paper.d_model, paper.d_ff)}
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=dev, dtype=torch.bfloat16)
        t = cuda_times(lambda: a @ b, 20)
        out[f"matmul_tflops_{name}"] = round(2 * m * k * n / (t["us_p50"] * 1e-6) / 1e12, 1)
    src = torch.empty(2**28, device=dev, dtype=torch.uint8)  # 256 MiB, far past L2
    dst = torch.empty_like(src)
    t = cuda_times(lambda: dst.copy_(src), 20)
    out["copy_gb_per_s"] = round(2 * src.numel() / (t["us_p50"] * 1e-6) / 1e9, 1)
    print(f"  {out}", flush=True)
    return out


def paper_state(be, cfg, B: int, device: str = "cuda"):
    """A sampler state of B random requests for backend ``be`` on the GPU (``device``: the CPU test runs it
    too): DDPM on a 50-step respacing."""
    from codefusion.diffusion.loop import initial_state
    from codefusion.diffusion.schedule import NoiseSchedule
    from codefusion.diffusion.solvers import step_table
    from codefusion.tokenizer import SourceBatch

    dev = torch.device(device)
    src = SourceBatch(torch.randint(7, cfg.vocab_size, (B, cfg.max_source_len)),
                      torch.ones(B, cfg.max_source_len, dtype=torch.bool), [])
    table = step_table(NoiseSchedule.sqrt(cfg.diffusion_steps, dev).respace(50), "ddpm")
    keys = torch.zeros(B, dtype=torch.int64, device=dev)
    return initial_state(be, be.encode(src), table, keys, keys.clone(), cfg.max_target_len)


def e2e(reps: int, rate: dict | None) -> dict:
    from codefusion.backends import get_backend
    from codefusion.bench.gpu_targets import floors, targets
    from codefusion.bench.latency import step_cost
    from codefusion.model import CodeFusionModel

    torch.manual_seed(0)
    cfg, dev = get_preset("paper"), torch.device("cuda")
    model, rows = CodeFusionModel(cfg).eval(), []
    for name in ("reference", "torch", "triton"):
        be = get_backend(name)(copy.deepcopy(model), dev, torch.bfloat16)  # a backend may cast the model it gets
        for B in BATCHES:
            state = paper_state(be, cfg, B)
            gpu, wall = [], []
            for i in range(3 + reps):  # 3 warm-up steps (compiles, allocator)
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                s.record()
                state = be.step(state, i % len(state.table))
                e.record()
                torch.cuda.synchronize()
                if i >= 3:
                    wall.append((time.perf_counter() - t0) * 1e3)
                    gpu.append(s.elapsed_time(e))
            gpu.sort(), wall.sort()
            q = lambda xs, p: round(xs[min(len(xs) - 1, int(p * len(xs)))], 3)  # noqa: E731
            row = {"backend": name, "batch": B, "n": cfg.max_target_len, "S": cfg.max_source_len,
                   "ms_per_step_p50": round(statistics.median(gpu), 3), "ms_per_step_p10": q(gpu, 0.1),
                   "ms_per_step_p90": q(gpu, 0.9), "wall_ms_per_step_p50": round(statistics.median(wall), 3),
                   "finite": bool(torch.isfinite(state.x_t).all())}
            row["graph_ms_per_step"] = graph_step_ms(be, state)
            row.update(step_cost(cfg, B, cfg.max_target_len, cfg.max_source_len, 2))
            if rate:
                row.update(floors(row, rate))
            rows.append(row)
            print(f"  {name:6s} B={B:<3d} {row['ms_per_step_p50']:.3f} ms/step "
                  f"(wall {row['wall_ms_per_step_p50']:.3f}, graph {row['graph_ms_per_step']})", flush=True)
        del be
        torch.cuda.empty_cache()
    met = targets(rows)
    print(f"  targets: {met}", flush=True)
    return {"preset": "paper", "dtype": "bfloat16", "solver": "ddpm", "targets": met,
            "statistic": "median (p10, p90) over timed eager steps of CUDA-event ms; wall = host time incl. sync; "
                         "graph_ms_per_step = 10 steps captured in one CUDA graph, median replay / 10; floor_ms = "
                         "max(gflop / measured bf16 matmul rate, MB read / measured copy rate)",
            "rows": rows}


def profile() -> dict:
    """Where a `paper` step's GPU time goes: torch.profiler over 5 eager steps of each fast backend at batch
    1 and 64, kernels grouped by name, top 12 by device time (µs per step) and the kernel count per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from codefusion.backends import get_backend
    from codefusion.model import CodeFusionModel

    torch.manual_seed(0)
    cfg, dev, steps, rows = get_preset("paper"), torch.device("cuda"), 5, []
    model = CodeFusionModel(cfg).eval()
    for name in ("torch", "triton"):
        be = get_backend(name)(copy.deepcopy(model), dev, torch.bfloat16)
        for B in (1, 64):
            state = paper_state(be, cfg, B)
            for i in range(3):
                state = be.step(state, i)
            torch.cuda.synchronize()
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                for i in range(steps):
                    state = be.step(state, 3 + i)
                torch.cuda.synchronize()
            kernels: dict[str, list[float]] = {}
            for ev in prof.events():
                if ev.device_type == torch.autograd.DeviceType.CUDA:
                    kernels.setdefault(ev.name, []).append(ev.device_time)
            top = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:12]
            total = sum(sum(v) for v in kernels.values()) / steps
            row = {"backend": name, "batch": B, "kernel_us_per_step": round(total, 1),
                   "kernels_per_step": round(sum(len(v) for v in kernels.values()) / steps, 1),
                   "top": [{"name": k[:90], "us_per_step": round(sum(v) / steps, 1), "calls_per_step": len(v) / steps}
                           for k, v in top]}
            rows.append(row)
            print(f"  {name} B={B}: {row['kernel_us_per_step']} µs of kernels in {row['kernels_per_step']} per step; "
                  + "; ".join(f"{t['name'][:40]} {t['us_per_step']}" for t in row["top"][:6]), flush=True)
        del be
    return {"statistic": "summed device time of each kernel over 5 eager steps / 5", "rows": rows}


def engine(out: Path, timeout: float) -> dict:
    """`codefusion bench latency` on the embedded model with the GPU: the path users run (graph replay)."""
    cmd = [sys.executable, "-m", "codefusion.cli", "bench", "latency", "--backend", "reference,torch,triton",
           "--dtype", "bfloat16", "--batch", "1,64", "--steps", "50", "--repeats", "5", "--device", "cuda",
           "--lang", "bash", "--out", str(out / "engine"), "--json"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = (p.stdout + p.stderr).strip().splitlines()
    try:
        rows = json.loads(p.stdout)["rows"]
    except (ValueError, KeyError, TypeError):
        rows = None
    for r in rows or []:
        print(f"  {r.get('backend')} B={r.get('batch')}: {r.get('ms_per_step_p50')} ms/step, "
              f"{r.get('total_ms_p50')} ms end to end", flush=True)
    if p.returncode != 0:
        raise RuntimeError(f"bench latency exited {p.returncode}: " + "\n".join(lines[-30:]))
    return {"command": " ".join(cmd[1:]), "rows": rows, "tail": "\n".join(lines[-10:])}


def tests(deadline: float) -> dict:
    runs = {"cuda_marked": [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_graphs.py"],
            "kernels_and_backend_on_gpu": [sys.executable, "-m", "pytest", "-q", "tests/test_kernels.py",
                                           "tests/test_triton_backend.py", "-k", "not sm90 and not trained_fixture"]}
    out = {}
    for name, cmd in runs.items():
        left = deadline - time.monotonic()
        if left < 5:
            out[name] = {"ok": False, "error": "no time left"}
            continue
        try:
            env = {**os.environ, "CODEFUSION_NO_CPP": "1"}  # the C++ CPU kernel's first build would eat the budget
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=left)
            lines = (p.stdout + p.stderr).strip().splitlines()
            out[name] = {"ok": p.returncode in (0, 5), "returncode": p.returncode,  # 5: no test selected
                         "summary": lines[-1] if lines else "", "tail": "\n".join(lines[-40:])}
        except subprocess.TimeoutExpired as e:
            text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            out[name] = {"ok": False, "error": f"timed out after {left:.0f} s", "tail": text[-3000:]}
        print(f"  {name}: {out[name].get('summary', out[name].get('error'))}", flush=True)
    return {"ok": all(r["ok"] for r in out.values()), "runs": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json")
    p.add_argument("--reps", type=int, default=30, help="timed calls per micro-benchmark / timed steps per e2e row")
    p.add_argument("--sections", default="", help="comma-separated subset of the sections (default: all)")
    # the sections before the tests took ~31 s on the H100 (session 10) and the tests ~75 s then (more since)
    p.add_argument("--budget-s", type=float, default=150.0, help="the tests get whatever is left of this")
    args = p.parse_args(argv)
    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"sections": {}}
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to check", file=sys.stderr)
        return 1
    if interpreting():
        print("warning: TRITON_INTERPRET is set; unset it to run compiled kernels", file=sys.stderr)
    measured: dict = {}
    sections = [("environment", environment), ("rates", lambda: measured.setdefault("rates", rates())),
                ("kernels", lambda: kernels(args.reps)),
                ("e2e", lambda: e2e(min(args.reps, 20), measured.get("rates"))),
                ("tests", lambda: tests(start + args.budget_s)), ("profile", profile),
                ("engine", lambda: engine(out, max(10.0, start + args.budget_s + 90 - time.monotonic())))]
    wanted = {x for x in args.sections.split(",") if x}
    sections = [(name, fn) for name, fn in sections if not wanted or name in wanted | {"environment", "rates"}]
    for name, fn in sections:
        t0 = time.monotonic()
        print(f"[{name}]", flush=True)
        try:
            results["sections"][name] = {"ok": True, **fn()}
        except Exception:  # one broken section must not hide the others
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            results["sections"][name] = {"ok": False, "error": tb[-4000:]}
        results["sections"][name]["seconds"] = round(time.monotonic() - t0, 1)
        results["total_s"] = round(time.monotonic() - start, 1)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1))  # rewritten after every section
    failed = [k for k, v in results["sections"].items() if not v["ok"]]
    print(f"done in {results['total_s']} s; failed sections: {failed or 'none'}; wrote {out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
