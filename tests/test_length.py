"""The length head: its quantile rule by hand, its training task, and the API's choice of length."""
import json

import pytest
import torch
from conftest import PAIRS, write_data

from codefusion import CodeFusion, GenerationConfig
from codefusion.checkpoint import load_checkpoint
from codefusion.errors import CodeFusionError
from codefusion.model.length import length_quantile
from codefusion.train.trainer import TrainConfig, train


def test_length_quantile_by_hand():
    logits = torch.tensor([[0.5, 0.3, 0.2, 0.0]]).log()  # p(1)=.5, p(2)=.3, p(3)=.2, p(4)=0
    assert length_quantile(logits, 0.9).tolist() == [3]  # CDF .5 .8 1.0
    assert length_quantile(logits, 0.5).tolist() == [1]
    assert length_quantile(logits, 0.8).tolist() == [2]
    assert length_quantile(torch.full((2, 4), -1e9), 0.99).tolist() == [4, 4]  # flat: never past the end


@pytest.fixture(scope="module")
def length_dir(overfit_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("length")
    data = write_data(root / "data", {"nl2bash": PAIRS["nl2bash"]})
    return train(TrainConfig(preset="tiny", data=str(data), out=str(root / "run"), task="length",
                             init=str(overfit_dir), max_steps=60, batch_size=8, lr=1e-2, dev_rows=0))


def test_length_task_adds_a_trained_head_and_keeps_the_rest(length_dir, overfit_dir):
    model, _, config = load_checkpoint(length_dir)
    base, _, _ = load_checkpoint(overfit_dir)
    assert model.cfg.length_head and model.length_head is not None and not base.cfg.length_head
    for (name, a), (_, b) in zip(base.denoiser.state_dict().items(), model.denoiser.state_dict().items()):
        assert torch.equal(a, b), name
    run = config["meta"]["history"][-1]
    assert run["task"] == "length" and run["train"]["coverage"] == 1.0  # 8 programs, all in the 16 bucket


def test_generate_runs_at_the_predicted_bucket_unless_told(length_dir):
    cf = CodeFusion.from_pretrained(length_dir)
    out = cf.generate(["list all files"], GenerationConfig(steps=4))
    assert out.timings["length"] == 16  # every training program fits 16 tokens
    assert cf.generate(["list all files"], GenerationConfig(steps=4, max_length=20)).timings["length"] == 32


def test_length_task_needs_init(tmp_path):
    with pytest.raises(CodeFusionError, match="--task length needs --init"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), task="length"))


def test_eval_batches_rows_by_predicted_bucket(length_dir, monkeypatch):
    """Each generate call gets rows of one predicted bucket; rows come back in input order."""
    from codefusion.eval.evaluate import generate_all

    cf = CodeFusion.from_pretrained(length_dir)
    rows = [{"nl": nl, "code": code} for nl, code in PAIRS["nl2bash"]]
    buckets = [16, 32, 16, 32, 32, 16, 16, 32]
    bucket_of = {r["nl"]: b for r, b in zip(rows, buckets)}
    monkeypatch.setattr(cf, "length_buckets", lambda prompts, lang: [bucket_of[p] for p in prompts])
    calls, real = [], cf.generate
    monkeypatch.setattr(cf, "generate", lambda prompts, config: calls.append(prompts) or real(prompts, config))
    config = GenerationConfig(steps=3, seed=2)
    tops, _ = generate_all(cf, rows, config, batch_size=3, progress=False)
    assert [len({bucket_of[p] for p in call}) for call in calls] == [1] * len(calls)
    assert sorted(len(c) for c in calls) == [1, 1, 3, 3]  # 4 rows of each bucket, batches of ≤ 3
    singles = [real([r["nl"]], config).texts[0] for r in rows]
    assert tops == singles
