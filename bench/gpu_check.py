"""One-call GPU check (H100/H200): kernel micro-benchmarks, per-step latency of the `paper` preset (torch vs
triton), then the GPU tests — JSON in --out, each section in try/except, ~130 s in all on an H100.

    python3 -m pip install --no-deps --no-build-isolation -e . && python3 bench/gpu_check.py --out $OUT

Sections, in order (a failed section prints its traceback and the next one runs):
    environment   GPU, versions, commit
    kernels       µs per call, median (p10, p90) of CUDA-event times per call, bf16, paper shapes
                  (d 384, 6 heads × 64, n 128, S 64, d_embed 128) at batch 1/8/64, eager and CUDA-graph
                  replayed (GPU time alone): fused attention vs
                  SDPA (+ the head-merge copy the torch backend pays) vs the written-out eager softmax;
                  add_layernorm vs add + F.layer_norm; solver_step vs noise.gaussian + (★); max error of each
    rates         this GPU's measured bf16 matmul TFLOP/s and device-memory GB/s (the floor's denominators)
    e2e           ms per denoising step (median, p10, p90 of CUDA events and of host wall time), `paper`
                  preset, random weights, bf16, batch 1/8/64, `reference`, `torch` and `triton` backends,
                  eager and with 10 steps captured in one CUDA graph; beside each, the step's floor
                  max(FLOPs / measured TFLOP/s, bytes / measured GB/s); then the issue's targets, checked
    profile       kernels per step and the top kernels by device time (torch.profiler), torch vs triton, batch 1/64
    engine        the product path: `codefusion bench latency` on the embedded model (CodeFusion.generate,
                  whose loop replays captured CUDA graphs on a GPU), reference / torch / triton, batch 1 and 64
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

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 8, 64)


def cuda_times(fn, reps: int, warmup: int = 3) -> dict:
    """Per-call GPU time from CUDA events around each call → median / p10 / p90 in µs."""
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    us = sorted(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))
    return {"us_p50": round(statistics.median(us), 1), "us_p10": round(us[len(us) // 10], 1),
            "us_p90": round(us[min(len(us) - 1, 9 * len(us) // 10)], 1)}


def graph_times(fn, calls: int = 10, reps: int = 20) -> dict:
    """GPU time per call with the host out of the way: ``calls`` calls captured in one CUDA graph, each replay
    timed with events → median / p10 / p90 µs per call (what a graph-captured sampling loop pays)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()  # compile / allocate outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        t = cuda_times(graph.replay, reps, warmup=1)
        return {k: round(v / calls, 2) for k, v in t.items()}
    except Exception as e:  # a capture failure is a finding, not a crash
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def environment() -> dict:
    import triton
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "capability": list(torch.cuda.get_device_capability(0)),
            "sms": props.multi_processor_count, "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "commit": commit.stdout.strip() or None,
            "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")}


