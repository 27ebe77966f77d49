"""The optimizer of ``codefusion train`` and its learning-rate schedule: AdamW without weight decay, linear warm-up
then cosine decay to zero, and the T5 token embeddings in a parameter group of their own (``--embed-lr-scale``)."""
from __future__ import annotations

import math

import torch
from transformers import T5PreTrainedModel

# T5 initialises its token embeddings at RMS 1 and every projection near 1/√d: it was made for Adafactor, whose steps
# scale with each tensor's RMS. AdamW's steps are the same size for every tensor, so under it the embeddings (the
# decoder's is also its output head) move about 1/√d as fast as the rest, relative to their size. Measured here
# (models/README.md, "Session 22"): the seq2seq task's CE after 150 steps on 256 pairs, 3.36 with one lr, 2.09 with
# the embeddings at 10 × lr, 1.81 for a standard pre-LN decoder on the same E.
EMBED_LR_SCALE = 10.0


def t5_embedding_scale(cfg) -> float:
    """The multiple of lr at which the T5 token embeddings learn: --embed-lr-scale, else 10 for --task encoder
    (a T5 decoder learns through its tied embedding) and 1 otherwise (the shipped lineage's diffusion runs)."""
    if cfg.embed_lr_scale is not None:
        return cfg.embed_lr_scale
    return EMBED_LR_SCALE if cfg.task == "encoder" else 1.0


def build_optimizer(cfg, module: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``module``; the T5 token embeddings in a group of their own whose
    ``lr_scale`` multiplies the schedule's lr (trainer._loop)."""
    trained = [p for p in module.parameters() if p.requires_grad]
    scale = t5_embedding_scale(cfg)
    embeds = {id(m.shared.weight) for m in module.modules()
              if isinstance(m, T5PreTrainedModel) and isinstance(getattr(m, "shared", None), torch.nn.Embedding)}
    scaled = embeds if scale != 1 else set()
    groups = [{"params": [p for p in trained if id(p) not in scaled], "lr_scale": 1.0},
              {"params": [p for p in trained if id(p) in scaled], "lr_scale": scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=0.0)


def lr_at(cfg, step: int, progress: float) -> float:
    """Linear warm-up over --warmup steps, then cosine to zero over the run (``progress`` in [0, 1]: the larger of
    the step and time fractions). Warm-up ends by 10% of the run at the latest: of its steps with --max-steps, and
    of its time as well with --minutes (a short run would otherwise end before the rate ever rose)."""
    warm = min(cfg.warmup, max(1, cfg.max_steps // 10)) if cfg.max_steps else cfg.warmup
    if step < warm and (not cfg.minutes or progress < 0.1):
        rise = (step + 1) / warm
        return cfg.lr * (max(rise, progress / 0.1) if cfg.minutes else rise)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
