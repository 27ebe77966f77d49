"""The seq2seq side of training: `--task encoder` (E trained as the encoder of a T5 decoder), its own lr for the T5
token embeddings, `--aux-seq2seq`, and the teacher's scoring and distillation."""
import json
from pathlib import Path

import pytest
import torch

from codefusion.errors import CodeFusionError
from codefusion.train.config import TrainConfig
from codefusion.train.data import load_split
from codefusion.train.trainer import train

from conftest import PAIRS, bash_data, train_config


def test_encoder_task_trains_e_through_a_seq2seq_decoder(tmp_path, overfit_dir):
    """--task encoder: a T5 decoder on E_s learns the 8 pairs greedily; only E changes in the CodeFusion
    checkpoint, the decoder is saved beside it, and --resume reloads it."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.distill import distill
    from codefusion.train.seq2seq import SEQ2SEQ, Seq2SeqTask, score, seq2seq_dev_check
    data = bash_data(tmp_path)
    before = load_checkpoint(overfit_dir)[0]
    cfg = train_config(tmp_path, data, task="encoder", init=str(overfit_dir), max_steps=120, batch_size=8, lr=3e-3,
               warmup=10, dev_rows=8, dev_every=0)
    out = train(cfg)
    model, tok, config = load_checkpoint(out)
    assert config["meta"]["history"][-1]["task"] == "encoder" and (out / SEQ2SEQ).is_file()
    after = model.state_dict()
    for name, w in before.state_dict().items():
        assert torch.equal(w, after[name]) != name.startswith("encoder."), name
    task = Seq2SeqTask(model).eval()
    task.load(out)
    result = seq2seq_dev_check(task, tok, load_split(str(data), None, "dev"))
    assert result["exact"] == 1.0 and result["syntax_bash"] == 1.0
    scored = score(task, tok, [{"nl": nl, "code": code} for nl, code in PAIRS["nl2bash"]], "bash")
    assert scored["n"] == 8 and scored["metrics"]["exact_match@1"] == 1.0 and scored["metrics"]["bleu@1"] > 99
    assert distill(task, tok, data, tmp_path / "distilled") == {
        "nl2bash": {"rows": 8, "teacher": 8, "unfinished": 0, "invalid": 0, "wrong": 0, "not_asked": 0, "written": 8}}
    rows = load_split(str(tmp_path / "distilled"), None, "train")
    assert [r.code for r in rows] == [code for _, code in PAIRS["nl2bash"]]  # the teacher learnt every pair
    assert (tmp_path / "distilled" / "nl2bash" / "dev.jsonl").read_text() == (data / "nl2bash" / "dev.jsonl").read_text()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["dev"]["exact"] == 1.0 and log[0]["ce"] > 3 * log[-2]["ce"]
    resumed = train(TrainConfig(**{**cfg.__dict__, "max_steps": 125, "resume": True}))
    state = json.loads((resumed / "trainer_state.json").read_text())
    assert state["step"] == 125
    # --init from an encoder run continues its decoder: right from the first step (lr ≈ 0) it writes every pair
    cont = train(TrainConfig(**{**cfg.__dict__, "init": str(out), "out": str(tmp_path / "cont"), "max_steps": 1,
                                "lr": 1e-9, "warmup": 0, "dev_every": 1}))
    log = [json.loads(line) for line in (cont / "train_log.jsonl").read_text().splitlines()]
    assert [row["dev"]["exact"] for row in log if "dev" in row][0] == 1.0


def test_seq2seq_trains_the_decoder_embedding_and_head(overfit_dir):
    """The T5 wrapper's unused encoder is frozen, but its token embedding is the decoder's input and
    (tied) output head: it must get gradients, or the teacher learns through a fixed random vocabulary."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.seq2seq import Seq2SeqTask
    model, tok, _ = load_checkpoint(overfit_dir)
    task = Seq2SeqTask(model)
    trainable = {name for name, p in task.named_parameters() if p.requires_grad}
    assert "seq2seq.shared.weight" in trainable and task.seq2seq.lm_head.weight is task.seq2seq.shared.weight
    assert not any(name.startswith("seq2seq.encoder.") for name in trainable)
    src = tok.encode_source([nl for nl, _ in PAIRS["nl2bash"]], ["bash"] * 8, model.cfg.max_source_len)
    tgt = tok.encode_target(tok.encode_text([code for _, code in PAIRS["nl2bash"]]), model.cfg.max_target_len)
    task.loss(src.ids, src.mask, tgt).backward()
    assert task.seq2seq.shared.weight.grad.abs().sum() > 0


def test_t5_embeddings_take_their_own_multiple_of_the_lr(tmp_path, overfit_dir):
    """--task encoder: E's and the seq2seq decoder's T5 token embeddings step at 10 × lr by default (T5 starts them at
    RMS 1; under AdamW they would learn ~16× slower than the rest, models/README.md "Session 22"). Adam's first step
    moves every parameter with a gradient by exactly its group's lr, so the run's weights show the two rates."""
    from codefusion.checkpoint import load_checkpoint
    data = bash_data(tmp_path)
    lr = 1e-3
    out = train(train_config(tmp_path, data, task="encoder", init=str(overfit_dir), max_steps=1, lr=lr, warmup=0,
                     dev_rows=0))
    before, after = load_checkpoint(overfit_dir)[0].encoder, load_checkpoint(out)[0].encoder
    step = {name: (after.state_dict()[name] - w).abs().max().item() for name, w in before.state_dict().items()}
    assert step["t5.shared.weight"] == pytest.approx(10 * lr, rel=1e-3)
    assert step["t5.encoder.block.0.layer.0.SelfAttention.q.weight"] == pytest.approx(lr, rel=1e-3)
    history = json.loads((out / "config.json").read_text())["meta"]["history"][-1]
    assert history["embed_lr_scale"] == 10.0
    log = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert log["lr"] == lr  # the log keeps the schedule's lr


