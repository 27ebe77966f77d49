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

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import LENGTH_QUANTILE
from ..errors import CodeFusionError
from ..model.length import LengthHead, length_quantile, pool
from .data import load_split


LENGTH_TARGETS = ("reference", "self")


@torch.inference_mode()
def _features(model, tok, examples, programs: list[str], batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, d_enc) pooled E_s of each example and (N,) class index = min(length, max) − 1 of its program."""
    pooled, target = [], []
    for i in tqdm(range(0, len(examples), batch), desc="encode", leave=False):
        chunk = examples[i:i + batch]
        src = tok.encode_source([e.nl for e in chunk], [e.lang for e in chunk], model.cfg.max_source_len)
        pooled.append(pool(model.encode(src.ids, src.mask), src.mask))
        target.append(_classes(model, tok, programs[i:i + batch]))
    return torch.cat(pooled), torch.cat(target)


def _classes(model, tok, programs: list[str]) -> torch.Tensor:
    return torch.tensor([min(len(ids) + 1, model.cfg.max_target_len) - 1 for ids in tok.encode_text(programs)],
                        dtype=torch.int64)


def own_programs(model, tok, examples, steps: int, device: str, dtype: str, batch: int = 64) -> list[str]:
    """The program the model writes for each example's request: DDPM with ``steps`` steps, seed 0, at
    the longest bucket (``max_length`` = max_target_len), so its length is the model's own, not a bucket's."""
    from ..api import CodeFusion
    from ..config import GenerationConfig

    sampler = CodeFusion(model, tok, backend="torch", device=device, dtype=dtype)
    programs: list[str] = [""] * len(examples)
    by_lang: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_lang.setdefault(e.lang, []).append(i)
    with tqdm(total=len(examples), desc=f"sample ({steps} steps)", leave=False) as bar:
        for lang, rows in by_lang.items():
            config = GenerationConfig(lang=lang, steps=steps, max_length=model.cfg.max_target_len)
            for j in range(0, len(rows), batch):
                chunk = rows[j:j + batch]
                out = sampler.generate([examples[i].nl for i in chunk], config)
                for i, texts in zip(chunk, out.texts):
                    programs[i] = texts[0] if texts else ""
                bar.update(len(chunk))
    return programs


def _bucket_report(model, logits: torch.Tensor, target: torch.Tensor,
                   reference: torch.Tensor | None = None) -> dict[str, float]:
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


def train_length_head(cfg) -> Path:
    if not cfg.init:
        raise CodeFusionError("--task length needs --init CHECKPOINT: the trained model whose encoder it reads")
    torch.manual_seed(cfg.seed)
    if cfg.length_targets not in LENGTH_TARGETS:
        raise CodeFusionError(f"--length-targets must be reference or self, got {cfg.length_targets!r}")
    if cfg.length_steps < 1:
        raise CodeFusionError(f"--length-steps must be ≥ 1, got {cfg.length_steps}")
    model, tok, config = load_checkpoint(cfg.init)
    train_ex = load_split(cfg.data, cfg.datasets, "train", cfg.on_bad_line)
    dev_ex = load_split(cfg.data, cfg.datasets, "dev", cfg.on_bad_line)
    if cfg.length_targets == "self":  # before the head is replaced: sampling does not read it (max_length given)
        train_programs, dev_programs = (own_programs(model, tok, ex, cfg.length_steps, cfg.device, cfg.dtype)
                                        for ex in (train_ex, dev_ex))
    else:
        train_programs, dev_programs = [e.code for e in train_ex], [e.code for e in dev_ex]
    model = model.cpu()
    model.cfg = dataclasses.replace(model.cfg, length_head=True)
    model.length_head = LengthHead(model.cfg)
    train_x, train_y = _features(model, tok, train_ex, train_programs)
    dev_x, dev_y = _features(model, tok, dev_ex, dev_programs)
    dev_ref = _classes(model, tok, [e.code for e in dev_ex]) if cfg.length_targets == "self" else None
    head = model.length_head.net.train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=0.01)
    epochs = cfg.max_steps or 10
    for _ in tqdm(range(epochs), desc="length head"):
        for idx in torch.randperm(len(train_x)).split(cfg.batch_size):
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    head.eval()
    with torch.no_grad():
        report = {"train": _bucket_report(model, head(train_x), train_y),
                  "dev": _bucket_report(model, head(dev_x), dev_y, dev_ref)}
    tqdm.write(f"length head: {json.dumps(report)}")
    meta = config.get("meta", {})
    targets = {"targets": cfg.length_targets, **({"length_steps": cfg.length_steps} if dev_ref is not None else {})}
    run = {"task": "length", **targets, "epochs": epochs, "lr": cfg.lr, "quantile": LENGTH_QUANTILE, **report,
           "out": str(cfg.out)}
    history = [h for h in meta.get("history", []) if h.get("out") != str(cfg.out)] + [run]
    return save_checkpoint(cfg.out, model.eval(), tok, {**meta, "history": history})
