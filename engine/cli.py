"""Command line: ``codefusion generate | eval | bench | export | pack | tokenizer | train`` (DESIGN §5).

Errors a user can fix print ``error: <one line>`` on stderr and exit with status 2; ``--json``
output is one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from . import arguments
from .errors import CodeFusionError, Terminated, raise_on_sigterm


def _load(args):
    """The model of --model (default: the embedded one) on --backend/--device/--dtype, at --length-quantile."""
    from .api import CodeFusion
    cf = CodeFusion.from_pretrained(args.model, backend=args.backend, device=args.device, dtype=args.dtype)
    cf.length_quantile = args.length_quantile
    return cf


def _generate(args) -> int:
    from tqdm import tqdm

    from .config import GenerationConfig

    cf = _load(args)
    try:
        trace = tuple(int(s) for s in args.trace.split(",")) if args.trace else ()
    except ValueError:
        raise CodeFusionError(f"--trace takes comma-separated step counts, e.g. --trace 1,50,100; got {args.trace!r}"
                              ) from None
    config = GenerationConfig(lang=args.lang, steps=args.steps, solver=args.solver, num_samples=args.num_samples,
                              seed=args.seed, max_length=args.max_length, trace_steps=trace, eta=args.eta,
                              clamp=args.clamp, early_exit=args.early_exit)
    # a bar on stderr while the loop runs (tqdm leaves it out when stderr is not a terminal)
    with tqdm(desc="denoising", unit="step", leave=False, disable=None) as bar:
        progress = None if bar.disable else (lambda done, total: _advance(bar, done, total))
        out = cf.generate([args.text], config, progress=progress)
    if args.json:
        print(json.dumps(out.to_json(), ensure_ascii=False))
        return 0
    for w in out.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for step in out.trace or []:
        print(f"# step {step['step']} (t={step['timestep']}): {step['texts'][0][0]}")
    for text, score in zip(out.texts[0], out.scores[0]):
        print(text if len(out.texts[0]) == 1 else f"{score:8.4f}  {text}")
    return 0


def _advance(bar, done: int, total: int) -> None:
    bar.total = total
    bar.update(done - bar.n)


def _eval(args) -> int:
    from pathlib import Path

    from .config import GenerationConfig
    from .eval.evaluate import check_rows, evaluate, format_report, write_predictions
    from .train.data import DATASET_LANG, read_jsonl

    path = Path(args.data)
    if not path.is_file():
        raise CodeFusionError(f"--data {path} is not a file: give a JSONL split such as shared/data/nl2bash/dev.jsonl")
    lang = args.lang or DATASET_LANG.get(path.parent.name)
    if lang is None:
        raise CodeFusionError(f"cannot tell the language of {path}: pass --lang bash|python|cf")
    if args.predictions:
        from .validate import out_file
        if Path(args.predictions).resolve() == path.resolve():
            raise CodeFusionError(f"--predictions {args.predictions} is --data itself: write the predictions "
                                  "elsewhere (--force never replaces the data being read)")
        out_file(args.predictions, args.force, "--predictions")
    rows = read_jsonl(path, args.on_bad_line)
    if args.limit is not None:
        if args.limit < 1:
            raise CodeFusionError(f"--limit must be at least 1, got {args.limit}")
        rows = rows[:args.limit]
    check_rows(rows, lang)  # before the model loads: a wrong --lang or table fails in a second
    cf = _load(args)
    config = GenerationConfig(lang=lang, steps=args.steps, solver=args.solver, num_samples=args.num_samples,
                              seed=args.seed, max_length=args.max_length, eta=args.eta, clamp=args.clamp,
                              early_exit=args.early_exit)
    result = evaluate(cf, rows, lang, config, args.batch_size, progress=None, codebert=args.codebert)
    if args.json:  # the figures first: a predictions file that cannot be written loses nothing else
        print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)
    else:
        title = (f"{path} · {result.n} rows · {lang} · {config.steps} steps {config.solver} · "
                 f"k={config.num_samples} · seed {config.seed}")
        print(format_report(result, title), flush=True)
    if args.predictions:
        try:
            write_predictions(args.predictions, result.rows)
        except OSError as e:
            raise CodeFusionError(f"--predictions {args.predictions} could not be written ({e.strerror or e}); the "
                                  "figures above stand") from None
    return 0


def _pack(args) -> int:
    from .pack import pack

    print(pack(args.model, args.out, args.dtype, args.default_clamp, args.blend or [], args.force), file=sys.stderr)
    return 0


def _tokenizer(args) -> int:
    from pathlib import Path

    from .checkpoint import replace_atomically
    from .tokenizer import SPECIALS, CodeTokenizer
    from .train.data import load_split, tokenizer_texts
    from .validate import out_file

    least = 256 + len(SPECIALS)  # the byte alphabet and the special tokens
    if args.vocab_size < least:
        raise CodeFusionError(f"--vocab-size must be at least {least} (256 bytes + {len(SPECIALS)} special tokens), "
                              f"got {args.vocab_size}")
    out_file(args.out, args.force)

    texts = [t for split in args.splits.split(",")
             for t in tokenizer_texts(load_split(args.data, args.datasets, split, args.on_bad_line))]
    tok = CodeTokenizer.train(texts, args.vocab_size)
    replace_atomically(Path(args.out), tok.save)  # --force over a tokenizer: a crash keeps the old one whole
    print(f"wrote {args.out}: {tok.vocab_size} tokens from {len(texts)} texts", file=sys.stderr)
    return 0


def _train(args) -> int:
    from .train.config import TrainConfig
    from .train.trainer import train

    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    out = train(TrainConfig(**fields))
    print(f"checkpoint: {out}", file=sys.stderr)
    return 0


def _export(argv: list[str]) -> int:
    try:
        from codefusion.export.cli import main as export_main
        return export_main(argv)
    except CodeFusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # onnx, onnxruntime or onnxscript missing
        print(f"error: codefusion export needs the package {e.name!r}: pip install onnx onnxscript onnxruntime",
              file=sys.stderr)
        return 2


def _serve(args) -> int:
    import os

    from .server.app import Limits
    if min(args.max_batch, args.max_queue, args.replicas) < 1 or not args.timeout > 0 or not all(
            math.isfinite(v) and v >= 0 for v in (args.max_wait_ms, args.quiet_ms)):  # nan: a batch never closed
        raise CodeFusionError("--max-batch, --max-queue, --replicas must be ≥ 1, --timeout > 0, "
                              "--max-wait-ms and --quiet-ms ≥ 0")
    api_key = args.api_key or os.environ.get("CODEFUSION_API_KEY")
    limits = Limits(timeout_s=args.timeout)
    if args.ray:
        from .server.ray_app import serve_ray
        _say_note(args)
        return serve_ray(args.model, args.backend, args.device, args.dtype, args.replicas, args.max_batch,
                         args.max_wait_ms, args.host, args.port, args.length_quantile, api_key)
    from .server.app import create_app, serve_on_main_thread
    cf = _load(args)
    _say_note(args)  # a server runs until stopped: say it as it starts, once its model has loaded
    app = create_app(cf, args.max_batch, args.max_wait_ms, args.max_queue, api_key, limits, own_worker=False,
                     quiet_ms=args.quiet_ms)
    # uvicorn takes whole seconds: round up, plus one, so a request accepted just before SIGTERM can still finish
    serve_on_main_thread(app, args.host, args.port, math.ceil(args.timeout) + 1)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The flags of arguments.py, each command's ``args.func`` one of the functions above."""
    return arguments.build_parser({"generate": _generate, "eval": _eval, "pack": _pack, "tokenizer": _tokenizer,
                                   "train": _train, "serve": _serve})


