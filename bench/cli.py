"""``codefusion bench latency | parity | kernels | quality | trajectory | serve | compare | ranking``: model loading,
the checks and runs of each suite, JSON / Markdown / PNG output (the flags: bench/arguments.py)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from codefusion.errors import CodeFusionError
from codefusion.validate import out_dir, resolve_dtypes

from . import report
from .arguments import DEFAULT_OUT, build_parser
from .prompts import PROMPTS

LATENCY_COLUMNS = ["backend", "device", "dtype", "batch", "samples", "steps", "solver", "clamp", "n", "ms_per_step_p50",
                   "ms_per_step_p90", "total_ms_p50", "total_ms_p90", "cold_start_ms", "gflop_per_step", "mb_per_step",
                   "prompts_timed"]
PARITY_COLUMNS = ["backend", "device", "dtype", "steps", "solver", "prompts", "samples", "n", "max_abs_err",
                  "max_step_err", "token_agreement", "decided_agreement", "near_ties", "program_agreement"]


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


def _data_rows(args) -> list[dict]:
    """The rows of --data (a JSONL split), the first --limit of them."""
    from codefusion.train.data import read_jsonl
    if not Path(args.data).is_file():
        raise CodeFusionError(f"--data {args.data} is not a file: give a JSONL split such as "
                              "shared/data/nl2bash/dev.jsonl")
    try:
        return read_jsonl(Path(args.data))[: args.limit or None]
    except CodeFusionError as e:  # bench has no --on-bad-line: every line must be good
        raise CodeFusionError(str(e).replace(" or pass --on-bad-line skip", "")) from None


def load_prompts(args) -> list[str]:
    """The built-in prompts of --lang, or the nl fields of --data; the first --limit of them."""
    if args.limit is not None and args.limit < 1:
        raise CodeFusionError(f"--limit must be at least 1, got {args.limit}")
    if not args.data:
        return PROMPTS[args.lang][: args.limit]
    prompts = [r["nl"] for r in _data_rows(args)]
    if not prompts:
        raise CodeFusionError(f"--data {args.data} holds no rows")
    return prompts


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
    if not all(math.isfinite(v) and v >= 0 for v in (args.max_wait_ms, args.quiet_ms)):  # nan: a batch never closed
        raise CodeFusionError(f"--max-wait-ms and --quiet-ms must be finite and ≥ 0, got {args.max_wait_ms} and "
                              f"{args.quiet_ms}")
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
    return _emit(args, meta, rows, columns, _files(args, "serve", rows, columns, meta, lambda f: plot_serve(rows, f)))


def _quality(args, model, tok) -> int:
    from codefusion.api import CodeFusion
    from codefusion.config import GenerationConfig
    from codefusion.eval.evaluate import check_rows
    from codefusion.validate import check_config

    from .quality import headline, plot_quality, quality

    steps, solvers = _ints(args.steps), [s for s in args.solver.split(",") if s]
    clamps = tuple(c for c in args.clamp.split(",") if c)
    if not (steps and solvers and clamps):
        raise CodeFusionError(f"--steps, --solver and --clamp each need at least one value, got --steps "
                              f"{args.steps!r} --solver {args.solver!r} --clamp {args.clamp!r}")
    for solver in solvers:
        for s in steps:
            for clamp in clamps:
                check_config(GenerationConfig(lang=args.lang, steps=s, solver=solver, num_samples=args.num_samples,
                                              clamp=clamp), model.cfg, args.backend)
    if args.limit is not None and args.limit < 1 or args.batch < 1:
        raise CodeFusionError(f"--limit and --batch must be at least 1, got {args.limit} and {args.batch}")
    try:
        quantiles = tuple(float(q) for q in args.length_quantile.split(",") if q)
    except ValueError:
        raise CodeFusionError(f"--length-quantile takes numbers in (0, 1), like 0.75,0.5; got "
                              f"{args.length_quantile!r}") from None
    if any(not 0 < q < 1 for q in quantiles):
        raise CodeFusionError(f"--length-quantile values must lie in (0, 1), got {args.length_quantile}")
    rows = _data_rows(args)
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
    meta.update(_cf_notes(args.lang, rows))
    columns = ["solver", "steps", "clamp", "variant", "n", "ms_per_row"]
    for name in headline(args.lang):
        columns += [name, *([f"n_{name}"] if any(f"n_{name}" in r for r in table) else []), f"diff_{name}",
                    f"diff_ci95_{name}"]
    return _emit(args, meta, table, columns, _files(args, f"quality_{args.lang}", table, columns, meta,
                                                    lambda f: plot_quality(table, args.lang, f)))


def _trajectory(args, model, tok) -> int:
    from codefusion.api import CodeFusion
    from codefusion.config import GenerationConfig
    from codefusion.eval.evaluate import check_rows
    from codefusion.validate import check_config

    from .quality import headline
    from .trajectory import plot_trajectory, stops, trajectory

    at = _ints(args.at) or stops(args.steps, 13)
    check_config(GenerationConfig(lang=args.lang, steps=args.steps, trace_steps=at), model.cfg, args.backend)
    if args.limit is not None and args.limit < 1 or args.batch < 1:
        raise CodeFusionError(f"--limit and --batch must be at least 1, got {args.limit} and {args.batch}")
    rows = _data_rows(args)
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
    meta.update(_cf_notes(args.lang, rows))
    columns = ["model", "step", "timestep", "n"]
    for name in headline(args.lang):
        columns += [name, *([f"n_{name}"] if any(f"n_{name}" in r for r in table) else []), f"ci95_{name}"]
    return _emit(args, meta, table, columns, _files(args, f"trajectory_{args.lang}", table, columns, meta,
                                                    lambda f: plot_trajectory(table, args.lang, f)))


def _cf_notes(lang: str, rows: list[dict]) -> dict:
    """For CF: what exec_match gives a rule that ignores its table, on the rows it counts (eval prints the same)."""
    if lang != "cf":
        return {}
    from codefusion.eval.evaluate import constant_rule_baseline, exec_flags
    return {"notes": [constant_rule_baseline([r for r in rows if exec_flags(r, [r["code"]]) is not None])]}


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
    if args.suite == "latency" and "triton" in args.backend.split(",") and _interpreted(args.device):
        raise CodeFusionError("bench latency --backend triton on a CPU would time Triton's interpreter, not the "
                              "kernels: run it with --device cuda on a GPU (parity and the tests use the interpreter)")
    if args.suite == "parity" and not (math.isfinite(args.margin_eps) and args.margin_eps >= 0):
        raise CodeFusionError(f"--margin-eps is a logit margin: a finite number ≥ 0, got {args.margin_eps}")
    if args.suite == "parity" and (len(_ints(args.steps)) > 1 or len(_ints(args.batch)) > 1):
        raise CodeFusionError("bench parity runs one --steps and one --batch (prompts per chunk); run it once per "
                              f"value, got --steps {args.steps} --batch {args.batch}")


def _interpreted(device: str) -> bool:
    """Whether the triton backend would run interpreted here: on a CPU, or with TRITON_INTERPRET set."""
    from codefusion.kernels._common import interpreting
    try:
        kind = torch.device(device).type  # cuda:0 too
    except RuntimeError:
        return False  # a --device torch does not know fails in one line where the engine is built
    return kind != "cuda" or not torch.cuda.is_available() or interpreting()


def _compare(args) -> int:
    from .compare import COLUMNS, compare, read_predictions

    base = read_predictions(args.base)
    _claim_out(args)
    table = compare(base, read_predictions(args.other), args.seed, (args.base, args.other))
    meta = {"suite": "compare", "base": args.base, "other": args.other, "seed": args.seed, "examples": len(base)}
    files = _files(args, "compare", table, COLUMNS, meta)
    return _emit(args, meta, table, COLUMNS, files)


def _ranking(args) -> int:
    from .compare import read_predictions
    from .ranking import COLUMNS, ranking

    rows = read_predictions(args.predictions)
    _claim_out(args)
    table = ranking(rows, args.lang, args.seed, args.predictions)
    meta = {"suite": "ranking", "predictions": args.predictions, "lang": args.lang, "seed": args.seed,
            "examples": len(rows)}
    files = _files(args, "ranking", table, COLUMNS, meta)
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
    for i, dtype in enumerate(args.dtype.split(",")):  # the solver step is fp32 whatever --dtype: timed once
        rows += bench_kernels(cfg, device, parse_dtype(dtype), batches, args.repeats, args.max_length, not args.json,
                              solver=i == 0)
    meta = {"suite": "kernels", "preset": args.preset, "repeats": args.repeats,
            "statistic": "median (p10, p90) µs per call after 3 warm-up calls: perf_counter on CPU, CUDA events on "
                         f"a GPU; graph_us_p50 = {GRAPH_CALLS} calls replayed from one CUDA graph, per call; "
                         "fused_speedup = this row's p50 / the fused implementation's (the case's first row)"}
    files = _files(args, "kernels", rows, COLUMNS, meta)
    return _emit(args, meta, rows, COLUMNS, files)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.suite in ("quality", "trajectory") and args.lang is None:
        from codefusion.train.data import DATASET_LANG
        args.lang = DATASET_LANG.get(Path(args.data).parent.name)
        if args.lang is None:
            raise CodeFusionError(f"cannot tell the language of {args.data}: pass --lang bash|python|cf")
    if args.suite not in ("compare", "ranking") and args.out is None and not args.json:
        args.out = DEFAULT_OUT  # --json alone prints the rows and writes nothing
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
        files = _files(args, "latency", rows, LATENCY_COLUMNS, meta, lambda f: report.plot_latency(rows, f))
    else:
        from .parity import parity
        rows = parity(model, tok, prompts, args.lang, backends, dtypes, _ints(args.steps)[0], args.solver, args.seed,
                      args.num_samples, args.max_length, _ints(args.batch)[0], args.device, not args.json,
                      args.margin_eps)
        files = _files(args, "parity", rows, PARITY_COLUMNS, meta)
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


def _files(args, name: str, rows: list[dict], columns: list[str], meta: dict, plot=None) -> list:
    """<name>.json / .md (and ``plot(<name>.png)``'s figure) in --out → the files written; none without --out."""
    if args.out is None:
        return []
    files = report.write(args.out, name, rows, columns, meta)
    return files + ([plot(Path(args.out) / f"{name}.png")] if plot else [])


def _emit(args, meta: dict, rows: list[dict], columns: list[str], files: list) -> int:
    """--json: one object on stdout; else the Markdown table, and the files written on stderr."""
    if args.json:
        print(report.to_json({"environment": report.environment(), **meta, "rows": rows}))
    else:
        print(report.markdown(rows, columns))
        if files:
            print("wrote " + ", ".join(str(f) for f in files if f), file=sys.stderr)
    return 0
