"""Training end to end on tiny data: the overfit check with the 1200-step reference sampler,
pre-training → fine-tuning, resume, the tokenizer command, and bad data."""
import json
from pathlib import Path

import pytest
import torch

from codefusion import CodeFusion, GenerationConfig
from codefusion.cli import main
from codefusion.errors import CodeFusionError, DataError
from codefusion.train.data import load_split
from codefusion.train.trainer import TrainConfig, train

from conftest import PAIRS, write_data


def test_tiny_model_overfits_8_pairs_with_the_1200_step_reference_sampler(overfit_dir):
    cf = CodeFusion.from_pretrained(overfit_dir, backend="reference")
    prompts, codes = zip(*PAIRS["nl2bash"])
    out = cf.generate(list(prompts), GenerationConfig(lang="bash", steps=1200, seed=0))
    assert out.timings["steps"] == 1200
    assert [texts[0] for texts in out.texts] == list(codes)


def test_checkpoint_records_the_run(overfit_dir):
    config = json.loads((overfit_dir / "config.json").read_text())
    run = config["meta"]["history"][-1]
    assert run["task"] == "finetune" and run["steps"] == 600 and run["wall_s"] > 0
    log = [json.loads(line) for line in (overfit_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and log[-1]["final"] and "ce" in log[1]


def _cfg(tmp_path, data_dir, **kw):
    base = dict(preset="tiny", data=str(data_dir), out=str(tmp_path / "run"), max_steps=6, batch_size=4,
                dev_rows=4, dev_every=3, dev_steps=2, dtype="float32", warmup=2)
    return TrainConfig(**{**base, **kw})


def test_pretrain_then_finetune_from_init(tmp_path, data_dir):
    pre = train(_cfg(tmp_path, data_dir, task="pretrain", out=str(tmp_path / "pre")))
    log = [json.loads(line) for line in (pre / "train_log.jsonl").read_text().splitlines()]
    assert any("dev" in row for row in log)
    fine = train(_cfg(tmp_path, data_dir, task="finetune", init=str(pre), out=str(tmp_path / "fine")))
    history = json.loads((fine / "config.json").read_text())["meta"]["history"]
    assert [h["task"] for h in history] == ["pretrain", "finetune"]


def test_pooled_condition_extends_an_init_model(tmp_path, data_dir, overfit_dir):
    """--pooled-condition on a model without it: the extension starts as the same function, then trains."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.trainer import with_pooled_condition
    model = load_checkpoint(overfit_dir)[0].eval()
    extended = with_pooled_condition(model).eval()
    x, t, mem = torch.randn(2, 16, model.cfg.d_embed), torch.tensor([3, 1199]), torch.randn(2, 5, model.cfg.enc_d_model)
    assert torch.equal(model.denoiser(x, t, mem, None), extended.denoiser(x, t, mem, None))
    out = train(_cfg(tmp_path, data_dir, init=str(overfit_dir), pooled_condition=True, max_steps=3))
    trained = load_checkpoint(out)[0]
    assert trained.cfg.pooled_condition and bool(trained.denoiser.cond.mlp[2].weight.detach().abs().sum() > 0)


def test_resume_continues_the_step_count(tmp_path, data_dir):
    out = train(_cfg(tmp_path, data_dir, max_steps=4))
    with pytest.raises(CodeFusionError, match="already holds a checkpoint"):
        train(_cfg(tmp_path, data_dir, max_steps=4))
    train(_cfg(tmp_path, data_dir, max_steps=7, resume=True))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 7


def test_resume_without_state(tmp_path, data_dir):
    with pytest.raises(CodeFusionError, match="does not exist"):
        train(_cfg(tmp_path, data_dir, resume=True))


def test_minutes_budget_stops_the_run(tmp_path, data_dir):
    out = train(_cfg(tmp_path, data_dir, max_steps=10_000, minutes=0.02, dev_rows=0))
    assert json.loads((out / "trainer_state.json").read_text())["step"] < 10_000


def _bad_data(tmp_path, data_dir):
    bad = tmp_path / "bad"
    (bad / "cf").mkdir(parents=True)
    good = (data_dir / "cf" / "train.jsonl").read_text().splitlines()
    lines = [good[0], '{"nl": "x", "code": ', good[1], '{"nl": "y"}', "[1, 2]", good[2]]
    data = "\n".join(lines).encode() + b'\n{"nl": "z", "code": "\xff"}\n'
    (bad / "cf" / "train.jsonl").write_bytes(data)
    return bad


def test_malformed_line_stops_with_file_and_line(tmp_path, data_dir):
    bad = _bad_data(tmp_path, data_dir)
    with pytest.raises(DataError, match=r"cf/train.jsonl:2: not valid JSON .*--on-bad-line skip"):
        load_split(bad, "cf", "train")


def test_malformed_lines_skipped_when_asked(tmp_path, data_dir, capsys):
    rows = load_split(_bad_data(tmp_path, data_dir), "cf", "train", on_bad_line="skip")
    assert len(rows) == 3 and all(r.lang == "cf" for r in rows)
    err = capsys.readouterr().err
    assert "train.jsonl:2:" in err and "train.jsonl:4: field 'code'" in err and "train.jsonl:5: not a JSON object" in err
    assert "train.jsonl:7: not UTF-8" in err


def test_data_selection_errors(tmp_path, data_dir):
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "nowhere", None, "train")
    with pytest.raises(DataError, match="unknown dataset 'spider'"):
        load_split(data_dir, "nl2bash,spider", "train")
    assert {e.lang for e in load_split(data_dir, None, "train")} == {"bash", "python", "cf"}


def test_cli_tokenizer_and_train(tmp_path, data_dir, capsys):
    tok = tmp_path / "tok.json"
    assert main(["tokenizer", "--data", str(data_dir), "--vocab-size", "300", "--out", str(tok)]) == 0
    assert main(["train", "--preset", "tiny", "--data", str(data_dir), "--datasets", "cf", "--out", str(tmp_path / "r"),
                 "--tokenizer", str(tok), "--max-steps", "3", "--batch-size", "2", "--dev-rows", "0",
                 "--dtype", "float32"]) == 0
    assert (tmp_path / "r" / "model.safetensors").is_file()
    assert main(["train", "--preset", "huge", "--data", str(data_dir), "--out", str(tmp_path / "r2")]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--data", str(data_dir), "--out", str(tmp_path / "r3")]) == 2
    assert "give the run a length" in capsys.readouterr().err


def test_encoder_starts_from_a_local_codet5_directory(tmp_path, data_dir):
    """A CodeT5-shaped directory (config + safetensors + RoBERTa BPE files) seeds E and the tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5EncoderModel

    from codefusion.checkpoint import load_checkpoint
    from codefusion.config import get_preset
    from codefusion.model.encoder import t5_config

    codet5 = tmp_path / "codet5"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([c for rows in PAIRS.values() for _, c in rows] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    codet5.mkdir()
    bpe.model.save(str(codet5))
    torch.manual_seed(1)
    encoder = T5EncoderModel(t5_config(__import__("dataclasses").replace(get_preset("tiny"), vocab_size=320)))
    encoder.save_pretrained(str(codet5))
    out = train(_cfg(tmp_path, data_dir, codet5=str(codet5), max_steps=1, lr=1e-12, warmup=1, dev_rows=0))
    model, tok, config = load_checkpoint(out)
    assert tok.kind == "codet5" and model.cfg.vocab_size == 320 and config["meta"]["encoder_init"] == str(codet5)
    torch.testing.assert_close(model.encoder.t5.encoder.block[0].layer[0].SelfAttention.q.weight,
                               encoder.encoder.block[0].layer[0].SelfAttention.q.weight, atol=1e-6, rtol=0)


def test_dev_check_rows_cover_every_language(data_dir):
    from codefusion.train.data import balanced

    rows = balanced(load_split(data_dir, None, "dev"), 6)
    assert [r.lang for r in rows] == ["bash", "python", "cf"] * 2


def test_dev_check_reports_syntax_per_language(overfit_dir, data_dir):
    """The overfit Bash model writes its 8 commands (all parse) for the Bash rows; for the Python and CF
    rows it writes Bash too, which CF's grammar refuses: per-language figures, not one pooled figure."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.eval.metrics import syntax_valid
    from codefusion.train.devcheck import dev_check

    model, tok, _ = load_checkpoint(overfit_dir)
    dev = load_split(data_dir, None, "dev")
    result = dev_check(model, tok, dev, "finetune", 5, "cpu")
    assert result["n"] == 16 and result["syntax_bash"] == 1.0 and result["syntax_cf"] == 0.0
    assert set(result) == {"n", "exact", "token_f1", "syntax_bash", "syntax_python", "syntax_cf"}
    assert not syntax_valid("GreaterThan(2", "cf") and syntax_valid("GreaterThan(2)", "cf")


def test_no_row_fits_the_target_length(tmp_path):
    from conftest import write_data

    data = write_data(tmp_path / "long", {"nl2bash": [("long", "echo " + "x " * 200)]})
    with pytest.raises(DataError, match="no training row fits"):
        train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "r"), max_steps=1, dev_rows=0))


def test_high_noise_timestep_sampling():
    from codefusion.train.trainer import sample_t
    torch.manual_seed(0)
    t = sample_t("high", 200_000, 1200, "cpu")
    assert int(t.min()) >= 0 and int(t.max()) == 1199
    assert abs(float((t >= 600).float().mean()) - (1 - (1 - 0.5 ** 0.5))) < 0.005  # P(t/T ≥ ½) = √½ ≈ 0.707
    u = sample_t("uniform", 200_000, 1200, "cpu")
    assert abs(float((u >= 600).float().mean()) - 0.5) < 0.005


def test_noise_clipping_keeps_a_share_of_the_whole_range():
    from codefusion.train.trainer import sample_t
    torch.manual_seed(0)
    t = sample_t("uniform", 200_000, 1200, "cpu", t_min=0.5, t_min_share=0.8)
    low = (t < 600).float().mean()  # only the unclipped 20% can land below ½T, half of them do
    assert abs(float(low) - 0.1) < 0.005 and int(t.max()) == 1199
    assert int(sample_t("high", 50_000, 1200, "cpu", t_min=0.75).min()) == 900


def test_bad_noise_clipping_is_refused(tmp_path):
    with pytest.raises(CodeFusionError, match="--t-min is a fraction of T"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, t_min=1.0))
    with pytest.raises(CodeFusionError, match="--t-min-share is a probability"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, t_min_share=2))


def test_bad_t_sampling_is_refused(tmp_path):
    with pytest.raises(CodeFusionError, match="--t-sampling must be uniform or high"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, t_sampling="low"))


def test_condition_probe_on_the_overfit_model(overfit_dir, tmp_path):
    """The overfit model must use its condition: at t = T−1 only E_s tells the 8 programs apart."""
    from codefusion.train.probe import probe
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    rows = {r["t"]: r for r in probe(str(overfit_dir), str(data), rows=8, n=16)}
    assert rows[1199]["rows"] == 8 and rows[1199]["acc_right"] > rows[1199]["acc_shuffled"] + 0.3


def _bash_only(tmp_path):
    return write_data(tmp_path / "bash", {"nl2bash": PAIRS["nl2bash"]})


def test_encoder_task_trains_e_through_a_seq2seq_decoder(tmp_path, overfit_dir):
    """--task encoder: a T5 decoder on E_s learns the 8 pairs greedily; only E changes in the CodeFusion
    checkpoint, the decoder is saved beside it, and --resume reloads it."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.seq2seq import SEQ2SEQ, Seq2SeqTask, distill, score, seq2seq_dev_check
    data = _bash_only(tmp_path)
    before = load_checkpoint(overfit_dir)[0]
    cfg = _cfg(tmp_path, data, task="encoder", init=str(overfit_dir), max_steps=120, batch_size=8, lr=3e-3,
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
    data = _bash_only(tmp_path)
    lr = 1e-3
    out = train(_cfg(tmp_path, data, task="encoder", init=str(overfit_dir), max_steps=1, lr=lr, warmup=0,
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
    cfg = _cfg(Path("."), Path("."), task="encoder")
    opt = build_optimizer(cfg, task)
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, 10.0]
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(model.encoder.t5.shared.weight),
                                                              id(task.seq2seq.shared.weight)}
    trained = [p for p in task.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trained)
    scaled = build_optimizer(TrainConfig(**{**cfg.__dict__, "embed_lr_scale": 3.0}), task)
    assert [g["lr_scale"] for g in scaled.param_groups] == [1.0, 3.0]
    joint = build_optimizer(_cfg(Path("."), Path("."), aux_seq2seq=0.5), _Joint(model, task))
    assert [g["lr_scale"] for g in joint.param_groups] == [1.0]  # finetune: one lr for all
    q = model.encoder.t5.encoder.block[0].layer[0].SelfAttention.q.weight
    loss = 1e4 * task.seq2seq.shared.weight.sum() + q.sum()
    _optimize(cfg, loss, torch.optim.SGD([{"params": g["params"]} for g in opt.param_groups], lr=0.0), {})
    norm = torch.cat([p.grad.flatten() for g in opt.param_groups for p in g["params"] if p.grad is not None]).norm()
    assert norm.item() == pytest.approx(cfg.clip, rel=1e-4)


def test_bad_embed_lr_scale_is_refused(tmp_path, data_dir, overfit_dir):
    with pytest.raises(CodeFusionError, match="--embed-lr-scale multiplies --lr .* a number > 0, got 0"):
        train(_cfg(tmp_path, data_dir, task="encoder", embed_lr_scale=0.0))
    for bad in (dict(task="length", init=str(overfit_dir)), dict(freeze_encoder=True, init=str(overfit_dir))):
        with pytest.raises(CodeFusionError, match="--embed-lr-scale sets how fast .* drop it"):
            train(_cfg(tmp_path, data_dir, embed_lr_scale=10.0, **bad))


def test_encoder_task_resume_needs_its_decoder(tmp_path, data_dir):
    out = train(_cfg(tmp_path, data_dir, max_steps=2, dev_rows=0))
    with pytest.raises(CodeFusionError, match="seq2seq.safetensors"):
        train(_cfg(tmp_path, data_dir, task="encoder", resume=True, max_steps=4, dev_rows=0, out=str(out)))


def test_freeze_encoder_keeps_e(tmp_path, overfit_dir):
    from codefusion.checkpoint import load_checkpoint
    before = load_checkpoint(overfit_dir)[0].state_dict()
    out = train(_cfg(tmp_path, _bash_only(tmp_path), init=str(overfit_dir), freeze_encoder=True, max_steps=3,
                     dev_rows=0))
    after = load_checkpoint(out)[0].state_dict()
    changed = {name.split(".")[0] for name, w in before.items() if not torch.equal(w, after[name])}
    assert "encoder" not in changed and "denoiser" in changed


def test_freeze_encoder_with_the_encoder_task_is_refused(tmp_path, data_dir):
    with pytest.raises(CodeFusionError, match="--freeze-encoder does not go with --task encoder"):
        train(_cfg(tmp_path, data_dir, task="encoder", freeze_encoder=True))


def test_encoder_from_replaces_e_and_keeps_the_rest(tmp_path, overfit_dir):
    """--init A --encoder-from B: E is B's (bit for bit under --freeze-encoder), everything else A's."""
    import dataclasses
    from codefusion.checkpoint import load_checkpoint, save_checkpoint
    from codefusion.model.codefusion import CodeFusionModel
    model, tok, _ = load_checkpoint(overfit_dir)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.01)
    donor = save_checkpoint(tmp_path / "donor", model, tok)
    out = train(_cfg(tmp_path, _bash_only(tmp_path), init=str(overfit_dir), encoder_from=str(donor),
                     freeze_encoder=True, max_steps=1, lr=1e-9, warmup=0, dev_rows=0))
    after, _, config = load_checkpoint(out)
    init = load_checkpoint(overfit_dir)[0].state_dict()
    for name, w in after.state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(w, model.state_dict()[name]), name
        else:
            torch.testing.assert_close(w, init[name], atol=1e-6, rtol=0)
    assert config["meta"]["encoder_from"] == str(donor)
    other = CodeFusionModel(dataclasses.replace(model.cfg, enc_layers=model.cfg.enc_layers + 1))
    save_checkpoint(tmp_path / "other", other, tok)
    with pytest.raises(CodeFusionError, match="enc_layers differs"):
        train(_cfg(tmp_path, _bash_only(tmp_path), init=str(overfit_dir), encoder_from=str(tmp_path / "other"),
                   out=str(tmp_path / "run2")))
    with pytest.raises(CodeFusionError, match="give --init too"):
        train(_cfg(tmp_path, _bash_only(tmp_path), encoder_from=str(donor), out=str(tmp_path / "run3")))


def test_aux_seq2seq_trains_e_with_the_denoiser_and_keeps_the_decoder(tmp_path, overfit_dir):
    """--aux-seq2seq W: finetune loss + W × the seq2seq CE on the same E_s; E and the denoiser both move,
    the decoder continues the --init encoder run's and is saved for the next run; bad combinations refused."""
    from safetensors.torch import load_file
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.seq2seq import SEQ2SEQ
    data = _bash_only(tmp_path)
    enc = train(_cfg(tmp_path, data, task="encoder", init=str(overfit_dir), max_steps=3, dev_rows=0,
                     out=str(tmp_path / "enc")))
    out = train(_cfg(tmp_path, data, init=str(enc), aux_seq2seq=0.5, max_steps=4, dev_rows=0, lr=1e-3,
                     out=str(tmp_path / "joint")))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    first = log[0]
    assert first["seq2seq_ce"] > 0 and first["loss"] > 0.5 * first["seq2seq_ce"]
    before, after = load_checkpoint(enc)[0].state_dict(), load_checkpoint(out)[0].state_dict()
    changed = {name.split(".")[0] for name, w in before.items() if not torch.equal(w, after[name])}
    assert {"encoder", "denoiser"} <= changed
    start, end = load_file(str(enc / SEQ2SEQ)), load_file(str(out / SEQ2SEQ))
    assert start.keys() == end.keys() and not torch.equal(start["shared.weight"], end["shared.weight"])
    resumed = train(_cfg(tmp_path, data, init=str(enc), aux_seq2seq=0.5, max_steps=5, dev_rows=0, resume=True,
                         out=str(out)))
    assert json.loads((resumed / "trainer_state.json").read_text())["step"] == 5
    for bad in (dict(freeze_encoder=True), dict(task="encoder")):
        with pytest.raises(CodeFusionError, match="--aux-seq2seq trains E beside the denoiser"):
            train(_cfg(tmp_path, data, init=str(enc), aux_seq2seq=0.5, out=str(tmp_path / "bad"), **bad))


def test_repeat_equals_a_train_file_that_holds_copies_of_itself(tmp_path, data_dir):
    from codefusion.train.data import parse_repeat, repeat_rows
    doubled = write_data(tmp_path / "doubled")
    cf_train = doubled / "cf" / "train.jsonl"
    cf_train.write_text(cf_train.read_text() * 2)
    rows = load_split(str(data_dir), None, "train")
    repeated = repeat_rows(rows, parse_repeat("cf=2,nl2bash=1"))
    assert repeated == load_split(str(doubled), None, "train")
    assert sum(r.lang == "cf" for r in repeated) == 2 * sum(r.lang == "cf" for r in rows)
    out = train(_cfg(tmp_path, data_dir, repeat="cf=2", max_steps=2, dev_rows=0))
    assert json.loads((out / "config.json").read_text())["meta"]["history"][-1]["repeat"] == "cf=2"


@pytest.mark.parametrize("spec", ["cf", "cf=0", "cf=1.5", "spider=2", "cf=2,,"])
def test_bad_repeat_is_refused_before_any_data_is_read(tmp_path, spec):
    with pytest.raises(CodeFusionError, match="--repeat takes DATASET=TIMES"):
        train(TrainConfig(preset="tiny", data=str(tmp_path / "absent"), out=str(tmp_path / "o"), max_steps=1,
                          repeat=spec))
    with pytest.raises(CodeFusionError, match="drop it for --task pretrain"):
        train(TrainConfig(preset="tiny", data=str(tmp_path / "absent"), out=str(tmp_path / "o"), max_steps=1,
                          task="pretrain", repeat="cf=2"))
