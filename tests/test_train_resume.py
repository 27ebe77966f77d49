"""Stopping and continuing a run: --resume goes on with the same step count and refuses another run's flags, a
diverging run keeps the last good checkpoint, an interrupt saves a resumable one, and Ctrl-C/SIGTERM wait for the
step to end."""
import json

import pytest
import torch

from codefusion import CodeFusion
from codefusion.errors import CodeFusionError
from codefusion.train.trainer import train

from conftest import train_config


def test_resume_continues_the_step_count(tmp_path, data_dir):
    out = train(train_config(tmp_path, data_dir, max_steps=4))
    with pytest.raises(CodeFusionError, match="already holds a checkpoint"):
        train(train_config(tmp_path, data_dir, max_steps=4))
    train(train_config(tmp_path, data_dir, max_steps=7, resume=True))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 7
    train(train_config(tmp_path, data_dir, max_steps=7, resume=True))  # no step left: saves again (was a KeyError)
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 7


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


def _interrupt_at_step(monkeypatch, n: int):
    """Ctrl-C in the n-th optimizer step (inside trainer._optimize) → a callable that undoes it."""
    from codefusion.train import trainer
    real, calls = trainer._optimize, {"n": 0}

    def interrupt(*args, **kw):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(trainer, "_optimize", interrupt)
    return lambda: monkeypatch.setattr(trainer, "_optimize", real)


