"""The flags of ``codefusion generate | eval | pack | tokenizer | train | serve``, one subparser per command (cli.py
runs them; bench and export parse their own). Declared without importing torch, so that ``codefusion --help`` and the
commands that never load a model stay fast to start."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

from .config import CLAMPS
from .errors import OneLineParser

DTYPE_HELP = ("float32 (default; the reference's numbers) | bfloat16 (fast on a GPU or a CPU with AMX / AVX512-BF16, "
              "slow elsewhere) | auto (bfloat16 where it is fast, else float32)")
CLAMP_HELP = ("round x̂0 every step: to the nearest code embedding (bare --clamp), or 'decode': to the embeddings of "
              "the tokens the decoder reads from it; none is the reference sampler (default: the model's own, "
              "its config.json's generation.clamp; the embedded model's is decode)")


def _quantile(text: str) -> float:
    try:
        q = float(text)
    except ValueError:
        q = float("nan")
    if not 0 < q < 1:  # also false for nan
        raise argparse.ArgumentTypeError(f"takes a number in (0, 1) such as 0.75, got {text!r}")
    return q


def _length_quantile_arg(parser: argparse.ArgumentParser) -> None:
    from .config import LENGTH_QUANTILE
    parser.add_argument("--length-quantile", type=_quantile, default=LENGTH_QUANTILE,
                        help="without --max-length, run each request at the bucket that holds this quantile of the "
                             f"length head's prediction (default {LENGTH_QUANTILE}; lower: faster, truncates more)")


def build_parser(commands: Mapping[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The parser of ``codefusion``; ``args.func`` of each command is ``commands[name]`` (cli.py's functions)."""
    p = OneLineParser(prog="codefusion", description="CodeFusion: diffusion models for code generation")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", help="benchmarks: codefusion bench "
                                 "latency|parity|kernels|quality|trajectory|serve|compare|ranking --help")
    sub.add_parser("export", help="ONNX / TensorRT export: codefusion export onnx|tensorrt|verify --help")

    g = sub.add_parser("generate", help="generate code from a natural-language request")
    g.add_argument("text")
    g.add_argument("--lang", default="bash", help="bash | python | cf")
    g.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    g.add_argument("--steps", type=int, default=1200)
    g.add_argument("--solver", default="ddpm", help="ddpm | ddim | dpmpp_2m")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM η")
    g.add_argument("--num-samples", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-length", type=int, default=None, help="target length in tokens (default: the model's)")
    g.add_argument("--clamp", nargs="?", const="nearest", default=None, choices=CLAMPS, help=CLAMP_HELP)
    g.add_argument("--early-exit", action="store_true", help="stop once every sample's tokens have settled (torch)")
    g.add_argument("--trace", default=None, help="comma-separated step counts at which to show the decoded x̂0")
    _length_quantile_arg(g)
    g.add_argument("--backend", default="torch", help="torch (default; in fp32 the reference's own numbers, faster) | "
                   "reference | torch-compile | triton | onnxruntime | tensorrt")
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="float32", help=DTYPE_HELP)
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=commands["generate"])

    e = sub.add_parser("eval", help="generate for a JSONL split and score it the way the CodeFusion paper does")
    e.add_argument("--data", required=True, help="JSONL rows {id, nl, code[, data, labels]}")
    e.add_argument("--lang", default=None, help="bash | python | cf (default: from the dataset folder's name)")
    e.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    e.add_argument("--limit", type=int, default=None, help="evaluate the first N rows")
    e.add_argument("--steps", type=int, default=1200)
    e.add_argument("--solver", default="ddpm", help="ddpm | ddim | dpmpp_2m")
    e.add_argument("--eta", type=float, default=0.0, help="DDIM η")
    e.add_argument("--num-samples", type=int, default=1, help="k samples per row; top-1/3/5 are reported up to k")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--clamp", nargs="?", const="nearest", default=None, choices=CLAMPS, help=CLAMP_HELP)
    e.add_argument("--early-exit", action="store_true", help="stop once every sample's tokens have settled (torch)")
    e.add_argument("--max-length", type=int, default=None, help="target length in tokens (default: the model's)")
    e.add_argument("--batch-size", type=int, default=64, help="sequences (rows × samples) per denoising batch")
    _length_quantile_arg(e)
    e.add_argument("--backend", default="torch", help="as for generate")
    e.add_argument("--device", default="cpu")
    e.add_argument("--dtype", default="float32", help=DTYPE_HELP)
    e.add_argument("--codebert", default=None, help="local CodeBERT directory: also report CodeBERTScore F1")
    e.add_argument("--predictions", default=None, help="write one JSONL row per example here")
    e.add_argument("--force", action="store_true", help="overwrite an existing --predictions file")
    e.add_argument("--on-bad-line", default="stop", choices=["stop", "skip"])
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=commands["eval"])

    k = sub.add_parser("pack", help="copy a checkpoint for shipping: weights only, in bf16 or fp32, optionally blended")
    k.add_argument("--model", required=True, help="checkpoint directory")
    k.add_argument("--out", required=True)
    k.add_argument("--dtype", default="bfloat16", help="bfloat16 (default) | float32")
    k.add_argument("--force", action="store_true", help="overwrite a checkpoint in --out")
    k.add_argument("--default-clamp", default=None, choices=CLAMPS,
                   help="the sampler's rounding for requests that name none (config.json generation.clamp; "
                        "kept from --model when not given)")
    k.add_argument("--blend", action="append", metavar="DIR=WEIGHT",
                   help="blend another checkpoint of the same architecture and tokenizer into --model's weights "
                        "with this share (repeatable; --model keeps 1 - the sum): a weighted mean of the weights")
    k.set_defaults(func=commands["pack"])

    t = sub.add_parser("tokenizer", help="train the byte-level BPE tokenizer on a data folder")
    t.add_argument("--data", required=True)
    t.add_argument("--datasets", default=None)
    t.add_argument("--splits", default="train,pretrain")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--out", required=True, help="tokenizer.json to write")
    t.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    t.add_argument("--on-bad-line", default="stop", choices=["stop", "skip"])
    t.set_defaults(func=commands["tokenizer"])

    r = sub.add_parser("train", help="pre-train or fine-tune a CodeFusion model")
    from .train.arguments import add_train_arguments
    add_train_arguments(r)
    r.set_defaults(func=commands["train"])

    v = sub.add_parser("serve", help="HTTP JSON API with dynamic batching (POST /v1/generate, /healthz, /metrics)")
    v.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    v.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--backend", default="torch")
    v.add_argument("--device", default="cpu")
    v.add_argument("--dtype", default="auto", help="auto (default: bfloat16 where the hardware has it, else "
                                                   "float32) | bfloat16 | float32")
    v.add_argument("--max-batch", type=int, default=64, help="rows (prompts × samples) per denoising batch")
    v.add_argument("--max-wait-ms", type=float, default=50.0, help="how long the oldest request waits for company")
    v.add_argument("--quiet-ms", type=float, default=10.0,
                   help="run the batch once no request has arrived for this long (≤ --max-wait-ms)")
    _length_quantile_arg(v)
    v.add_argument("--max-queue", type=int, default=256, help="queued requests before 503 + Retry-After")
    v.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds (504 after)")
    v.add_argument("--api-key", default=None, help="require this X-API-Key header (or set CODEFUSION_API_KEY)")
    v.add_argument("--ray", action="store_true", help="serve on Ray Serve instead (pip install 'ray[serve]')")
    v.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (with --ray)")
    v.set_defaults(func=commands["serve"])
    return p
