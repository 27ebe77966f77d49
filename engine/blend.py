"""Weight blending: one checkpoint from a weighted mean of several of one lineage (``codefusion pack --blend``).

θ = (1 − Σ w_i)·θ_base + Σ w_i·θ_i, tensor by tensor, in fp32: the "model soup" / WiSE-FT interpolation
(Wortsman et al., 2022), which works between fine-tunings of one starting point because they stay in one
basin of the loss. Measured here (session 20, CF dev, 1200-step reference sampler, seeds 0/1/2): session 15's
weights (C) parse 78.7/87.2/83.0%, its rollout-snap continuation Cn alone 31.9% at seed 0, and the shipped
0.5·C + 0.3·Cn + 0.2·Cn2 93.6/100/100%, at a cost in exactness (models/README.md, "Session 20").

Blending only means something between checkpoints of one architecture and one tokenizer: both are checked, and
each mismatch is a one-line error naming the field.
"""
from __future__ import annotations

import torch

from .checkpoint import load_checkpoint, unique_state
from .errors import CodeFusionError
from .model import CodeFusionModel


def parse_blend(specs: list[str]) -> list[tuple[str, float]]:
    """``["DIR=W", …]`` → [(DIR, W)]; each 0 < W < 1 and Σ W < 1 (the base keeps the rest)."""
    out = []
    for spec in specs:
        path, sep, weight = spec.rpartition("=")
        try:
            w = float(weight)
        except ValueError:
            w = None
        if not sep or not path or w is None or not 0 < w < 1:
            raise CodeFusionError(f"--blend takes DIR=WEIGHT with 0 < WEIGHT < 1 (the blended checkpoint's share), "
                                  f"got {spec!r}")
        out.append((path, w))
    total = sum(w for _, w in out)
    if total >= 1:
        raise CodeFusionError(f"--blend weights add up to {total:g}; they must add up to less than 1, "
                              "the rest being --model's share")
    return out


def blend(model: CodeFusionModel, tokenizer, others: list[tuple[str, float]]) -> dict:
    """Blend ``others`` into ``model`` in place (fp32); → the history entry that records it."""
    share = 1 - sum(w for _, w in others)
    # every checkpoint tensor is floating point (checkpoint.py stores and accepts only fp32 and bf16)
    base = {k: v.detach().float().clone() for k, v in unique_state(model).items()}
    mixed = {k: share * v for k, v in base.items()}
    parts, differ = [], set()  # names of the tensors that differ somewhere
    for path, w in others:
        other, other_tok, other_config = load_checkpoint(path)
        _check_same_lineage(path, model, tokenizer, other, other_tok)
        state = unique_state(other)
        for k in base:
            if not torch.equal(base[k], state[k]):
                differ.add(k)
            mixed[k] += w * state[k]
        last = (other_config.get("meta", {}).get("history") or [None])[-1]
        parts.append({"model": str(path), "weight": w, "last": last})
    # a tensor equal in every checkpoint comes out as it went in, not within an ulp of it (a frozen encoder,
    # which the length head reads); aliases stay tied
    model.load_state_dict({k: v if k in differ else base[k] for k, v in mixed.items()}, strict=False)
    unchanged = sorted({k.split(".")[0] for k in base} - {k.split(".")[0] for k in differ})
    return {"task": "blend", "base_weight": round(share, 6), "blended": parts, "unchanged": unchanged}


def _check_same_lineage(path, model, tokenizer, other, other_tok) -> None:
    if other.cfg != model.cfg:
        field = next(f for f in model.cfg.__dataclass_fields__ if getattr(other.cfg, f) != getattr(model.cfg, f))
        raise CodeFusionError(f"cannot blend {path}: its model config differs from --model's in {field!r} "
                              f"({getattr(other.cfg, field)!r} against {getattr(model.cfg, field)!r}); "
                              "blend only checkpoints of one architecture")
    if other_tok.tok.get_vocab() != tokenizer.tok.get_vocab():
        raise CodeFusionError(f"cannot blend {path}: its tokenizer's vocabulary differs from --model's; "
                              "blend only checkpoints trained with one tokenizer")
    if other_tok.split_brackets != tokenizer.split_brackets:
        show = lambda langs: ",".join(langs) or "none"  # noqa: E731
        raise CodeFusionError(f"cannot blend {path}: its tokenizer splits brackets for "
                              f"{show(other_tok.split_brackets)} against {show(tokenizer.split_brackets)} for "
                              "--model's (train --split-brackets); blend only checkpoints that read code the same way")
