"""Command line: ``codefusion generate | tokenizer | train`` (DESIGN §5).

Errors a user can fix print ``error: <one line>`` on stderr and exit with status 2; ``--json``
output is one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import CodeFusionError


def _generate(args) -> int:
    from .api import CodeFusion
    from .config import GenerationConfig

    cf = CodeFusion.from_pretrained(args.model, backend=args.backend, device=args.device, dtype=args.dtype)
    trace = tuple(int(s) for s in args.trace.split(",")) if args.trace else ()
    config = GenerationConfig(lang=args.lang, steps=args.steps, solver=args.solver, num_samples=args.num_samples,
                              seed=args.seed, max_length=args.max_length, trace_steps=trace, eta=args.eta)
    out = cf.generate([args.text], config)
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


def _tokenizer(args) -> int:
    from .tokenizer import CodeTokenizer
    from .train.data import load_split, tokenizer_texts

    texts = [t for split in args.splits.split(",")
             for t in tokenizer_texts(load_split(args.data, args.datasets, split, args.on_bad_line))]
    tok = CodeTokenizer.train(texts, args.vocab_size)
    tok.save(args.out)
    print(f"wrote {args.out}: {tok.vocab_size} tokens from {len(texts)} texts", file=sys.stderr)
    return 0


def _train(args) -> int:
    from .train.trainer import TrainConfig, train

    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    out = train(TrainConfig(**fields))
    print(f"checkpoint: {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codefusion", description="CodeFusion: diffusion models for code generation")
    sub = p.add_subparsers(dest="command", required=True)

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
    g.add_argument("--trace", default=None, help="comma-separated step counts at which to show the decoded x̂0")
    g.add_argument("--backend", default="reference")
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="float32")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_generate)

    t = sub.add_parser("tokenizer", help="train the byte-level BPE tokenizer on a data folder")
    t.add_argument("--data", required=True)
    t.add_argument("--datasets", default=None)
    t.add_argument("--splits", default="train,pretrain")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--out", required=True, help="tokenizer.json to write")
    t.add_argument("--on-bad-line", default="stop", choices=["stop", "skip"])
    t.set_defaults(func=_tokenizer)

    r = sub.add_parser("train", help="pre-train or fine-tune a CodeFusion model")
    r.add_argument("--preset", default="small")
    r.add_argument("--data", required=True)
    r.add_argument("--datasets", default=None, help="comma-separated: nl2bash,conala,cf (default: all present)")
    r.add_argument("--task", default="finetune", choices=["pretrain", "finetune"])
    r.add_argument("--out", required=True)
    r.add_argument("--init", default=None, help="start from this checkpoint (fine-tuning after pre-training)")
    r.add_argument("--tokenizer", default=None, help="tokenizer.json (default: train one on the data)")
    r.add_argument("--codet5", default=None, help="local CodeT5 directory: start E and the tokenizer from it")
    r.add_argument("--resume", action="store_true")
    r.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    r.add_argument("--max-steps", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=None)
    r.add_argument("--lr", type=float, default=None)
    r.add_argument("--upsize", type=float, default=None,
                   help="share of batches padded to a random longer length bucket (default 0.5)")
    r.add_argument("--warmup", type=int, default=None)
    r.add_argument("--dtype", default=None, help="bfloat16 (autocast, default) | float32")
    r.add_argument("--device", default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--save-minutes", type=float, default=None)
    r.add_argument("--dev-every", type=int, default=None)
    r.add_argument("--dev-rows", type=int, default=None)
    r.add_argument("--dev-steps", type=int, default=None)
    r.add_argument("--on-bad-line", default="stop", choices=["stop", "skip"])
    r.set_defaults(func=_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CodeFusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
