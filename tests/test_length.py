"""The length head: its quantile rule by hand, its training task, and the API's choice of length."""
from pathlib import Path

import pytest
import torch
from conftest import PAIRS, write_data

from codefusion import CodeFusion, GenerationConfig
from codefusion.checkpoint import load_checkpoint
from codefusion.errors import CodeFusionError
from codefusion.model.length import length_quantile
from codefusion.train.config import TrainConfig
from codefusion.train.trainer import train


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


@pytest.fixture(scope="module")
def self_length(overfit_dir, tmp_path_factory):
    """Self targets sampled with the task's default dtype (bf16: the packed, cast copy the backend makes)."""
    root = tmp_path_factory.mktemp("self_length")
    data = write_data(root / "data", {"nl2bash": PAIRS["nl2bash"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(root / "run"), task="length",
                            init=str(overfit_dir), length_targets="self", length_steps=3, max_steps=60,
                            batch_size=8, lr=1e-2, dev_rows=0))
    return data, out


def test_own_lengths_are_the_tokens_each_request_writes_alone_at_the_longest_bucket(overfit_dir, self_length):
    from codefusion.train.data import load_split
    from codefusion.train.length import own_lengths

    data, _ = self_length
    model, tok, _ = load_checkpoint(overfit_dir)
    examples = load_split(str(data), None, "train", "stop")
    lengths = own_lengths(model, tok, examples, 3, "cpu", "float32", batch=3)  # batches of 3, one of 2
    cf = CodeFusion.from_pretrained(overfit_dir)
    alone = [cf.generate([e.nl], GenerationConfig(steps=3, max_length=32)) for e in examples]
    assert lengths == [out.sample_lengths[0][0] + 1 for out in alone]
    # the count of sampled tokens, not of the re-encoded text: the fixture writes its programs, so both agree here
    assert lengths == [len(ids) + 1 for ids in tok.encode_text([out.texts[0][0] for out in alone])]


def test_self_targets_sample_with_the_models_own_sampler_and_keep_it(overfit_dir, tmp_path, monkeypatch):
    """A checkpoint whose config.json makes "decode" its default writes its programs with it (the decoder's ids are
    read every step), and the refitted checkpoint keeps that default: only the length head changed."""
    import json
    import shutil

    from codefusion.backends.fast import TorchBackend

    ckpt = Path(shutil.copytree(overfit_dir, tmp_path / "decode"))
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "generation": {"clamp": "decode"}}))
    calls = []
    read = TorchBackend.decode_ids
    monkeypatch.setattr(TorchBackend, "decode_ids", lambda self, *a: calls.append(1) or read(self, *a))
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run"), task="length", init=str(ckpt),
                            length_targets="self", length_steps=2, max_steps=5, batch_size=8, dev_rows=0))
    config = load_checkpoint(out)[2]
    assert calls and config["generation"] == {"clamp": "decode"}
    assert config["meta"]["history"][-1]["length_clamp"] == "decode"


def test_self_targets_keep_every_other_weight_and_record_the_sampling(self_length, overfit_dir):
    _, out = self_length
    model, _, config = load_checkpoint(out)
    base, _, _ = load_checkpoint(overfit_dir)
    for part in ("encoder", "denoiser", "decoder", "embed"):
        for (name, a), (_, b) in zip(getattr(base, part).state_dict().items(),
                                     getattr(model, part).state_dict().items()):
            assert torch.equal(a, b), f"{part}.{name}"
    run = config["meta"]["history"][-1]
    assert run["targets"] == "self" and run["length_steps"] == 3 and run["dev"]["rows"] == 8
    assert run["length_clamp"] == "none" and "generation" not in config  # the fixture names no sampler


def test_self_targets_fit_what_the_model_writes_not_the_references(overfit_dir, tmp_path, monkeypatch):
    """A model that (say) writes 25 tokens for every request gets every request sent to the 32 bucket, although
    every reference fits 16 (the reference-fitted head of length_dir sends them all to 16)."""
    from codefusion.train import length

    monkeypatch.setattr(length, "own_lengths", lambda model, tok, examples, *a, **k: [25] * len(examples))
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run"), task="length",
                            init=str(overfit_dir), length_targets="self", max_steps=60, batch_size=8, lr=1e-2))
    dev = load_checkpoint(out)[2]["meta"]["history"][-1]["dev"]
    assert dev["buckets"] == {"16": 0, "32": 8} and dev["coverage"] == 1.0 and dev["reference_coverage"] == 1.0
    assert dev["shortest"] == 1.0
    cf = CodeFusion.from_pretrained(out)
    assert cf.generate(["list all files"], GenerationConfig(steps=2)).timings["length"] == 32


def test_reference_targets_record_no_steps(length_dir):
    run = load_checkpoint(length_dir)[2]["meta"]["history"][-1]
    assert run["targets"] == "reference" and "length_steps" not in run and "reference_coverage" not in run["dev"]
    assert run["dev"]["buckets"] == {"16": 8, "32": 0}


@pytest.mark.parametrize("change, message", [
    ({"length_targets": "gold"}, "--length-targets must be reference or self"),
    ({"length_targets": "self", "length_steps": 0}, r"--length-steps must be in 1\.\.\d+, got 0"),
    ({"length_targets": "self", "length_steps": 10**6}, r"--length-steps must be in 1\.\.\d+"),
    ({"length_steps": 5}, "--length-steps sets the sampling of --length-targets self"),
])
def test_length_target_options_are_checked(overfit_dir, tmp_path, change, message):
    with pytest.raises(CodeFusionError, match=message):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), task="length",
                          init=str(overfit_dir), **change))


@pytest.mark.parametrize("change", [{"length_targets": "self"}, {"length_steps": 20}])
def test_length_target_options_need_the_length_task(tmp_path, change):
    with pytest.raises(CodeFusionError, match="go with --task length"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), task="finetune",
                          max_steps=1, **change))
