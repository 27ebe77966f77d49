"""The flags of ``codefusion bench``, one subparser per suite (bench/cli.py runs them)."""
from __future__ import annotations

import argparse

from codefusion.config import CLAMPS
from codefusion.errors import OneLineParser

from .prompts import PROMPTS

DEFAULT_OUT = "bench/results"  # where a suite writes without --out, unless --json (then: stdout only)
OUT_HELP = "folder for the results (default: bench/results; with --json and no --out, none are written)"
DESCRIPTION = "benchmarks of the engine: latency | parity | kernels | quality | trajectory | serve | compare | ranking"


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
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="codefusion bench", description=DESCRIPTION)
    sub = p.add_subparsers(dest="suite", required=True)
    for name, backends, dtypes, batch, steps in (("latency", "reference,torch", "float32,bfloat16", "1,8,64", "20"),
                                                 ("parity", "torch", "float32,bfloat16", "16", "10")):
        s = sub.add_parser(name, help={
            "latency": "ms per denoising step and per request, per backend × dtype × batch",
            "parity": "every backend × dtype in lockstep with the fp32 reference: x̂0 errors, token and program "
                      "agreement"}[name])
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
        else:
            s.add_argument("--margin-eps", type=float, default=1e-3,
                           help="decided_agreement leaves out positions whose reference top-2 logit margin is below "
                                "this (fp32 rounding alone may flip them)")
        s.add_argument("--device", default="cpu")
        s.add_argument("--out", default=None, help="folder for <suite>.json / .md (/.png) (default: bench/results; "
                                                   "with --json and no --out, none are written)")
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
    k.add_argument("--out", default=None, help="folder for kernels.json / .md (default: bench/results; with --json "
                                               "and no --out, none are written)")
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
    v.add_argument("--out", default=None, help=OUT_HELP)
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