def kernels(reps: int) -> dict:
    import torch.nn.functional as F

    from codefusion.diffusion.schedule import NoiseSchedule
    from codefusion.diffusion.solvers import step_table
    from codefusion.kernels import reference as ref
    from codefusion.kernels.add_layernorm import add_layernorm
    from codefusion.kernels.attention import attention
    from codefusion.kernels.solver_step import solver_step

    dev, bf16, rows = torch.device("cuda"), torch.bfloat16, []
    H, D, n, S, d, d_embed = 6, 64, 128, 64, 384, 128
    table = step_table(NoiseSchedule.sqrt(1200, dev).respace(50), "ddpm")
    for B in BATCHES:
        q, k, v = (torch.randn(B, H, m, D, device=dev, dtype=bf16) for m in (n, n, n))
        ck, cv = (torch.randn(B, H, S, D, device=dev, dtype=bf16) for _ in range(2))
        mask = torch.ones(B, S, dtype=torch.bool, device=dev)
        mask[:, S // 2:] = False
        sdpa_mask = mask[:, None, None, :]
        merge = lambda o: o.transpose(1, 2).reshape(B, n, H * D)  # noqa: E731  (what FastBlock does after SDPA)
        cases = {
            "self_attention": {
                "triton": lambda: attention(q, k, v, None),
                "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
                "sdpa+merge": lambda: merge(F.scaled_dot_product_attention(q, k, v)),
                "eager": lambda: ref.attention(q, k, v, None, upcast=False),
                "_err": lambda: (attention(q, k, v).float() - ref.attention(q, k, v)).abs().max()},
            "cross_attention_masked": {
                "triton": lambda: attention(q, ck, cv, mask),
                "sdpa": lambda: F.scaled_dot_product_attention(q, ck, cv, attn_mask=sdpa_mask),
                "sdpa+merge": lambda: merge(F.scaled_dot_product_attention(q, ck, cv, attn_mask=sdpa_mask)),
                "eager": lambda: ref.attention(q, ck, cv, mask, upcast=False),
                "_err": lambda: (attention(q, ck, cv, mask).float() - ref.attention(q, ck, cv, mask)).abs().max()},
        }
        x, r = torch.randn(B, n, d, device=dev, dtype=bf16), torch.randn(B, n, d, device=dev, dtype=bf16)
        w, b = torch.randn(d, device=dev, dtype=bf16), torch.randn(d, device=dev, dtype=bf16)
        ln = (x, r, None, None, None, w, b, 1e-5)
        cases["add_layernorm"] = {
            "triton": lambda: add_layernorm(*ln),
            "eager": lambda: F.layer_norm(x + r, (d,), w, b, 1e-5),
            "_err": lambda: (add_layernorm(*ln)[1].float() - ref.add_layernorm(*ln)[1].float()).abs().max()}
        xt, x0, xp = (torch.randn(B, n, d_embed, device=dev) for _ in range(3))
        keys, step = torch.arange(B, device=dev), torch.tensor([3], device=dev)
        st = (xt, x0, xp, table.a, table.b, table.c, table.sigma, table.timesteps, step, keys, keys)
        cases["solver_step"] = {
            "triton": lambda: solver_step(*st, False),
            "eager": lambda: ref.solver_step(*st),
            "_err": lambda: (solver_step(*st, False) - ref.solver_step(*st)).abs().max()}
        for name, impls in cases.items():
            row = {"kernel": name, "batch": B, "max_abs_err_vs_fp32_oracle": float(impls.pop("_err")())}
            for impl, fn in impls.items():
                row[impl] = cuda_times(fn, reps)  # eager: host launch overhead included
                row[f"{impl}_graph"] = graph_times(fn)  # GPU time alone
            for base in ("sdpa", "sdpa+merge", "eager"):
                if base in row:
                    row[f"speedup_vs_{base}"] = round(row[base]["us_p50"] / row["triton"]["us_p50"], 2)
                    if "us_p50" in row[f"{base}_graph"] and "us_p50" in row["triton_graph"]:
                        row[f"graph_speedup_vs_{base}"] = round(row[f"{base}_graph"]["us_p50"] /
                                                                row["triton_graph"]["us_p50"], 2)
            rows.append(row)
            print(f"  {name:24s} B={B:<3d} eager/graph µs: " + "  ".join(
                f"{k} {row[k]['us_p50']:.1f}/{row[k + '_graph'].get('us_p50', float('nan')):.1f}"
                for k in ("triton", "sdpa", "sdpa+merge", "eager") if k in row), flush=True)
    return {"statistic": "median (p10, p90) µs per call: <impl> = CUDA events around each eager call (host launch "
                         "overhead included); <impl>_graph = 10 calls captured in one CUDA graph, per replay / 10",
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
    for name, (m, k, n) in {"square_8192": (8192, 8192, 8192), "paper_mlp_b64": (64 * 128, 384, 1536)}.items():
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


def paper_state(be, cfg, B: int):
    """A sampler state of B random requests for backend ``be`` on the GPU: DDPM on a 50-step respacing."""
    from codefusion.diffusion.loop import initial_state
    from codefusion.diffusion.schedule import NoiseSchedule
    from codefusion.diffusion.solvers import step_table
    from codefusion.tokenizer import SourceBatch

    dev = torch.device("cuda")
    src = SourceBatch(torch.randint(7, cfg.vocab_size, (B, cfg.max_source_len)),
                      torch.ones(B, cfg.max_source_len, dtype=torch.bool), [])
    table = step_table(NoiseSchedule.sqrt(cfg.diffusion_steps, dev).respace(50), "ddpm")
    keys = torch.zeros(B, dtype=torch.int64, device=dev)
    return initial_state(be, be.encode(src), table, keys, keys.clone(), cfg.max_target_len)


def e2e(reps: int, rate: dict | None) -> dict:
    from codefusion.backends import get_backend
    from codefusion.bench.gpu_targets import floors, targets
    from codefusion.bench.latency import step_cost
    from codefusion.config import get_preset
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
    from codefusion.config import get_preset
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
    p.add_argument("--budget-s", type=float, default=95.0, help="the tests get whatever is left of this")
    args = p.parse_args(argv)
    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"sections": {}}
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to check", file=sys.stderr)
        return 1
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
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
