"""``codefusion export onnx | tensorrt | verify`` (parses its own flags, like ``codefusion bench``).

    codefusion export onnx     [--model DIR] --out DIR [--dtype fp32|fp16] [--opset N] [--force]
    codefusion export tensorrt [--model DIR] --out DIR [--dtype fp16|bf16] [--opset N] [--force]
    codefusion export verify   --export DIR [--model DIR] [--data FILE.jsonl] [--limit N] [--lang L]
                               [--steps N] [--solver S] [--seed S] [--json]

``--model`` defaults to the embedded model; for ``tensorrt`` it may also be an ONNX export directory.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codefusion.errors import CodeFusionError, OneLineParser


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="codefusion export", description="ONNX / TensorRT export of the engine's graphs, and their verification")
    sub = p.add_subparsers(dest="target", required=True)
    for name, dtype, choices in (("onnx", "fp32", ["fp32", "fp16"]), ("tensorrt", "fp16", ["fp16", "bf16"])):
        s = sub.add_parser(name, help=f"export the torch backend's fp32 model to {name}")
        s.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
        s.add_argument("--out", required=True, help="directory to create")
        s.add_argument("--dtype", default=dtype, choices=choices,
                       help="precision of the denoiser and decoder (the T5 encoder stays fp32)")
        s.add_argument("--opset", type=int, default=None, help="ONNX opset (default 20; 18..23)")
        s.add_argument("--force", action="store_true", help="overwrite an existing --out")
    v = sub.add_parser("verify", help="eager vs ONNX Runtime (vs TensorRT when present)")
    v.add_argument("--export", required=True, help="export directory (codefusion export onnx --out)")
    v.add_argument("--model", default=None, help="the checkpoint it was exported from (default: the embedded model)")
    v.add_argument("--data", default=None, help="JSONL rows whose nl fields are the prompts (default: built-in)")
    v.add_argument("--limit", type=int, default=None)
    v.add_argument("--lang", default="bash", choices=["bash", "python", "cf"])
    v.add_argument("--steps", type=int, default=20)
    v.add_argument("--solver", default="ddpm", choices=["ddpm", "ddim", "dpmpp_2m"])
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def _onnx(args) -> int:
    from .onnx import DEFAULT_OPSET, export_onnx, export_summary
    out = export_onnx(args.model, args.out, args.dtype, args.opset or DEFAULT_OPSET, args.force)
    print(export_summary(out), file=sys.stderr)
    return 0


def _tensorrt(args) -> int:
    from .tensorrt import export_tensorrt
    out = export_tensorrt(args.model, args.out, args.dtype, args.force, args.opset)
    print(f"wrote TensorRT engines ({args.dtype}) to {out}", file=sys.stderr)
    return 0


def _verify(args) -> int:
    from .verify import PROMPTS, verify
    if args.limit is not None and args.limit < 1:
        raise CodeFusionError(f"--limit must be at least 1, got {args.limit}")
    prompts = PROMPTS[args.lang][: args.limit]
    if args.data:
        from codefusion.train.data import read_jsonl
        if not Path(args.data).is_file():
            raise CodeFusionError(f"--data {args.data} is not a file: give a JSONL file with an nl field per row")
        prompts = [r["nl"] for r in read_jsonl(Path(args.data))][: args.limit]
        if not prompts:
            raise CodeFusionError(f"--data {args.data} holds no rows")
    if args.steps < 1:
        raise CodeFusionError(f"--steps must be at least 1, got {args.steps}")
    if not 0 <= args.seed < 2 ** 63:
        raise CodeFusionError(f"--seed must be an integer in 0..2^63-1, got {args.seed}")
    report = verify(args.export, args.model, prompts, args.lang, args.steps, args.solver, args.seed)
    if args.json:
        print(json.dumps(report))
        return 0
    for name, errs in report["graphs"].items():
        print(f"{name:9s} " + "  ".join(f"{k} {v:.2e}" for k, v in errs.items() if not k.startswith("kv_"))
              + (f"  kv max {max(v for k, v in errs.items() if k.startswith('kv_')):.2e}" if name == "encoder" else ""))
    e = report["onnxruntime"]
    print(f"end to end ({e['prompts']} prompts, {e['steps']} steps {e['solver']}): max |Δx̂0| {e['max_abs_dx0']:.2e}, "
          f"tokens {e['token_agreement']:.2%}, programs {e['program_agreement']:.2%}, "
          f"length buckets {e['length_agreement']:.2%}")
    print(f"tensorrt: {report['tensorrt']}")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return {"onnx": _onnx, "tensorrt": _tensorrt, "verify": _verify}[args.target](args)
