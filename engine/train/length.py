"""``codefusion train --task length``: fit the length head p(n | E_s) of a trained model.

The encoder, denoiser and decoder stay frozen: E_s of every training request is computed once,
then the head (masked mean → MLP) is fitted with cross-entropy on a target length (code tokens +
</s>) for ``max_steps`` epochs (default 10: more overfits the 12k requests). The target is either

- ``reference``: the length of the row's reference program, or
- ``self``: the length of the program the model itself writes for the request, sampled at the
  longest bucket (so nothing cuts it) with ``length_steps`` DDPM steps. The bucket exists to hold
  what the denoiser writes: a model that writes shorter programs than the references (one trained on
  a teacher's programs, say) wastes most of a reference-sized bucket on padding.

Dev rows report how often the chosen bucket holds the target (coverage) and how often it is the
shortest bucket that does (no time wasted); with ``self`` also how often it holds the reference.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import get_args

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import generation_defaults, load_checkpoint, save_checkpoint
from ..config import LENGTH_QUANTILE
from ..errors import CodeFusionError
from ..model.length import LengthHead, length_quantile, pool
from .data import load_split
from .config import LengthTargets


DEFAULT_LENGTH_STEPS = 20


@torch.inference_mode()
def _features(model, tok, examples, lengths: list[int], batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, d_enc) pooled E_s of each example and (N,) class index = min(length, max) − 1 of its target."""
    pooled = []
    for i in tqdm(range(0, len(examples), batch), desc="encode", leave=False):
        chunk = examples[i:i + batch]
        src = tok.encode_source([e.nl for e in chunk], [e.lang for e in chunk], model.cfg.max_source_len)
        pooled.append(pool(model.encode(src.ids, src.mask), src.mask))
    return torch.cat(pooled), _classes(model, lengths)


def _classes(model, lengths: list[int]) -> torch.Tensor:
    return torch.tensor([min(n, model.cfg.max_target_len) - 1 for n in lengths], dtype=torch.int64)


def reference_lengths(tok, examples) -> list[int]:
    """Tokens + </s> of each example's reference program (in the checkpoint's spelling)."""
    return [len(ids) + 1 for ids in tok.encode_code([e.code for e in examples], [e.lang for e in examples])]


def own_lengths(model, tok, examples, steps: int, device: str, dtype: str, batch: int = 64,
                config: dict | None = None) -> list[int]:
    """Tokens + </s> of the program the model writes for each example's request: DDPM with ``steps`` steps,
    seed 0, at the longest bucket (``max_length`` = max_target_len), so the length is the model's, not a
    bucket's, with the model's own sampler (``config``: its checkpoint's config.json, whose generation defaults
    `generate` runs; the reference sampler where it names none). Counted on the sampled tokens
    (``GenerationOutput.sample_lengths``), not on re-encoded text."""
    from ..api import CodeFusion
    from ..config import GenerationConfig

    sampler = CodeFusion(model, tok, backend="torch", device=device, dtype=dtype, config=config)
    lengths = [0] * len(examples)
    by_lang: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_lang.setdefault(e.lang, []).append(i)
    with tqdm(total=len(examples), desc=f"sample ({steps} steps)", leave=False) as bar:
        for lang, rows in by_lang.items():
            config = GenerationConfig(lang=lang, steps=steps, max_length=model.cfg.max_target_len)
            for j in range(0, len(rows), batch):
                chunk = rows[j:j + batch]
                out = sampler.generate([examples[i].nl for i in chunk], config)
                for i, (n,) in zip(chunk, out.sample_lengths):
                    lengths[i] = n + 1
                bar.update(len(chunk))
    return lengths


