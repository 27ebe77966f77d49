"""``codefusion bench latency``: end-to-end and per-step latency per backend × dtype × batch × steps.

Each engine (backend × dtype) is built once; each configuration makes one untimed-by-the-statistics first call,
then ``repeats`` timed calls of ``generate`` on the same prompts. ``cold_start_ms`` is that first call, and for an
engine's first configuration its construction too (backend set-up, caches, compilation or capture where a backend
has them); for later ones it is the first call at that shape. Reported: ms per denoising step (the sample phase /
steps) and end-to-end ms, p50 and p90 over the repeats (p90: nearest rank, so the largest of 5), and beside them
the step's FLOPs and the bytes it must read (weights + cached cross-attention K/V), so the distance to the
machine's floor shows. ``prompts_timed``: how many distinct prompts a call runs (at batch 1, only the first).
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from tqdm import tqdm

from codefusion import CodeFusion, GenerationConfig


def step_cost(cfg, batch: int, n: int, S: int, dtype_bytes: int, clamp: str = "none",
              rows_at: dict[int, int] | None = None, one_pass: bool = True) -> dict[str, float]:
    """FLOPs and bytes of one denoiser step with cached cross K/V (matmuls and attention only); with
    ``clamp="decode"`` also the decoder pass and the head that round x̂0, with "nearest" the distance to L.
    ``rows_at`` {length: rows}: a batch whose rows run at several lengths (each prompt at its own bucket);
    default {n: batch}. The denoiser's weights are read once a step when its length groups share one pass
    (``one_pass``: ``Backend.groups_in_one_pass``), else once per group; the rounding's (decoder, head, L) once
    per group either way (each group's x̂0 is rounded on its own)."""
    d, dff, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    d_in = cfg.d_embed * (2 if cfg.self_condition else 1)
    block_weights = 6 * d * d + 2 * d * dff
    groups = len(rows_at or {n: batch})
    weights = (cfg.denoiser_layers * block_weights + d_in * d + d * cfg.d_embed) * (1 if one_pass else groups)
    if clamp == "decode":  # D's input and output projections, its blocks, then H (V × d_embed)
        weights += (cfg.decoder_layers * block_weights + 2 * cfg.d_embed * d + V * cfg.d_embed) * groups
    elif clamp == "nearest":
        weights += V * cfg.d_embed * groups
    flops = kv = 0
    for n, rows in (rows_at or {n: batch}).items():
        T = rows * n
        per_block = 2 * T * (3 * d * d + d * d + 2 * d * d + 2 * d * dff) + 4 * rows * n * d * (n + S)
        flops += cfg.denoiser_layers * per_block + 2 * T * (d_in * d + d * cfg.d_embed)
        kv += cfg.denoiser_layers * 2 * rows * S * d
        if clamp == "decode":
            flops += cfg.decoder_layers * per_block + 2 * T * (2 * cfg.d_embed * d + cfg.d_embed * V)
            kv += cfg.decoder_layers * 2 * rows * S * d
        elif clamp == "nearest":
            flops += 2 * T * cfg.d_embed * V
    return {"gflop_per_step": round(flops / 1e9, 4), "mb_per_step": round((weights + kv) * dtype_bytes / 2**20, 2)}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def latency(model, tokenizer, prompts: list[str], lang: str, backends: list[str], dtypes: list[str],
            batches: list[int], steps_list: list[int], solver: str = "ddpm", num_samples: int = 1,
            max_length: int | None = None, repeats: int = 5, device: str = "cpu", progress: bool = True,
            clamp: str | None = None, config: dict | None = None, seed: int = 0) -> list[dict]:
    """``clamp`` None runs the model's own sampler (``config``: its checkpoint's config.json), as `generate` does."""
    rows, engines = [], []
    for name in backends:  # every engine first: a backend × dtype pair that cannot run fails before any timing
        for dtype in dtypes:
            t0 = time.perf_counter()
            engines.append((name, dtype, CodeFusion(copy.deepcopy(model), tokenizer, name, device, dtype, config),
                            time.perf_counter() - t0))
    for name, dtype, cf, built_s in tqdm(engines, desc="latency", disable=not progress):
        t0 = time.perf_counter() - built_s  # the cold start counts the engine's construction
        for batch in batches:
            batch_prompts = (prompts * (batch // len(prompts) + 1))[:batch]
            for steps in steps_list:
                request = cf.resolve(GenerationConfig(lang=lang, steps=steps, solver=solver, num_samples=num_samples,
                                                      max_length=max_length, clamp=clamp, seed=seed))
                first = cf.generate(batch_prompts, request)
                cold_ms = (time.perf_counter() - t0) * 1e3
                runs = [cf.generate(batch_prompts, request).timings for _ in range(repeats)]
                per_step = [r["sample_ms"] / r["steps"] for r in runs]
                total = [r["total_ms"] for r in runs]
                n = first.timings["length"]  # the longest; each prompt runs at its own bucket, as generate does
                lengths = ([cf.cfg.bucket_for(max_length)] * batch if max_length else
                           cf.length_buckets(batch_prompts, lang))
                rows_at = {m: lengths.count(m) * num_samples for m in sorted(set(lengths))}
                rows.append({"backend": name, "device": str(cf.backend.device), "dtype": dtype, "batch": batch,
                             "samples": num_samples, "steps": steps, "solver": solver, "clamp": request.clamp, "n": n,
                             "rows_at_length": {str(m): k for m, k in rows_at.items()},
                             "ms_per_step_p50": round(statistics.median(per_step), 3),
                             "ms_per_step_p90": round(_pct(per_step, 0.9), 3),
                             "total_ms_p50": round(statistics.median(total), 2),
                             "total_ms_p90": round(_pct(total, 0.9), 2), "cold_start_ms": round(cold_ms, 1),
                             "repeats": repeats, "prompts_timed": len(set(batch_prompts)),
                             **step_cost(cf.cfg, batch * num_samples, n, cf.cfg.max_source_len,
                                         torch.finfo(cf.backend.dtype).bits // 8, request.clamp, rows_at,
                                         cf.backend.groups_in_one_pass)})
                t0 = time.perf_counter()  # later configurations of this engine are warm
    return rows
