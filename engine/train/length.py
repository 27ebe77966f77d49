"""``codefusion train --task length``: fit the length head p(n | E_s) of a trained model.

The encoder, denoiser and decoder stay frozen: E_s of every training request is computed once,
then the head (masked mean → MLP) is fitted with cross-entropy on the true length (code tokens +
</s>) for ``max_steps`` epochs (default 10: more overfits the 12k requests). Dev rows report how
often the chosen bucket holds the program (coverage) and how often it is the shortest bucket that
does (no time wasted).
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


@torch.inference_mode()
def _features(model, tok, examples, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, d_enc) pooled E_s and (N,) class index = min(length, max) − 1 of each example."""
    pooled, target = [], []
    for i in tqdm(range(0, len(examples), batch), desc="encode", leave=False):
        chunk = examples[i:i + batch]
        src = tok.encode_source([e.nl for e in chunk], [e.lang for e in chunk], model.cfg.max_source_len)
        pooled.append(pool(model.encode(src.ids, src.mask), src.mask))
        lengths = [len(ids) + 1 for ids in tok.encode_text([e.code for e in chunk])]
        target.append(torch.tensor([min(n, model.cfg.max_target_len) - 1 for n in lengths]))
    return torch.cat(pooled), torch.cat(target)


def _bucket_report(model, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    bucket = lambda n: model.cfg.bucket_for(int(n))  # noqa: E731
    chosen = [bucket(n) for n in length_quantile(logits, LENGTH_QUANTILE)]
    needed = [bucket(n) for n in target + 1]
    N = max(len(needed), 1)
    return {"coverage": round(sum(c >= d for c, d in zip(chosen, needed)) / N, 4),
            "shortest": round(sum(c == d for c, d in zip(chosen, needed)) / N, 4),
            "accuracy": round(float((logits.argmax(-1) == target).float().mean()), 4), "rows": len(needed)}


def train_length_head(cfg) -> Path:
    if not cfg.init:
        raise CodeFusionError("--task length needs --init CHECKPOINT: the trained model whose encoder it reads")
    torch.manual_seed(cfg.seed)
    model, tok, config = load_checkpoint(cfg.init)
    model.cfg = dataclasses.replace(model.cfg, length_head=True)
    model.length_head = LengthHead(model.cfg)
    train_x, train_y = _features(model, tok, load_split(cfg.data, cfg.datasets, "train", cfg.on_bad_line))
    dev_x, dev_y = _features(model, tok, load_split(cfg.data, cfg.datasets, "dev", cfg.on_bad_line))
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
        report = {"train": _bucket_report(model, head(train_x), train_y), "dev": _bucket_report(model, head(dev_x), dev_y)}
    tqdm.write(f"length head: {json.dumps(report)}")
    meta = config.get("meta", {})
    run = {"task": "length", "epochs": epochs, "lr": cfg.lr, "quantile": LENGTH_QUANTILE, **report, "out": str(cfg.out)}
    history = [h for h in meta.get("history", []) if h.get("out") != str(cfg.out)] + [run]
    return save_checkpoint(cfg.out, model.eval(), tok, {**meta, "history": history})