def test_embed_lr_groups_and_clipping_over_every_group(overfit_dir):
    """build_optimizer: the T5 embeddings in a group of their own only where their multiple is not 1 (finetune
    keeps one group); the gradient is clipped over every group's parameters, not the first group's alone."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.seq2seq import Seq2SeqTask
    from codefusion.train.trainer import _Joint, _optimize, build_optimizer
    model, tok, _ = load_checkpoint(overfit_dir)
    task = Seq2SeqTask(model)
    cfg = train_config(Path("."), Path("."), task="encoder")
    opt = build_optimizer(cfg, task)
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, 10.0]
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(model.encoder.t5.shared.weight),
                                                              id(task.seq2seq.shared.weight)}
    trained = [p for p in task.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trained)
    scaled = build_optimizer(TrainConfig(**{**cfg.__dict__, "embed_lr_scale": 3.0}), task)
    assert [g["lr_scale"] for g in scaled.param_groups] == [1.0, 3.0]
    joint = build_optimizer(train_config(Path("."), Path("."), aux_seq2seq=0.5), _Joint(model, task))
    assert [g["lr_scale"] for g in joint.param_groups] == [1.0]  # finetune: one lr for all
    q = model.encoder.t5.encoder.block[0].layer[0].SelfAttention.q.weight
    loss = 1e4 * task.seq2seq.shared.weight.sum() + q.sum()
    _optimize(cfg, loss, torch.optim.SGD([{"params": g["params"]} for g in opt.param_groups], lr=0.0), {})
    norm = torch.cat([p.grad.flatten() for g in opt.param_groups for p in g["params"] if p.grad is not None]).norm()
    assert norm.item() == pytest.approx(cfg.clip, rel=1e-4)


def test_bad_embed_lr_scale_is_refused(tmp_path, data_dir, overfit_dir):
    with pytest.raises(CodeFusionError, match="--embed-lr-scale multiplies --lr .* a number > 0, got 0"):
        train(train_config(tmp_path, data_dir, task="encoder", embed_lr_scale=0.0))
    for bad in (dict(task="length", init=str(overfit_dir)), dict(freeze_encoder=True, init=str(overfit_dir))):
        with pytest.raises(CodeFusionError, match="--embed-lr-scale sets how fast .* drop it"):
            train(train_config(tmp_path, data_dir, embed_lr_scale=10.0, **bad))


def test_encoder_task_resume_needs_its_decoder(tmp_path, data_dir):
    out = train(train_config(tmp_path, data_dir, max_steps=2, dev_rows=0))
    with pytest.raises(CodeFusionError, match="seq2seq.safetensors"):
        train(train_config(tmp_path, data_dir, task="encoder", resume=True, max_steps=4, dev_rows=0, out=str(out)))


def test_freeze_encoder_with_the_encoder_task_is_refused(tmp_path, data_dir):
    with pytest.raises(CodeFusionError, match="--freeze-encoder does not go with --task encoder"):
        train(train_config(tmp_path, data_dir, task="encoder", freeze_encoder=True))


def test_aux_seq2seq_trains_e_with_the_denoiser_and_keeps_the_decoder(tmp_path, overfit_dir):
    """--aux-seq2seq W: finetune loss + W × the seq2seq CE on the same E_s; E and the denoiser both move,
    the decoder continues the --init encoder run's and is saved for the next run; bad combinations refused."""
    from safetensors.torch import load_file
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.seq2seq import SEQ2SEQ
    data = bash_data(tmp_path)
    enc = train(train_config(tmp_path, data, task="encoder", init=str(overfit_dir), max_steps=3, dev_rows=0,
                     out=str(tmp_path / "enc")))
    out = train(train_config(tmp_path, data, init=str(enc), aux_seq2seq=0.5, max_steps=4, dev_rows=0, lr=1e-3,
                     out=str(tmp_path / "joint")))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    first = log[0]
    assert first["seq2seq_ce"] > 0 and first["loss"] > 0.5 * first["seq2seq_ce"]
    before, after = load_checkpoint(enc)[0].state_dict(), load_checkpoint(out)[0].state_dict()
    changed = {name.split(".")[0] for name, w in before.items() if not torch.equal(w, after[name])}
    assert {"encoder", "denoiser"} <= changed
    start, end = load_file(str(enc / SEQ2SEQ)), load_file(str(out / SEQ2SEQ))
    assert start.keys() == end.keys() and not torch.equal(start["shared.weight"], end["shared.weight"])
    resumed = train(train_config(tmp_path, data, init=str(enc), aux_seq2seq=0.5, max_steps=5, dev_rows=0, resume=True,
                         out=str(out)))
    assert json.loads((resumed / "trainer_state.json").read_text())["step"] == 5
    for bad in (dict(freeze_encoder=True), dict(task="encoder")):
        with pytest.raises(CodeFusionError, match="--aux-seq2seq trains E beside the denoiser"):
            train(train_config(tmp_path, data, init=str(enc), aux_seq2seq=0.5, out=str(tmp_path / "bad"), **bad))