"""Shared fixtures: tiny synthetic data (tests make their own; shared/data is never read), a tiny
tokenizer and model, and one tiny checkpoint trained to reproduce 8 pairs exactly."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402  (importing torch does not import Triton; loading a model does, via torch._dynamo)

if not torch.cuda.is_available():  # Triton kernels run under the interpreter on CPU: set before Triton loads
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from codefusion.config import get_preset  # noqa: E402
from codefusion.model import CodeFusionModel  # noqa: E402
from codefusion.tokenizer import CodeTokenizer  # noqa: E402

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    """Tiers: `cuda` tests skip without a GPU; `slow` tests run only with --runslow."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    not_asked = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(not_asked)


PAIRS = {
    "nl2bash": [("list all files", "ls -la"), ("find txt files", "find . -name '*.txt'"),
                ("count lines in a.txt", "wc -l a.txt"), ("show disk usage", "df -h"),
                ("print working directory", "pwd"), ("remove tmp dir", "rm -rf /tmp/x"),
                ("search foo in logs", "grep -r foo /var/log"), ("sort numbers in f", "sort -n f | uniq")],
    "conala": [("sum a list x", "sum(x)"), ("reverse list x", "x[::-1]"), ("read file f", "open(f).read()"),
               ("sort dict d by value", "sorted(d.items(), key=lambda kv: kv[1])")],
    "cf": [("values above 10", "GreaterThan(10)"), ("between 1 and 5", "Between(1,5)"),
           ("text has error", 'TextContains("error")'), ("top value", "Top(1)")],
}


def write_data(root: Path, pairs: dict = PAIRS) -> Path:
    for ds, rows in pairs.items():
        (root / ds).mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"id": f"{ds}-{i}", "nl": nl, "code": code}) for i, (nl, code) in enumerate(rows)]
        for split in ("train", "dev"):
            (root / ds / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        code_only = [json.dumps({"id": f"{ds}-p{i}", "nl": "", "code": code}) for i, (_, code) in enumerate(rows)]
        (root / ds / "pretrain.jsonl").write_text("\n".join(code_only) + "\n")
    return root


def bash_data(tmp_path: Path) -> Path:
    """A data folder of the 8 Bash pairs alone."""
    return write_data(tmp_path / "bash", {"nl2bash": PAIRS["nl2bash"]})


def train_config(tmp_path: Path, data_dir: Path, **kw):
    """A tiny, fast TrainConfig (6 fp32 steps of batch 4, a dev check every 3) with ``kw`` on top."""
    from codefusion.train.config import TrainConfig

    base = dict(preset="tiny", data=str(data_dir), out=str(tmp_path / "run"), max_steps=6, batch_size=4,
                dev_rows=4, dev_every=3, dev_steps=2, dtype="float32", warmup=2)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tokenizer() -> CodeTokenizer:
    texts = [t for rows in PAIRS.values() for pair in rows for t in pair]
    return CodeTokenizer.train(texts * 4, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model(tokenizer) -> CodeFusionModel:
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("tiny"), vocab_size=tokenizer.vocab_size)
    return CodeFusionModel(cfg).eval()


def pooled_model(cfg, seed: int = 1) -> CodeFusionModel:
    """``cfg`` with N's pooled condition, its zero-started output layer drawn at random so the path matters."""
    torch.manual_seed(seed)
    model = CodeFusionModel(dataclasses.replace(cfg, pooled_condition=True)).eval()
    torch.nn.init.normal_(model.denoiser.cond.mlp[2].weight, std=0.5)
    return model


@pytest.fixture(scope="session")
def overfit_dir(tmp_path_factory) -> Path:
    """A tiny model trained (fp32, 600 steps: ~30–80 s on 2 cores, longer when they are shared) on the 8 Bash pairs
    until it reproduces them; once per session, shared by every test that needs a trained model."""
    from codefusion.train.config import TrainConfig
    from codefusion.train.trainer import train

    root = tmp_path_factory.mktemp("overfit")
    data = write_data(root / "data", {"nl2bash": PAIRS["nl2bash"]})
    return train(TrainConfig(preset="tiny", data=str(data), out=str(root / "run"), task="finetune", max_steps=600,
                             batch_size=8, lr=2e-3, warmup=20, dtype="float32", dev_rows=0, seed=0))


def meta_fast_backend(name: str, cfg, batch: int, source_len: int = 9):
    """A ``name`` backend (torch or a subclass) on a fresh model and a FastMemory of ``batch`` rows, all on
    `meta`, where any host sync raises: what the graph-safety tests run the loop on."""
    from codefusion.backends import get_backend
    from codefusion.backends.fast_stack import FastMemory
    meta = torch.device("meta")
    with meta:
        model = CodeFusionModel(cfg)
    backend = get_backend(name)(model, meta, torch.float32)
    heads = torch.empty(batch, cfg.n_heads, source_len, cfg.d_model // cfg.n_heads, device=meta)
    kv = tuple((heads, heads) for _ in range(cfg.denoiser_layers + cfg.decoder_layers))
    mask = torch.ones(batch, source_len, dtype=torch.bool, device=meta)
    states = torch.empty(batch, source_len, cfg.enc_d_model, device=meta)
    return backend, FastMemory(states, mask, kv, mask[:, None, None, :]), meta


class Recorder(torch.nn.Module):
    """A denoiser that returns zeros and keeps what it was given: ``seen`` the x_t, ``seen_prev`` the
    self-condition (None when none was passed)."""

    def forward(self, x_t, t, mem, mask, x0_prev=None):
        self.seen = x_t.clone()
        self.seen_prev = None if x0_prev is None else x0_prev.clone()
        return torch.zeros_like(x_t)


class Failing:
    """The engine, except that a prompt containing "boom" makes the batch raise a non-CodeFusion error."""

    def __init__(self, cf):
        self.cf = cf

    def __getattr__(self, name):
        return getattr(self.cf, name)

    def generate_many(self, requests, on_trace=None):
        if any("boom" in p for prompts, _ in requests for p in prompts):
            raise RuntimeError("kaboom\nsecond line")
        return self.cf.generate_many(requests, on_trace)
