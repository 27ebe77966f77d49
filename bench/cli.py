"""``codefusion bench latency | parity | kernels | quality | trajectory | serve | compare | ranking``: common flags,
model loading, JSON / Markdown / PNG output."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from codefusion.config import CLAMPS
from codefusion.errors import CodeFusionError, OneLineParser
from codefusion.validate import out_dir, resolve_dtypes

from . import report
from .prompts import PROMPTS

LATENCY_COLUMNS = ["backend", "device", "dtype", "batch", "samples", "steps", "solver", "clamp", "n", "ms_per_step_p50",
                   "ms_per_step_p90", "total_ms_p50", "total_ms_p90", "cold_start_ms", "gflop_per_step", "mb_per_step"]
PARITY_COLUMNS = ["backend", "device", "dtype", "steps", "solver", "prompts", "samples", "n", "max_abs_err",
                  "max_step_err", "token_agreement", "program_agreement"]


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise CodeFusionError(f"expected comma-separated integers, got {text!r}") from None


def load_model(args):
    """--preset: random weights and a tokenizer trained on the built-in prompts; else --model (or the default).
    → (model, tokenizer, the checkpoint's config.json: its generation defaults are what `generate` runs)."""
    if args.preset:
        import dataclasses

        from codefusion.config import get_preset
        from codefusion.model import CodeFusionModel
        from codefusion.tokenizer import CodeTokenizer

        cfg = get_preset(args.preset)
        tok = CodeTokenizer.train([p for ps in PROMPTS.values() for p in ps] * 4, min(cfg.vocab_size, 2000))
        torch.manual_seed(0)
        return CodeFusionModel(dataclasses.replace(cfg, vocab_size=max(cfg.vocab_size, tok.vocab_size))).eval(), tok, {}
    from codefusion.api import default_model_dir
    from codefusion.checkpoint import load_checkpoint
    return load_checkpoint(args.model or default_model_dir())


def load_prompts(args) -> list[str]:
    """The built-in prompts of --lang, or the nl fields of --data; the first --limit of them."""
    if args.limit is not None and args.limit < 1:
        raise CodeFusionError(f"--limit must be at least 1, got {args.limit}")
    if not args.data:
        return PROMPTS[args.lang][: args.limit]
    from codefusion.train.data import read_jsonl
    if not Path(args.data).is_file():
        raise CodeFusionError(f"--data {args.data} is not a file: give a JSONL split such as "
                              "shared/data/nl2bash/dev.jsonl")
    prompts = [r["nl"] for r in read_jsonl(Path(args.data))][: args.limit]
    if not prompts:
        raise CodeFusionError(f"--data {args.data} holds no rows")
    return prompts


def _dev_rows_args(p: argparse.ArgumentParser) -> None:
    """The model and the dev rows of the suites that score generations (quality, trajectory)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", default=None, help="random weights of a preset (plumbing only)")
    g.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    p.add_argument("--data", required=True, help="dev JSONL ({id, nl, code[, data, labels]})")
    p.add_argument("--lang", default=None, choices=sorted(PROMPTS),
                   help="the rows' language (default: from the dataset folder's name, as eval reads it)")
    p.add_argument("--limit", type=int, default=200)


def _dev_run_args(p: argparse.ArgumentParser) -> None:
    """How those suites run and where they write."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="torch")
    p.add_argument("--dtype", default="auto", help="auto (default: bfloat16 where the hardware has it, else float32) "
                                                   "| bfloat16 | float32")
    p.add_argument("--batch", type=int, default=64, help="sequences per denoising batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="codefusion bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="suite", required=True)
    for name, backends, dtypes, batch, steps in (("latency", "reference,torch", "float32,bfloat16", "1,8,64", "20"),
                                                 ("parity", "torch", "float32,bfloat16", "16", "1200")):
        s = sub.add_parser(name)
        g = s.add_mutually_exclusive_group()
        g.add_argument("--preset", default=None, help="random weights of a preset (engine timing)")
        g.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
        s.add_argument("--backend", default=backends)
        s.add_argument("--dtype", default=dtypes)
        s.add_argument("--batch", default=batch, help="prompts per call (comma-separated for latency; one for parity)")
        s.add_argument("--steps", default=steps, help="comma-separated for latency; one for parity")
        s.add_argument("--solver", default="ddpm")
        if name == "latency":  # parity always runs the reference sampler, the oracle's loop
            s.add_argument("--clamp", default=None, choices=CLAMPS,
                           help="x̂0 rounding per step (default: the model's own, as `generate` runs it)")
        s.add_argument("--num-samples", type=int, default=1)
        s.add_argument("--max-length", type=int, default=None)
        s.add_argument("--lang", default="bash", choices=sorted(PROMPTS))
        s.add_argument("--data", default=None, help="JSONL rows whose nl fields are the prompts")
        s.add_argument("--limit", type=int, default=None)
        s.add_argument("--seed", type=int, default=0)
        if name == "latency":  # parity runs each configuration once: its figures are errors, not times
            s.add_argument("--repeats", type=int, default=5)
        s.add_argument("--device", default="cpu")
        s.add_argument("--out", default="bench/results", help="folder for <suite>.json / .md (/.png)")
        s.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
        s.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    k = sub.add_parser("kernels", help="µs per call of each fused kernel against SDPA / eager PyTorch, with its error")
    k.add_argument("--preset", default="paper", help="the shapes: heads, head dim, n, S and d_embed of this preset")
    k.add_argument("--max-length", type=int, default=None, help="n, the target positions (default: the preset's)")
    k.add_argument("--batch", default="1,8,64")
    k.add_argument("--dtype", default="auto", help="of q, k, v and the LayerNorm input (the solver state is fp32): "
                                                   "auto (bfloat16 where native, else float32) | bfloat16 | float32")
    k.add_argument("--repeats", type=int, default=30, help="timed calls per row, after 3 warm-up calls")
    k.add_argument("--device", default="cpu", help="cpu | cuda (cuda adds the Triton rows and CUDA-graph timings)")
    k.add_argument("--out", default="bench/results", help="folder for kernels.json / .md")
    k.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    k.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    q = sub.add_parser("quality", help="dev metrics vs steps × solvers, early exit, length buckets (paired)")
    _dev_rows_args(q)
    q.add_argument("--steps", default="1200,200,100,50,20,10,5")
    q.add_argument("--solver", default="ddpm,ddim,dpmpp_2m")
    q.add_argument("--clamp", default="none", help="x̂0 rounding per step, comma-separated: none,nearest,decode")
    q.add_argument("--no-early-exit", dest="early_exit", action="store_false")
    q.add_argument("--no-length", dest="full_length", action="store_false",
                   help="skip the row that runs every request at the longest length bucket")
    q.add_argument("--length-quantile", default="",
                   help="rows that pick each request's bucket at these quantiles of the length head (default 0.9)")
    q.add_argument("--baseline-model", default=None,
                   help="run the baseline row on this checkpoint: two models paired on the same rows and seeds")
    q.add_argument("--num-samples", type=int, default=1)
    _dev_run_args(q)
    j = sub.add_parser("trajectory",
                       help="dev metrics of x̂0 along the loop: where programs form and where they break")
    _dev_rows_args(j)
    j.add_argument("--steps", type=int, default=1200, help="steps of the ancestral loop")
    j.add_argument("--at", default="", help="step counts at which x̂0 is decoded and scored, comma-separated "
                                            "(default: 13 from 1 to --steps, denser near both ends)")
    j.add_argument("--baseline-model", default=None, help="a second checkpoint run on the same rows and seeds")
    _dev_run_args(j)
    v = sub.add_parser("serve", help="throughput and p50/p99 latency of the HTTP server against concurrency")
    g = v.add_mutually_exclusive_group()
    g.add_argument("--preset", default=None, help="random weights of a preset")
    g.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    v.add_argument("--backend", default="torch")
    v.add_argument("--dtype", default="auto", help="auto (default: bfloat16 where the hardware has it, else float32) "
                                                   "| bfloat16 | float32")
    v.add_argument("--device", default="cpu")
    v.add_argument("--steps", type=int, default=20)
    v.add_argument("--concurrency", default="1,4,16,64")
    v.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    v.add_argument("--max-batch", type=int, default=64)
    v.add_argument("--max-wait-ms", type=float, default=50.0)
    v.add_argument("--quiet-ms", type=float, default=10.0)
    v.add_argument("--url", default=None,
                   help="load a server already running apart (codefusion serve) instead of one in this process")
    v.add_argument("--lang", default="bash", choices=[*sorted(PROMPTS), "mix"],
                   help="the built-in prompts of one language, or of all three in turn (mix)")
    v.add_argument("--out", default="bench/results")
    v.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    v.add_argument("--json", action="store_true")
    c = sub.add_parser("compare", help="two `codefusion eval --predictions` files of the same rows: paired "
                                       "differences with 95%% bootstrap intervals")
    c.add_argument("base", help="predictions of the baseline run")
    c.add_argument("other", help="predictions of the run compared with it (differences are OTHER - BASE)")
    c.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    c.add_argument("--out", default=None, help="also write compare.json / compare.md into this folder")
    c.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    c.add_argument("--json", action="store_true")
    r = sub.add_parser("ranking", help="one `codefusion eval --num-samples K --predictions` file: the ranked "
                                       "top-1 paired against one sample, and any of the K")
    r.add_argument("predictions", help="predictions of a run with --num-samples K >= 2")
    r.add_argument("--lang", required=True, help="bash | python | cf: the language the file was scored in")
    r.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    r.add_argument("--out", default=None, help="also write ranking.json / ranking.md into this folder")
    r.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    r.add_argument("--json", action="store_true")
    return p


def _serve(args, model, tok, config: dict) -> int:
    from codefusion.api import CodeFusion
    from codefusion.config import GenerationConfig
    from codefusion.validate import check_config

    from .serve import plot_serve, serve_load

    levels = _ints(args.concurrency)
    langs = sorted(PROMPTS) if args.lang == "mix" else [args.lang]
    for lang in langs:
        check_config(GenerationConfig(lang=lang, steps=args.steps), model.cfg, args.backend)
    if min(levels, default=0) < 1 or args.requests < 1 or args.max_batch < 1:
        raise CodeFusionError("--concurrency, --requests and --max-batch must be at least 1")
    _claim_out(args)
    cf = None if args.url else CodeFusion(model, tok, args.backend, args.device, args.dtype, config)
    if cf is not None:  # measured here: a lone request's p50 ≈ 410 ms in-process, 170 ms apart
        print("note: the load generator shares this process (and its cores) with the server, which slows both; for "
              "serving figures start `codefusion serve` and pass --url", file=sys.stderr)
    workload = [(prompt, lang) for group in zip(*(PROMPTS[lang] for lang in langs))
                for prompt, lang in zip(group, langs)]
    rows = serve_load(cf, workload, args.steps, levels, args.requests, args.max_batch, args.max_wait_ms,
                      args.quiet_ms, progress=not args.json, url=args.url)
    meta = {"suite": "serve", "model": args.model or ("preset:" + args.preset if args.preset else "default"),
            "lang": args.lang, "backend": args.backend, "dtype": args.dtype, "clamp": cf and cf.default_clamp,
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms, "quiet_ms": args.quiet_ms}
    if args.url:  # the running server's own settings, not this command's, decide how it batches
        import httpx
        try:
            health = httpx.get(args.url.rstrip("/") + "/healthz", timeout=10).json()
        except (httpx.HTTPError, ValueError) as e:
            raise CodeFusionError(f"{args.url}/healthz did not answer with JSON ({type(e).__name__}): is it a "
                                  "codefusion server?") from None
        meta = {"suite": "serve", "server": "separate process", "url": args.url, "lang": args.lang, **health}
    columns = ["concurrency", "requests", "steps", "ok", "errors", "lost", "duplicated", "mismatched",
               "throughput_rps", "speedup_vs_first", "p50_ms", "p99_ms", "requests_per_batch"]
    files = report.write(args.out, "serve", rows, columns, meta)
    return _emit(args, meta, rows, columns, files + [plot_serve(rows, Path(args.out) / "serve.png")])


def _quality(args, model, tok) -> int:
    from codefusion.api import CodeFusion
    from codefusion.config import GenerationConfig
    from codefusion.eval.evaluate import check_rows
    from codefusion.train.data import read_jsonl
    from codefusion.validate import check_config

    from .quality import headline, plot_quality, quality

    steps, solvers = _ints(args.steps), [s for s in args.solver.split(",") if s]
    clamps = tuple(c for c in args.clamp.split(",") if c)
    for solver in solvers:
        for s in steps:
            for clamp in clamps:
                check_config(GenerationConfig(lang=args.lang, steps=s, solver=solver, num_samples=args.num_samples,
                                              clamp=clamp), model.cfg, args.backend)
    if args.limit is not None and args.limit < 1:
        raise CodeFusionError(f"--limit must be at least 1, got {args.limit}")
    try:
        quantiles = tuple(float(q) for q in args.length_quantile.split(",") if q)
    except ValueError:
        raise CodeFusionError(f"--length-quantile takes numbers in (0, 1), like 0.75,0.5; got "
                              f"{args.length_quantile!r}") from None
    if any(not 0 < q < 1 for q in quantiles):
        raise CodeFusionError(f"--length-quantile values must lie in (0, 1), got {args.length_quantile}")
    rows = read_jsonl(Path(args.data))[: args.limit or None]
    check_rows(rows, args.lang)
    _claim_out(args)
    cf = CodeFusion(model, tok, args.backend, args.device, args.dtype)
    baseline_cf = (None if args.baseline_model is None else
                   CodeFusion.from_pretrained(args.baseline_model, args.backend, args.device, args.dtype))
    table = quality(cf, rows, args.lang, steps, solvers, args.seed, args.num_samples, args.batch, args.early_exit,
                    args.full_length, progress=not args.json, clamps=clamps, quantiles=quantiles,
                    baseline_cf=baseline_cf)
    meta = {"suite": "quality", "model": args.model or ("preset:" + args.preset if args.preset else "default"),
            "lang": args.lang, "data": args.data, "examples": len(rows), "backend": args.backend, "dtype": args.dtype,
            "seed": args.seed, "baseline": f"ddpm, {max(steps)} steps"
            + ("" if args.baseline_model is None else f", model {args.baseline_model}")}
    columns = ["solver", "steps", "clamp", "variant", "n", "ms_per_row"]
    for name in headline(args.lang):
        columns += [name, f"diff_{name}", f"diff_ci95_{name}"]
    files = report.write(args.out, f"quality_{args.lang}", table, columns, meta)
    return _emit(args, meta, table, columns, files + [plot_quality(table, args.lang,
                                                                   Path(args.out) / f"quality_{args.lang}.png")])


def _trajectory(args, model, tok) -> int:
    from codefusion.api import CodeFusion
    from codefusion.config import GenerationConfig
    from codefusion.eval.evaluate import check_rows
    from codefusion.train.data import read_jsonl
    from codefusion.validate import check_config

    from .quality import headline
    from .trajectory import plot_trajectory, stops, trajectory

    at = _ints(args.at) or stops(args.steps, 13)
    check_config(GenerationConfig(lang=args.lang, steps=args.steps, trace_steps=at), model.cfg, args.backend)
    if args.limit is not None and args.limit < 1 or args.batch < 1:
        raise CodeFusionError(f"--limit and --batch must be at least 1, got {args.limit} and {args.batch}")
    rows = read_jsonl(Path(args.data))[: args.limit or None]
    check_rows(rows, args.lang)
    _claim_out(args)
    label = args.model or ("preset:" + args.preset if args.preset else "default")
    models = [(label, CodeFusion(model, tok, args.backend, args.device, args.dtype))]
    if args.baseline_model is not None:
        models.insert(0, (args.baseline_model, CodeFusion.from_pretrained(args.baseline_model, args.backend,
                                                                          args.device, args.dtype)))
    table = trajectory(models, rows, args.lang, args.steps, at, args.seed, args.batch, progress=not args.json)
    meta = {"suite": "trajectory", "model": label, "baseline_model": args.baseline_model, "lang": args.lang,
            "data": args.data, "examples": len(rows), "steps": args.steps, "backend": args.backend, "dtype": args.dtype,
            "seed": args.seed}
    columns = ["model", "step", "timestep", "n"]
    for name in headline(args.lang):
        columns += [name, f"ci95_{name}"]
    files = report.write(args.out, f"trajectory_{args.lang}", table, columns, meta)
    return _emit(args, meta, table, columns,
                 files + [plot_trajectory(table, args.lang, Path(args.out) / f"trajectory_{args.lang}.png")])


def _check(args, model) -> None:
    """Every flag that becomes a GenerationConfig is checked like a request, before any work."""
    from codefusion.config import GenerationConfig
    from codefusion.validate import check_config
    for backend in args.backend.split(","):
        for steps in _ints(args.steps):
            check_config(GenerationConfig(lang=args.lang, steps=steps, solver=args.solver,
                                          num_samples=args.num_samples, seed=args.seed, max_length=args.max_length),
                         model.cfg, backend)
    if min(_ints(args.batch), default=0) < 1 or getattr(args, "repeats", 1) < 1:
        raise CodeFusionError("--batch and --repeats must be at least 1")
    if not _ints(args.steps):
        raise CodeFusionError(f"--steps needs a step count, got {args.steps!r}")
    if args.suite == "parity" and (len(_ints(args.steps)) > 1 or len(_ints(args.batch)) > 1):
        raise CodeFusionError("bench parity runs one --steps and one --batch (prompts per chunk); run it once per "
                              f"value, got --steps {args.steps} --batch {args.batch}")


def _compare(args) -> int:
    from .compare import COLUMNS, compare, read_predictions

    base = read_predictions(args.base)
    _claim_out(args)
    table = compare(base, read_predictions(args.other), args.seed, (args.base, args.other))
    meta = {"suite": "compare", "base": args.base, "other": args.other, "seed": args.seed, "examples": len(base)}
    files = report.write(args.out, "compare", table, COLUMNS, meta) if args.out else []
    return _emit(args, meta, table, COLUMNS, files)


def _ranking(args) -> int:
    from .compare import read_predictions
    from .ranking import COLUMNS, ranking

    rows = read_predictions(args.predictions)
    _claim_out(args)
    table = ranking(rows, args.lang, args.seed, args.predictions)
    meta = {"suite": "ranking", "predictions": args.predictions, "lang": args.lang, "seed": args.seed,
            "examples": len(rows)}
    files = report.write(args.out, "ranking", table, COLUMNS, meta) if args.out else []
    return _emit(args, meta, table, COLUMNS, files)


def _kernels(args) -> int:
    from codefusion.config import get_preset
    from codefusion.kernels._common import interpreting
    from codefusion.validate import parse_device, parse_dtype

    from .kernels import COLUMNS, GRAPH_CALLS, bench_kernels

    batches, device = _ints(args.batch), parse_device(args.device)
    if not batches or min(batches) < 1 or args.repeats < 1 or (args.max_length is not None and args.max_length < 1):
        raise CodeFusionError("--batch, --repeats and --max-length must be at least 1")
    if device.type == "cuda" and interpreting():
        raise CodeFusionError("TRITON_INTERPRET is set: the Triton rows would time the interpreter; unset it")
    _claim_out(args)
    cfg, rows = get_preset(args.preset), []
    for dtype in args.dtype.split(","):
        rows += bench_kernels(cfg, device, parse_dtype(dtype), batches, args.repeats, args.max_length, not args.json)
    meta = {"suite": "kernels", "preset": args.preset, "repeats": args.repeats,
            "statistic": "median (p10, p90) µs per call after 3 warm-up calls: perf_counter on CPU, CUDA events on "
                         f"a GPU; graph_us_p50 = {GRAPH_CALLS} calls replayed from one CUDA graph, per call; "
                         "fused_speedup = this row's p50 / the fused implementation's (the case's first row)"}
    files = report.write(args.out, "kernels", rows, COLUMNS, meta) if args.out else []
    return _emit(args, meta, rows, COLUMNS, files)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.suite in ("quality", "trajectory") and args.lang is None:
        from codefusion.train.data import DATASET_LANG
        args.lang = DATASET_LANG.get(Path(args.data).parent.name)
        if args.lang is None:
            raise CodeFusionError(f"cannot tell the language of {args.data}: pass --lang bash|python|cf")
    if getattr(args, "out", None) is not None:  # a bad --out fails now, not after the run (created when written)
        out_dir(args.out, create=False)
    if args.suite == "compare":  # scores two files: no model to load
        return _compare(args)
    if args.suite == "ranking":  # scores one file: no model to load
        return _ranking(args)
    args.dtype, note = resolve_dtypes(args.dtype, args.device)
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.suite == "kernels":  # kernels on random inputs: no model to load
        return _kernels(args)
    model, tok, config = load_model(args)
    if args.suite == "quality":
        return _quality(args, model, tok)
    if args.suite == "serve":
        return _serve(args, model, tok, config)
    if args.suite == "trajectory":
        return _trajectory(args, model, tok)
    _check(args, model)
    prompts = load_prompts(args)
    _claim_out(args)
    backends, dtypes = args.backend.split(","), args.dtype.split(",")
    meta = {"suite": args.suite, "model": args.model or ("preset:" + args.preset if args.preset else "default"),
            "lang": args.lang, "prompts": len(prompts), "solver": args.solver, "seed": args.seed}
    if args.suite == "latency":
        from .latency import latency
        rows = latency(model, tok, prompts, args.lang, backends, dtypes, _ints(args.batch), _ints(args.steps),
                       args.solver, args.num_samples, args.max_length, args.repeats, args.device, not args.json,
                       clamp=args.clamp, config=config, seed=args.seed)
        files = report.write(args.out, "latency", rows, LATENCY_COLUMNS, meta)
        png = report.plot_latency(rows, Path(args.out) / "latency.png")
        files += [png] if png else []
    else:
        from .parity import parity
        rows = parity(model, tok, prompts, args.lang, backends, dtypes, _ints(args.steps)[0], args.solver, args.seed,
                      args.num_samples, args.max_length, _ints(args.batch)[0], args.device, not args.json)
        files = report.write(args.out, "parity", rows, PARITY_COLUMNS, meta)
    return _emit(args, meta, rows, LATENCY_COLUMNS if args.suite == "latency" else PARITY_COLUMNS, files)


def _claim_out(args) -> None:
    """Called once a suite's flags are checked, before its work: an earlier run's results in --out are kept
    unless --force (the default --out, bench/results, holds the checkout's committed ones)."""
    if getattr(args, "out", None) is None:
        return
    name = f"{args.suite}_{args.lang}" if args.suite in ("quality", "trajectory") else args.suite
    earlier = [f for f in report.outputs(args.out, name) if f.exists()]
    if earlier and not args.force:
        raise CodeFusionError(f"{earlier[0]} holds an earlier run's results: pass --force to replace them, or "
                              "--out another folder")


def _emit(args, meta: dict, rows: list[dict], columns: list[str], files: list) -> int:
    """--json: one object on stdout; else the Markdown table, and the files written on stderr."""
    if args.json:
        print(json.dumps({"environment": report.environment(), **meta, "rows": rows}))
    else:
        print(report.markdown(rows, columns))
        if files:
            print("wrote " + ", ".join(str(f) for f in files if f), file=sys.stderr)
    return 0