def _bucket_report(model, logits: torch.Tensor, target: torch.Tensor,
                   reference: torch.Tensor | None = None) -> dict[str, object]:
    """coverage: the chosen bucket holds the target; shortest: it is the shortest that does; with
    ``reference`` (self targets) also how often it holds the reference program."""
    bucket = lambda n: model.cfg.bucket_for(int(n))  # noqa: E731
    chosen = [bucket(n) for n in length_quantile(logits, LENGTH_QUANTILE)]
    needed = [bucket(n) for n in target + 1]
    N = max(len(needed), 1)
    report = {"coverage": round(sum(c >= d for c, d in zip(chosen, needed)) / N, 4),
              "shortest": round(sum(c == d for c, d in zip(chosen, needed)) / N, 4),
              "accuracy": round(float((logits.argmax(-1) == target).float().mean()), 4), "rows": len(needed),
              "buckets": {b: chosen.count(b) for b in model.cfg.length_buckets}}
    if reference is not None:
        report["reference_coverage"] = round(sum(c >= bucket(n) for c, n in zip(chosen, reference + 1)) / N, 4)
    return report


def _check(cfg) -> None:
    if not cfg.init:
        raise CodeFusionError("--task length needs --init CHECKPOINT: the trained model whose encoder it reads")
    if cfg.length_targets not in get_args(LengthTargets):
        raise CodeFusionError(f"--length-targets must be reference or self, got {cfg.length_targets!r}")
    if cfg.length_steps is not None and cfg.length_targets != "self":
        raise CodeFusionError("--length-steps sets the sampling of --length-targets self: add that or drop it")


def _fit(head, x: torch.Tensor, y: torch.Tensor, cfg) -> None:
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=0.01)
    for _ in tqdm(range(cfg.max_steps or 10), desc="length head"):
        for idx in torch.randperm(len(x)).split(cfg.batch_size):
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def train_length_head(cfg) -> Path:
    _check(cfg)
    model, tok, config = load_checkpoint(cfg.init)
    steps = DEFAULT_LENGTH_STEPS if cfg.length_steps is None else cfg.length_steps
    if cfg.length_targets == "self" and not 1 <= steps <= model.cfg.diffusion_steps:
        raise CodeFusionError(f"--length-steps must be in 1..{model.cfg.diffusion_steps}, got {steps}")
    train_ex = load_split(cfg.data, cfg.datasets, "train", cfg.on_bad_line)
    dev_ex = load_split(cfg.data, cfg.datasets, "dev", cfg.on_bad_line)
    if cfg.length_targets == "self":  # sampling does not read the head: every request gives max_length
        train_len = own_lengths(model, tok, train_ex, steps, cfg.device, cfg.dtype, config=config)
        dev_len = own_lengths(model, tok, dev_ex, steps, cfg.device, cfg.dtype, config=config)
    else:
        train_len, dev_len = reference_lengths(tok, train_ex), reference_lengths(tok, dev_ex)
    torch.manual_seed(cfg.seed)  # after sampling, whose set-up may draw random numbers
    model = model.cpu()
    model.cfg = dataclasses.replace(model.cfg, length_head=True)
    model.length_head = LengthHead(model.cfg)
    train_x, train_y = _features(model, tok, train_ex, train_len)
    dev_x, dev_y = _features(model, tok, dev_ex, dev_len)
    head = model.length_head.net.train()
    _fit(head, train_x, train_y, cfg)
    head.eval()
    dev_ref = _classes(model, reference_lengths(tok, dev_ex)) if cfg.length_targets == "self" else None
    with torch.no_grad():
        report = {"train": _bucket_report(model, head(train_x), train_y),
                  "dev": _bucket_report(model, head(dev_x), dev_y, dev_ref)}
    tqdm.write(f"length head: {json.dumps(report)}")
    meta = config.get("meta", {})
    sampled = {"length_steps": steps, "length_clamp": generation_defaults(config).get("clamp", "none")}
    targets = {"targets": cfg.length_targets, **(sampled if cfg.length_targets == "self" else {})}
    run = {"task": "length", **targets, "epochs": cfg.max_steps or 10, "lr": cfg.lr, "quantile": LENGTH_QUANTILE,
           **report, "out": str(cfg.out)}
    history = [h for h in meta.get("history", []) if h.get("out") != str(cfg.out)] + [run]
    # only the length head changed: the checkpoint keeps the sampler its requests run with
    return save_checkpoint(cfg.out, model.eval(), tok, {**meta, "history": history},
                           generation=config.get("generation"))