def test_an_interrupted_run_saves_a_resumable_checkpoint(tmp_path, data_dir, monkeypatch):
    undo = _interrupt_at_step(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train(train_config(tmp_path, data_dir, max_steps=8, dev_rows=0))
    out = tmp_path / "run"
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 3
    undo()
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
    (out / "trainer_state.json").write_text(json.dumps({"step": 3}))  # JSON, but not a state: was a KeyError
    with pytest.raises(CodeFusionError, match="lacks the step counts"):
        train(train_config(tmp_path, data_dir, max_steps=6, dev_rows=0, resume=True, task="pretrain"))


def test_resume_refuses_files_of_different_saves(tmp_path, data_dir):
    """Each file of a save is replaced atomically, the set is not: a kill between two files left step-3 Adam
    moments beside step-5 weights, and --resume took them. Every file now carries the save's id."""
    out = train(train_config(tmp_path, data_dir, max_steps=3, dev_rows=0))
    old_moments = (out / "optimizer.safetensors").read_bytes()
    train(train_config(tmp_path, data_dir, max_steps=5, dev_rows=0, resume=True))
    (out / "optimizer.safetensors").write_bytes(old_moments)
    with pytest.raises(CodeFusionError, match=r"files are from different saves \(model.safetensors step 5, "
                                              r"optimizer.safetensors step 3, trainer_state.json step 5"):
        train(train_config(tmp_path, data_dir, max_steps=7, dev_rows=0, resume=True))
    # a state written before stamps beside a stamped file: the first save of an upgraded run was cut short
    state = json.loads((out / "trainer_state.json").read_text())
    (out / "trainer_state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "save"}))
    with pytest.raises(CodeFusionError, match=r"trainer_state.json step \?"):
        train(train_config(tmp_path, data_dir, max_steps=7, dev_rows=0, resume=True))


def test_resume_over_changed_rows_reseeds_with_a_note(tmp_path, data_dir, capsys):
    """The saved data order indexes the rows it was drawn over: with other rows it cannot be put back (it raised
    IndexError), so the draws are re-seeded, as before there was a saved order, and a note says so."""
    import shutil

    out = train(train_config(tmp_path, data_dir, max_steps=2, dev_rows=0))
    fewer = tmp_path / "fewer"
    shutil.copytree(data_dir, fewer)
    train_file = fewer / "nl2bash" / "train.jsonl"
    train_file.write_text("".join(train_file.read_text().splitlines(keepends=True)[:2]))
    train(train_config(tmp_path, fewer, max_steps=4, dev_rows=0, resume=True))
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 4
    assert "the training rows changed since the run was saved" in capsys.readouterr().err.replace("\n", " ")


def test_a_run_from_init_keeps_the_checkpoint_s_sampler_default(tmp_path, data_dir, monkeypatch):
    """`pack --default-clamp decode` makes `decode` the model's sampler; fine-tuning it with --init (and resuming
    that) kept nothing of it, so `generate` of the result fell back to the reference sampler unannounced."""
    from codefusion.checkpoint import read_config
    from codefusion.cli import main

    import shutil

    from codefusion.train import trainer

    first = train(train_config(tmp_path, data_dir, max_steps=2, dev_rows=0))
    assert main(["pack", "--model", str(first), "--out", str(tmp_path / "packed"), "--default-clamp", "decode"]) == 0
    real = trainer._optimize

    def init_gone(*args, **kw):  # read once at the start: a save no longer needs the --init folder
        shutil.rmtree(tmp_path / "packed", ignore_errors=True)
        return real(*args, **kw)
    monkeypatch.setattr(trainer, "_optimize", init_gone)
    tuned = train(train_config(tmp_path, data_dir, max_steps=2, dev_rows=0, init=str(tmp_path / "packed"),
                               out=str(tmp_path / "tuned")))
    monkeypatch.setattr(trainer, "_optimize", real)
    assert read_config(tuned)["generation"] == {"clamp": "decode"}
    train(train_config(tmp_path, data_dir, max_steps=3, dev_rows=0, resume=True, out=str(tuned)))
    assert read_config(tuned)["generation"] == {"clamp": "decode"}


def test_resume_drops_the_log_rows_a_killed_run_wrote_past_its_save(tmp_path, data_dir):
    """A run killed after its last save logged steps it never saved; the resumed run redoes them, and its log
    (what `train curve` plots) keeps each step once."""
    out = train(train_config(tmp_path, data_dir, max_steps=4, dev_rows=0, log_every=1))
    log = out / "train_log.jsonl"
    log.write_text(log.read_text() + json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    train(train_config(tmp_path, data_dir, max_steps=6, dev_rows=0, log_every=1, resume=True))
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if "dev" not in line]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_pack_refuses_a_training_run_s_folder(tmp_path, data_dir, capsys):
    """pack --force into a run folder kept its optimizer state, and --resume then trained the packed weights
    with another run's Adam moments."""
    from codefusion.cli import main

    run = train(train_config(tmp_path, data_dir, max_steps=2, dev_rows=0))
    assert main(["pack", "--model", str(run), "--out", str(tmp_path / "copy")]) == 0
    assert main(["pack", "--model", str(tmp_path / "copy"), "--out", str(run), "--force"]) == 2
    assert "is a training run's folder (it holds trainer_state.json)" in capsys.readouterr().err


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


def test_resume_without_state(tmp_path, data_dir):
    with pytest.raises(CodeFusionError, match="does not exist"):
        train(train_config(tmp_path, data_dir, resume=True))


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


def test_a_resumed_run_is_the_uninterrupted_run(tmp_path, data_dir, monkeypatch):
    """--resume puts back the data order (the sampler's half-used epoch), both row generators and torch's RNG: an
    8-step run stopped after step 4 and resumed ends with the weights of the run that was not stopped, bit for bit
    (re-seeding by the step gave other rows, some twice and some never, and other t and ε)."""
    from safetensors.torch import load_file

    whole = train(train_config(tmp_path, data_dir, max_steps=8, dev_rows=0, out=str(tmp_path / "whole")))
    undo = _interrupt_at_step(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(train_config(tmp_path, data_dir, max_steps=8, dev_rows=0, out=str(tmp_path / "cut")))
    undo()
    cut = train(train_config(tmp_path, data_dir, max_steps=8, dev_rows=0, out=str(tmp_path / "cut"), resume=True))
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
