"""Time per denoising step of a preset (random weights) on one backend — a first latency probe.

    python -m codefusion.bench.steptime --preset paper --dtype float32,bfloat16 --batch 1 --json

Times ``backend.step(state, i)`` (denoise + noise + solver update) after warm-up steps and reports
the median with p10/p90 over the timed steps, with the machine, versions and commit. The full
latency suite (`codefusion bench latency`) grows from this.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from codefusion.backends import get_backend
from codefusion.bench.report import versions as environment
from codefusion.config import get_preset
from codefusion.diffusion.loop import initial_state
from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table
from codefusion.model import CodeFusionModel
from codefusion.tokenizer import SourceBatch
from codefusion.validate import parse_device, parse_dtype


def time_steps(preset: str, backend: str, dtype: str, batch: int, n: int | None, device: str, warmup: int,
               timed: int) -> dict:
    torch.manual_seed(0)
    cfg = get_preset(preset)
    n = n or cfg.max_target_len
    be = get_backend(backend)(CodeFusionModel(cfg), parse_device(device), parse_dtype(dtype))
    S = cfg.max_source_len
    source = SourceBatch(torch.randint(7, cfg.vocab_size, (batch, S)), torch.ones(batch, S, dtype=torch.bool), [])
    memory = be.encode(source)
    table = step_table(NoiseSchedule.sqrt(cfg.diffusion_steps, be.device).respace(cfg.diffusion_steps))
    keys = torch.zeros(batch, dtype=torch.int64, device=be.device)
    state = initial_state(be, memory, table, keys, keys.clone(), n)
    times = []
    for i in range(warmup + timed):
        be.synchronize()
        t0 = time.perf_counter()
        state = be.step(state, i)
        be.synchronize()
        times.append(time.perf_counter() - t0)
    ms = sorted(t * 1e3 for t in times[warmup:])
    q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]  # noqa: E731
    return {"preset": preset, "backend": backend, "dtype": dtype, "device": str(be.device), "batch": batch, "n": n,
            "S": S, "ms_per_step_p50": round(statistics.median(ms), 2), "ms_per_step_p10": round(q(0.1), 2),
            "ms_per_step_p90": round(q(0.9), 2), "timed_steps": timed,
            "full_1200_steps_s": round(statistics.median(ms) * cfg.diffusion_steps / 1e3, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--backend", default="reference")
    p.add_argument("--dtype", default="float32,bfloat16")
    p.add_argument("--batch", default="1")
    p.add_argument("--n", type=int, default=None, help="target length (default: the preset's maximum)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = [time_steps(a.preset, a.backend, dtype, int(b), a.n, a.device, a.warmup, a.steps)
            for dtype in a.dtype.split(",") for b in a.batch.split(",")]
    if a.json:
        print(json.dumps({"environment": environment(), "rows": rows}))
        return
    print(json.dumps(environment()))
    for r in rows:
        print(f"{r['preset']} {r['backend']} {r['dtype']} batch {r['batch']} n {r['n']}: "
              f"{r['ms_per_step_p50']} ms/step (p10 {r['ms_per_step_p10']}, p90 {r['ms_per_step_p90']}), "
              f"1200 steps ≈ {r['full_1200_steps_s']} s")


if __name__ == "__main__":
    main()