def _triton_on_cpu(argv: list[str]) -> None:
    """`--backend triton` with no CUDA device runs the kernels in Triton's interpreter, which must be
    switched on before anything imports triton (loading a model does, through torch._dynamo)."""
    def value(flag: str) -> str:
        return next((argv[j + 1] for j, a in enumerate(argv[:-1]) if a == flag), "") or \
            next((a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")), "")
    if "triton" in value("--backend").split(",") and not value("--device").startswith("cuda"):
        import os
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _say_note(args) -> None:
    """Print the dtype note of ``_resolve_dtype`` now rather than when the command ends, once."""
    if getattr(args, "note", None):
        print(f"note: {args.note}", file=sys.stderr)
        args.note = None


def _resolve_dtype(args) -> str | None:
    """--dtype auto made concrete for the device of a command that computes (generate, eval, serve). Returns the
    note for a run in bf16 on a CPU that emulates it: ``main`` prints it once generate or eval has succeeded (an
    error stays one line), serve as it starts (``_say_note``). train resolves its own (trainer.py)."""
    if args.func not in (_generate, _eval, _serve):
        return None
    from .validate import resolve_dtypes
    args.dtype, note = resolve_dtypes(args.dtype, args.device)
    return note


def main(argv: list[str] | None = None) -> int:
    """SIGTERM ends every command as Ctrl-C does (errors.Terminated): by default it would kill the process on
    the spot, leaving e.g. the onnxruntime backend's temporary export behind or a training step unsaved."""
    import signal
    import threading

    previous = None
    current = signal.getsignal(signal.SIGTERM)  # an ignored SIGTERM (SIG_IGN) stays ignored; None: set outside Python
    if threading.current_thread() is threading.main_thread() and current not in (signal.SIG_IGN, None):
        previous = signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        return _main(argv)
    except Terminated:  # every command's, bench and export (which parse and run their own) included
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _triton_on_cpu(argv)
    if argv[:1] == ["bench"]:  # the bench suite parses its own flags (codefusion.bench.cli)
        try:
            from codefusion.bench.cli import main as bench_main
            return bench_main(argv[1:])
        except CodeFusionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if argv[:1] == ["export"]:  # codefusion.export.cli parses its own flags too
        return _export(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        args.note = _resolve_dtype(args)  # serve says it as it starts (_say_note), the rest once they succeed
        status = args.func(args)
        if status == 0:
            _say_note(args)
        return status
    except CodeFusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not (isinstance(e, MemoryError) or "allocate memory" in text or "out of memory" in text.lower()):
            raise
        print(f"error: out of memory ({text[:120]}): ask for fewer prompts × --num-samples, a shorter --max-length "
              "or --dtype bfloat16", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
