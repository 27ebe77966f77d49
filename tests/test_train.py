"""Training end to end on tiny data: the overfit check with the 1200-step reference sampler, pre-training →
fine-tuning, resume, --freeze-encoder and --encoder-from, --repeat, the tokenizer command, and bad data."""
import json
import subprocess
import sys

import pytest
import torch

from codefusion import CodeFusion, GenerationConfig
from codefusion.cli import main
from codefusion.errors import CodeFusionError, DataError
from codefusion.train.data import load_split
from codefusion.train.trainer import TrainConfig, train

from conftest import PAIRS, bash_data, train_config, write_data


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


def test_pretrain_then_finetune_from_init(tmp_path, data_dir):
    pre = train(train_config(tmp_path, data_dir, task="pretrain", out=str(tmp_path / "pre")))
    log = [json.loads(line) for line in (pre / "train_log.jsonl").read_text().splitlines()]
    assert any("dev" in row for row in log)
    fine = train(train_config(tmp_path, data_dir, task="finetune", init=str(pre), out=str(tmp_path / "fine")))
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
    out = train(train_config(tmp_path, data_dir, init=str(overfit_dir), pooled_condition=True, max_steps=3))
    trained = load_checkpoint(out)[0]
    assert trained.cfg.pooled_condition and bool(trained.denoiser.cond.mlp[2].weight.detach().abs().sum() > 0)


def test_resume_continues_the_step_count(tmp_path, data_dir):
    out = train(train_config(tmp_path, data_dir, max_steps=4))
    with pytest.raises(CodeFusionError, match="already holds a checkpoint"):
        train(train_config(tmp_path, data_dir, max_steps=4))
    train(train_config(tmp_path, data_dir, max_steps=7, resume=True))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 7


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    """A loss or gradient that is not finite stops the run before the weights move: the checkpoint already in
    --out (step 3 here) stays loadable, and the error says what happened and what to do."""
    out = train(train_config(tmp_path, data_dir, max_steps=3, dev_rows=0))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(CodeFusionError, match=r"training diverged at step \d+: the (loss|gradient norm) is (nan|inf)"
                                              r".*lower --lr .* --resume from the checkpoint"):
        train(train_config(tmp_path, data_dir, max_steps=8, dev_rows=0, resume=True, lr=1e30, warmup=0))
    assert (out / "model.safetensors").read_bytes() == before
    CodeFusion.from_pretrained(out)  # still loads


