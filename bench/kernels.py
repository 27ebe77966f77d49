"""``codefusion bench kernels``: µs per call of each fused kernel against what it replaces, at a preset's shapes.

Cases (q, k, v in the network dtype; the diffusion state fp32, DESIGN §2):
    self_attention           q, k, v (B, h, n, D)                          triton | sdpa | sdpa+merge | eager
    cross_attention_masked   k, v (B, h, S, D), the last S/2 keys masked   (the same four)
    add_layernorm            LayerNorm(x + residual) over d                triton | eager
    solver_step              (★) with the counter-based z                  triton | cpp | torch+cpp-philox | eager
``sdpa+merge`` adds the (B, h, n, D) → (B, n, h·D) copy the `torch` backend pays after SDPA (the kernel writes that
layout itself); ``eager`` is the written-out PyTorch of kernels/reference.py in the same dtype; ``cpp`` is the C++
noise + update of kernels/cpu (the `torch` backend's bf16 step on CPU); ``torch+cpp-philox`` its fp32 step (C++
Philox words, torch Box–Muller and update: the reference's own arithmetic).

On a GPU: CUDA events around each eager call (the host's launch cost included) and, beside it, 10 calls replayed
from one CUDA graph (GPU time alone: what a graph-captured sampling loop pays). On CPU: perf_counter around each
call. Triton runs on CPU only under its interpreter, whose times say nothing of a kernel, so ``triton`` rows are
GPU-only. Per row: median, p10 and p90 µs, the max |error| against the fp32 oracle, and ``fused_speedup``: how many
times faster the case's fused implementation (``triton`` on a GPU; ``sdpa`` and ``cpp`` on CPU) is than this one.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

COLUMNS = ["kernel", "batch", "impl", "device", "dtype", "us_p50", "us_p10", "us_p90", "graph_us_p50",
           "fused_speedup", "graph_fused_speedup", "max_abs_err"]
GRAPH_CALLS = 10

# case -> (implementation -> (call, output as the fp32 oracle lays it out)); the first implementation present is fused
Cases = dict[str, dict[str, tuple[Callable[[], object], Callable[[object], torch.Tensor]]]]


def _quantiles(us: list[float]) -> dict:
    us = sorted(us)
    at = lambda p: round(us[min(len(us) - 1, int(p * len(us)))], 2)  # noqa: E731
    return {"us_p50": round(statistics.median(us), 2), "us_p10": at(0.1), "us_p90": at(0.9)}


def cpu_times(fn: Callable[[], object], reps: int, warmup: int = 3) -> dict:
    """Wall time per call (perf_counter) → median / p10 / p90 µs."""
    for _ in range(warmup):
        fn()
    us = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        us.append((time.perf_counter() - t0) * 1e6)
    return _quantiles(us)


def cuda_times(fn: Callable[[], object], reps: int, warmup: int = 3) -> dict:
    """Per-call GPU time from CUDA events around each call → median / p10 / p90 µs."""
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return _quantiles([s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)])


def graph_times(fn: Callable[[], object], calls: int = GRAPH_CALLS, reps: int = 20) -> dict:
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


def _attention_cases(B: int, H: int, D: int, n: int, S: int, dev: torch.device, dtype: torch.dtype,
                     triton: bool) -> Cases:
    from codefusion.kernels import reference as ref

    g = torch.Generator(device="cpu").manual_seed(B)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(dev, dtype)  # noqa: E731
    q, k, v, ck, cv = rand(B, H, n, D), rand(B, H, n, D), rand(B, H, n, D), rand(B, H, S, D), rand(B, H, S, D)
    mask = torch.ones(B, S, dtype=torch.bool, device=dev)
    mask[:, S - S // 2:] = False
    heads_last = lambda o: o.transpose(1, 2)  # noqa: E731  (B, h, n, D) → the oracle's (B, n, h, D)
    merged = lambda o: o.view(B, n, H, D)  # noqa: E731
    same = lambda o: o  # noqa: E731
    cases: Cases = {}
    for name, (kk, vv, m) in {"self_attention": (k, v, None), "cross_attention_masked": (ck, cv, mask)}.items():
        sdpa_mask = None if m is None else m[:, None, None, :]
        impls = {}
        if triton:
            from codefusion.kernels.attention import attention
            impls["triton"] = (lambda kk=kk, vv=vv, m=m: attention(q, kk, vv, m), same)
        impls["sdpa"] = (lambda kk=kk, vv=vv, sm=sdpa_mask: F.scaled_dot_product_attention(q, kk, vv, attn_mask=sm),
                         heads_last)
        impls["sdpa+merge"] = (lambda kk=kk, vv=vv, sm=sdpa_mask: F.scaled_dot_product_attention(
            q, kk, vv, attn_mask=sm).transpose(1, 2).reshape(B, n, H * D), merged)
        impls["eager"] = (lambda kk=kk, vv=vv, m=m: ref.attention(q, kk, vv, m, upcast=False), same)
        cases[name] = impls
        cases[name]["_oracle"] = (lambda kk=kk, vv=vv, m=m: ref.attention(q, kk, vv, m), same)
    return cases


def _layernorm_case(B: int, n: int, d: int, dev: torch.device, dtype: torch.dtype, triton: bool) -> Cases:
    from codefusion.kernels import reference as ref

    g = torch.Generator(device="cpu").manual_seed(B)
    x, r = (torch.randn(B, n, d, generator=g).to(dev, dtype) for _ in range(2))
    w, b = (torch.randn(d, generator=g).to(dev, dtype) for _ in range(2))
    args = (x, r, None, None, None, w, b, 1e-5)
    second = lambda out: out[1]  # noqa: E731  (the normalised output; the sum is exact in both)
    impls = {}
    if triton:
        from codefusion.kernels.add_layernorm import add_layernorm
        impls["triton"] = (lambda: add_layernorm(*args), second)
    impls["eager"] = (lambda: F.layer_norm(x + r, (d,), w, b, 1e-5), lambda y: y)
    impls["_oracle"] = (lambda: ref.add_layernorm(*args), second)
    # the denoiser's first block: its input is inp(x) + pos[:n] + time_table[t] (t a device index), then LN1
    pos, table = torch.randn(n + 3, d, generator=g).to(dev, dtype), torch.randn(1200, d, generator=g).to(dev, dtype)
    t = torch.tensor([417], device=dev)
    first_args = (x, None, pos, table, t, w, b, 1e-5)
    first = {}
    if triton:
        first["triton"] = (lambda: add_layernorm(*first_args), second)
    first["eager"] = (lambda: F.layer_norm(x + pos[:n] + table.index_select(0, t), (d,), w, b, 1e-5), lambda y: y)
    first["_oracle"] = (lambda: ref.add_layernorm(*first_args), second)
    return {"add_layernorm": impls, "add_layernorm_pos_time": first}


def _solver_case(B: int, n: int, d_embed: int, dev: torch.device, triton: bool) -> Cases:
    from codefusion.diffusion.schedule import NoiseSchedule
    from codefusion.diffusion.solvers import at, step_table, update
    from codefusion.kernels import reference as ref
    from codefusion.noise import gaussian

    table = step_table(NoiseSchedule.sqrt(1200, dev).respace(50), "ddpm")
    g = torch.Generator(device="cpu").manual_seed(B)
    xt, x0, xp = (torch.randn(B, n, d_embed, generator=g).to(dev) for _ in range(3))
    keys, step = torch.arange(B, device=dev), torch.tensor([3], device=dev)
    args = (xt, x0, xp, table.a, table.b, table.c, table.sigma, table.timesteps, step, keys, keys)
    same = lambda out: out  # noqa: E731
    impls = {}
    if triton:
        from codefusion.kernels.solver_step import solver_step
        impls["triton"] = (lambda: solver_step(*args, False), same)
    if dev.type == "cpu" and _cpp_built():
        from codefusion.kernels.solver_step_cpu import philox_words_cpu, solver_step_cpu

        def torch_cpp_philox():  # the fp32 `torch` backend's step on CPU (Backend.advance with C++ Philox words)
            z = gaussian(keys, keys, at(table.timesteps, step).reshape(()), (n, d_embed), words=philox_words_cpu)
            return update(xt, x0, xp, table, step, z)

        impls["cpp"] = (lambda: solver_step_cpu(*args, False), same)
        impls["torch+cpp-philox"] = (torch_cpp_philox, same)
    impls["eager"] = (lambda: ref.solver_step(*args), same)
    impls["_oracle"] = impls["eager"]
    return {"solver_step": impls}


def _cpp_built() -> bool:
    """Whether the C++ CPU kernel compiled (its wrappers otherwise fall back to torch, which is the eager row)."""
    from codefusion.kernels.solver_step_cpu import extension
    return extension() is not None


def bench_kernels(cfg, device: torch.device, dtype: torch.dtype, batches: list[int], reps: int, n: int | None = None,
                  progress: bool = True, triton: bool | None = None, solver: bool = True) -> list[dict]:
    """One row per (case, batch, implementation) at ``cfg``'s shapes (h heads of d_model / h, n target and S
    source positions, d_embed); see the module docstring for what each row measures. ``triton`` (default: on a
    GPU) adds the Triton rows; on CPU they run interpreted, which the tests use to check their wiring. ``solver``:
    the fp32 solver-step rows too (one call per dtype list times them once)."""
    gpu = device.type == "cuda"
    triton = gpu if triton is None else triton
    n = n or cfg.max_target_len
    H, D, S = cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.max_source_len
    timer = cuda_times if gpu else cpu_times
    rows = []
    for B in tqdm(batches, desc="kernels", disable=not progress):
        cases = {**_attention_cases(B, H, D, n, S, device, dtype, triton),
                 **_layernorm_case(B, n, cfg.d_model, device, dtype, triton),
                 **(_solver_case(B, n, cfg.d_embed, device, triton) if solver else {})}
        for name, impls in cases.items():
            oracle_fn, oracle_view = impls.pop("_oracle")
            with torch.inference_mode():
                oracle = oracle_view(oracle_fn()).float()
            fused = None
            for impl, (fn, view) in impls.items():
                with torch.inference_mode():
                    err = (view(fn()).float() - oracle).abs().max().item()
                    row = {"kernel": name, "batch": B, "impl": impl, "device": device.type,
                           "dtype": "float32" if name == "solver_step" else str(dtype).removeprefix("torch."),
                           **timer(fn, reps), "max_abs_err": float(f"{err:.3g}")}
                    if gpu:
                        graph = graph_times(fn)
                        row["graph_us_p50"] = graph.get("us_p50", graph.get("error"))
                fused = fused or row
                if row is not fused:
                    row["fused_speedup"] = round(row["us_p50"] / fused["us_p50"], 2)
                    if isinstance(row.get("graph_us_p50"), float) and isinstance(fused.get("graph_us_p50"), float):
                        row["graph_fused_speedup"] = round(row["graph_us_p50"] / fused["graph_us_p50"], 2)
                rows.append(row)
    return rows
