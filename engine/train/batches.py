"""Batches for the three training tasks, drawn from length buckets.

Every example goes to the shortest length bucket of the preset that holds its code + </s>; a batch
comes from one bucket and is padded to that bucket's length, so the model learns to generate at
every bucket length (a short request runs at a short n). Buckets are picked in proportion to their
size; inside a bucket, examples are visited in shuffled epochs. With probability ``upsize`` a batch
is padded to a random longer bucket instead: otherwise a bucket only ever sees programs that
overflow the one below it, and a short program requested at a longer length (the default, or a
length predicted too long) comes out stretched to fill it.

Tasks (CodeFusion §3.2):
    finetune   E_s = E([<lang>] utterance)                          → code
    generate   E_s = fresh Gaussian noise (unsupervised code generation) → code
    cpd        E_s = E([<lang>] code with identifiers/keywords masked)   → code
"""
from __future__ import annotations

import functools
import hashlib
import json
import random
from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..errors import DataError
from ..tokenizer import CodeTokenizer
from .data import Example
from .masking import cpd_mask


@dataclass
class Batch:
    task: str
    tgt: torch.Tensor  # (B, n) int64
    src_ids: torch.Tensor | None  # (B, S) int64; None for "generate"
    src_mask: torch.Tensor | None  # (B, S) bool
    langs: tuple[str, ...] = ()  # each row's language


class BucketSampler:
    def __init__(self, lengths: list[int], cfg: ModelConfig, batch_size: int, seed: int):
        self.rng = random.Random(seed)
        self.batch_size = batch_size
        self.buckets: dict[int, list[int]] = {}
        self.dropped = 0
        for i, length in enumerate(lengths):
            if length + 1 > cfg.max_target_len:  # + </s>
                self.dropped += 1
                continue
            self.buckets.setdefault(cfg.bucket_for(length + 1), []).append(i)
        self.order = {b: [] for b in self.buckets}

    def __len__(self) -> int:
        return sum(len(v) for v in self.buckets.values())

    def next(self) -> tuple[int, list[int]]:
        sizes = list(self.buckets)
        bucket = self.rng.choices(sizes, weights=[len(self.buckets[b]) for b in sizes])[0]
        take = []
        while len(take) < min(self.batch_size, len(self.buckets[bucket])):
            if not self.order[bucket]:
                self.order[bucket] = self.rng.sample(self.buckets[bucket], len(self.buckets[bucket]))
            take.append(self.order[bucket].pop())
        return bucket, take


class TaskBatches:
    """Turns sampled indices into Batches; ``tasks`` cycles per step (pretraining alternates)."""

    def __init__(self, examples: list[Example], tokenizer: CodeTokenizer, cfg: ModelConfig, tasks: tuple[str, ...],
                 batch_size: int, seed: int, upsize: float = 0.0):
        self.examples, self.tok, self.cfg, self.tasks = examples, tokenizer, cfg, tasks
        self.upsize = upsize
        self.code_ids = tokenizer.encode_code([e.code for e in examples], [e.lang for e in examples])
        self.nl_ids = tokenizer.encode_text([e.nl for e in examples]) if "finetune" in tasks else None
        self.sampler = BucketSampler([len(c) for c in self.code_ids], cfg, batch_size, seed)
        self.rng = random.Random(seed + 1)
        if not len(self.sampler):
            raise DataError(f"no training row fits the preset's {cfg.max_target_len}-token target length")

    def draw_state(self) -> dict:
        """What the next batches depend on, as JSON: both generators and the sampler's half-used epochs (--resume
        puts them back, so a resumed run draws the rows the uninterrupted one would have)."""
        return {"sampler_rng": _rng_json(self.sampler.rng), "rng": _rng_json(self.rng),
                "order": {str(b): list(o) for b, o in self.sampler.order.items()}, "rows": self._rows}

    def restore_draws(self, state: dict) -> bool:
        """Puts a ``draw_state`` back → True; False (nothing changed) when it was saved over other rows (the data
        changed: its order would index rows that are not there) or is not a draw state."""
        try:
            if state["rows"] != self._rows:
                return False
            sampler_rng, rng = _rng_state(state["sampler_rng"]), _rng_state(state["rng"])
            order = {int(b): list(o) for b, o in state["order"].items()}
        except (KeyError, TypeError, ValueError, IndexError):
            return False
        self.sampler.rng.setstate(sampler_rng)
        self.rng.setstate(rng)
        self.sampler.order = order
        return True

    @functools.cached_property
    def _rows(self) -> str:
        """The rows the sampler draws from, per bucket, as a short hash (computed once: the rows do not change)."""
        digest = hashlib.sha256(json.dumps(sorted(self.sampler.buckets.items())).encode())
        digest.update(json.dumps([[e.lang, e.code, e.nl] for e in self.examples]).encode())
        return digest.hexdigest()[:16]

    def batch(self, step: int) -> Batch:
        task = self.tasks[step % len(self.tasks)]
        n, idx = self.sampler.next()
        longer = [b for b in self.cfg.length_buckets if b > n]
        if longer and self.rng.random() < self.upsize:
            n = self.rng.choice(longer)
        tgt = self.tok.encode_target([self.code_ids[i] for i in idx], n)
        langs = tuple(self.examples[i].lang for i in idx)
        if task == "generate":
            return Batch(task, tgt, None, None, langs)
        if task == "finetune":
            src = self.tok.encode_source([], list(langs), self.cfg.max_source_len, [self.nl_ids[i] for i in idx])
        else:
            masked = [cpd_mask(self.examples[i].code, self.examples[i].lang, self.rng) for i in idx]
            src = self.tok.encode_source(masked, list(langs), self.cfg.max_source_len)
        return Batch(task, tgt, src.ids, src.mask, langs)


def _rng_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_state(saved: list) -> tuple:
    return saved[0], tuple(saved[1]), saved[2]