def test_an_interrupted_run_saves_a_resumable_checkpoint(tmp_path, data_dir, monkeypatch):
    from codefusion.train import trainer
    calls = {"n": 0}
    real = trainer._optimize

    def interrupt_at_the_fourth(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(trainer, "_optimize", interrupt_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        train(train_config(tmp_path, data_dir, max_steps=8, dev_rows=0))
    out = tmp_path / "run"
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 3
    monkeypatch.setattr(trainer, "_optimize", real)
    train(train_config(tmp_path, data_dir, max_steps=5, dev_rows=0, resume=True))
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 5
    logged = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert logged.count(1) == 1  # one run, one log (a fresh run into the folder would start a new one)


def test_resume_keeps_the_run_as_it_began(tmp_path, data_dir):
    train(train_config(tmp_path, data_dir, max_steps=3, dev_rows=0, task="pretrain"))
    with pytest.raises(CodeFusionError, match="--resume continues .* with --task 'pretrain', not 'finetune'"):
        train(train_config(tmp_path, data_dir, max_steps=6, dev_rows=0, resume=True))
    with pytest.raises(CodeFusionError, match="with --batch-size 4, not 2"):
        train(train_config(tmp_path, data_dir, max_steps=6, dev_rows=0, resume=True, task="pretrain", batch_size=2))
    # a save cut short between the optimizer state and the weights is caught on resume
    out = tmp_path / "run"
    state = json.loads((out / "trainer_state.json").read_text())
    (out / "trainer_state.json").write_text(json.dumps({**state, "step": 4}))
    with pytest.raises(CodeFusionError, match="weights are from step 3 but the optimizer state from step 4"):
        train(train_config(tmp_path, data_dir, max_steps=6, dev_rows=0, resume=True, task="pretrain"))
    (out / "trainer_state.json").write_text("{")
    with pytest.raises(CodeFusionError, match="the training state is unreadable"):
        train(train_config(tmp_path, data_dir, max_steps=6, dev_rows=0, resume=True, task="pretrain"))


@pytest.mark.parametrize("kw, message", [
    (dict(minutes=-1), "--minutes must be > 0, got -1"), (dict(max_steps=0), "--max-steps must be at least 1"),
    (dict(batch_size=0), "--batch-size must be at least 1"), (dict(lr=-1.0), "--lr must be > 0"),
    (dict(warmup=-3), "--warmup must be ≥ 0"), (dict(task="length", resume=True), "has no --resume"),
])
def test_bad_numbers_are_refused_before_any_data_is_read(tmp_path, kw, message):
    with pytest.raises(CodeFusionError, match=message):
        train(train_config(tmp_path, tmp_path / "no-data", **kw))


def test_a_run_that_saved_nothing_can_simply_be_run_again(tmp_path, data_dir):
    """A diverged first run leaves only its log: the same command with a sane --lr starts afresh there."""
    with pytest.raises(CodeFusionError, match="training diverged"):
        train(train_config(tmp_path, data_dir, max_steps=50, dev_rows=0, lr=1e30, warmup=0))
    out = train(train_config(tmp_path, data_dir, max_steps=2, dev_rows=0))
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 2


def test_an_interrupt_during_the_final_dev_check_still_saves_every_step(tmp_path, data_dir, monkeypatch):
    from codefusion.train import trainer
    real = trainer._hooks

    def hooks(*args, **kw):
        h = real(*args, **kw)
        h.check = lambda: (_ for _ in ()).throw(KeyboardInterrupt)
        return h
    monkeypatch.setattr(trainer, "_hooks", hooks)
    with pytest.raises(KeyboardInterrupt):
        train(train_config(tmp_path, data_dir, max_steps=4, dev_every=0))
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["step"] == 4


def test_resume_compares_what_the_flags_mean(tmp_path, data_dir):
    train(train_config(tmp_path, data_dir, max_steps=2, dev_rows=0, datasets="nl2bash,cf", repeat="cf=4"))
    train(train_config(tmp_path, data_dir, max_steps=3, dev_rows=0, datasets=" cf, nl2bash", repeat="cf=4",
                       resume=True))
    all_three = tmp_path / "all"
    train(train_config(all_three, data_dir, max_steps=2, dev_rows=0))
    train(train_config(all_three, data_dir, max_steps=3, dev_rows=0, datasets="cf,conala,nl2bash", resume=True))


def test_a_fresh_run_never_overwrites_files_in_out(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "tokenizer.json").write_text("my tokenizer")
    with pytest.raises(CodeFusionError, match="already holds tokenizer.json .* remove it or choose another --out"):
        train(train_config(tmp_path, tmp_path / "no-data", out=str(out)))
    assert (out / "tokenizer.json").read_text() == "my tokenizer"


def test_empty_split_and_non_text_nl_are_data_errors(tmp_path, data_dir):
    bad = tmp_path / "bad"
    (bad / "cf").mkdir(parents=True)
    (bad / "cf" / "train.jsonl").write_text("")
    (bad / "cf" / "pretrain.jsonl").write_text(json.dumps({"code": "Top(1)", "nl": 5}) + "\n")
    with pytest.raises(DataError, match="train.jsonl holds no rows"):
        load_split(bad, "cf", "train")
    with pytest.raises(DataError, match="pretrain.jsonl:1: field 'nl' is not a string"):
        load_split(bad, "cf", "pretrain")


def test_resume_without_state(tmp_path, data_dir):
    with pytest.raises(CodeFusionError, match="does not exist"):
        train(train_config(tmp_path, data_dir, resume=True))


def test_minutes_budget_stops_the_run(tmp_path, data_dir):
    out = train(train_config(tmp_path, data_dir, max_steps=10_000, minutes=0.02, dev_rows=0))
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
    with pytest.raises(DataError, match="names 'cf' twice"):
        load_split(data_dir, "cf,nl2bash,cf", "train")
    assert {e.lang for e in load_split(data_dir, None, "train")} == {"bash", "python", "cf"}


def test_the_cli_parser_with_its_train_options_imports_no_torch():
    """`codefusion --help` and the commands that never train stay quick to start: the train options are declared
    without importing torch or transformers (train/arguments.py), their checks (train/options.py) run in train."""
    code = ("import sys, codefusion.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


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
    out = train(train_config(tmp_path, data_dir, codet5=str(codet5), max_steps=1, lr=1e-12, warmup=1, dev_rows=0))
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


def test_freeze_encoder_keeps_e(tmp_path, overfit_dir):
    from codefusion.checkpoint import load_checkpoint
    before = load_checkpoint(overfit_dir)[0].state_dict()
    out = train(train_config(tmp_path, bash_data(tmp_path), init=str(overfit_dir), freeze_encoder=True, max_steps=3,
                     dev_rows=0))
    after = load_checkpoint(out)[0].state_dict()
    changed = {name.split(".")[0] for name, w in before.items() if not torch.equal(w, after[name])}
    assert "encoder" not in changed and "denoiser" in changed


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
    out = train(train_config(tmp_path, bash_data(tmp_path), init=str(overfit_dir), encoder_from=str(donor),
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
        train(train_config(tmp_path, bash_data(tmp_path), init=str(overfit_dir), encoder_from=str(tmp_path / "other"),
                   out=str(tmp_path / "run2")))
    with pytest.raises(CodeFusionError, match="give --init too"):
        train(train_config(tmp_path, bash_data(tmp_path), encoder_from=str(donor), out=str(tmp_path / "run3")))


def test_repeat_equals_a_train_file_that_holds_copies_of_itself(tmp_path, data_dir):
    from codefusion.train.data import parse_repeat, repeat_rows
    doubled = write_data(tmp_path / "doubled")
    cf_train = doubled / "cf" / "train.jsonl"
    cf_train.write_text(cf_train.read_text() * 2)
    rows = load_split(str(data_dir), None, "train")
    repeated = repeat_rows(rows, parse_repeat("cf=2,nl2bash=1"))
    assert repeated == load_split(str(doubled), None, "train")
    assert sum(r.lang == "cf" for r in repeated) == 2 * sum(r.lang == "cf" for r in rows)
    out = train(train_config(tmp_path, data_dir, repeat="cf=2", max_steps=2, dev_rows=0))
    assert json.loads((out / "config.json").read_text())["meta"]["history"][-1]["repeat"] == "cf=2"


@pytest.mark.parametrize("spec", ["cf", "cf=0", "cf=1.5", "spider=2", "cf=2,,"])
def test_bad_repeat_is_refused_before_any_data_is_read(tmp_path, spec):
    with pytest.raises(CodeFusionError, match="--repeat takes DATASET=TIMES"):
        train(TrainConfig(preset="tiny", data=str(tmp_path / "absent"), out=str(tmp_path / "o"), max_steps=1,
                          repeat=spec))
    with pytest.raises(CodeFusionError, match="drop it for --task pretrain"):
        train(TrainConfig(preset="tiny", data=str(tmp_path / "absent"), out=str(tmp_path / "o"), max_steps=1,
                          task="pretrain", repeat="cf=2"))


@pytest.mark.parametrize("sig, raised", [("SIGINT", KeyboardInterrupt), ("SIGTERM", "Terminated")])
def test_a_signal_during_a_step_waits_for_the_step_to_end(sig, raised):
    """Ctrl-C or SIGTERM inside DeferInterrupt (one optimizer step and its count) is raised when the block ends,
    never inside it; the handlers before it are put back."""
    import os
    import signal

    from codefusion.errors import Terminated
    from codefusion.train.state import DeferInterrupt

    raised = Terminated if raised == "Terminated" else raised
    signum = getattr(signal, sig)
    # Python's own handling, as an interactive run has it: a shell starting pytest in the background (`&`,
    # nohup) ignores SIGINT, and an ignored signal rightly stays ignored (the next test)
    outer = signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    try:
        before = signal.getsignal(signum)
        finished = []
        with pytest.raises(raised) as caught:
            with DeferInterrupt():
                os.kill(os.getpid(), signum)
                finished.append("the rest of the step")
        assert finished == ["the rest of the step"] and type(caught.value) is raised
        assert signal.getsignal(signum) is before
    finally:
        signal.signal(signum, outer)


def test_an_ignored_sigterm_stays_ignored():
    """A process started with SIGTERM ignored (nohup-like supervisors) is not stopped by it inside a step, and
    the CLI's main leaves the ignore in place."""
    import os
    import signal

    from codefusion import cli
    from codefusion.train.state import DeferInterrupt

    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with DeferInterrupt():
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: nothing is raised when the block ends
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        seen = []
        real_main = cli._main
        cli._main = lambda argv: seen.append(signal.getsignal(signal.SIGTERM)) or 0
        try:
            assert cli.main([]) == 0
        finally:
            cli._main = real_main
        assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)
