"""Rollout rows from whole stored loops (--rollout-loop): the stored states are the ancestral loop's own at
every timestep, each bucket's loop serves R batches and is then walked afresh, its rows reach the loss with
the loop's own self-condition, and a run records it."""
import dataclasses
import json

import pytest
import torch

from codefusion.diffusion.losses import loss_terms
from codefusion.errors import CodeFusionError
from codefusion.model import CodeFusionModel
from codefusion.train.batches import Batch
from codefusion.train.config import TrainConfig
from codefusion.train.loopwalk import LoopWalks, loop_states
from codefusion.train.rollout import OwnRows, own_x_t
from codefusion.train.trainer import train

from conftest import PAIRS, Recorder, write_data


@pytest.fixture(scope="module")
def short_model(tokenizer):
    """The tiny preset with T = 40, so a whole loop is 40 forwards."""
    torch.manual_seed(0)
    from codefusion.config import get_preset
    cfg = dataclasses.replace(get_preset("tiny"), vocab_size=tokenizer.vocab_size, diffusion_steps=40)
    return CodeFusionModel(cfg).eval()


def test_loop_states_are_the_ancestral_loop_at_every_timestep(short_model):
    """x[t] is where T−1−t DDPM steps of one step each take pure noise (the short walk with every timestep kept),
    and x0_prev[t] the x̂0 the loop made just before, the walk's last estimate; zeros at T−1."""
    model = short_model
    B, n, d = 2, 16, model.cfg.d_embed
    mem = torch.randn(B, 5, model.cfg.enc_d_model, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, 5, dtype=torch.bool)
    x, prev = loop_states(model, mem, mask, (B, n, d), 40, generator=torch.Generator().manual_seed(3))
    assert x.shape == (40, B, n, d) and prev.shape == x.shape
    assert torch.equal(x[39], torch.randn(B, n, d, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(prev[39], torch.zeros(B, n, d))
    for t in (0, 7, 38):
        want, want_x0 = own_x_t(model, mem, mask, t, 39 - t, (B, n, d), torch.Generator().manual_seed(3), with_x0=True)
        torch.testing.assert_close(x[t], want, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(prev[t], want_x0, atol=1e-6, rtol=1e-6)
    kept, _ = loop_states(model, mem, mask, (B, n, d), 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(kept, x[:10])  # t_keep keeps the loop's end, the same loop


def _batch(seed: int, n: int = 16, B: int = 4) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch("finetune", torch.randint(3, 100, (B, n), generator=g), torch.randint(3, 100, (B, 6), generator=g),
                 torch.ones(B, 6, dtype=torch.bool), tuple(f"l{seed}_{i}" for i in range(B)))


def test_each_bucket_keeps_a_loop_for_r_batches_and_then_walks_afresh(short_model):
    model = short_model
    walks = LoopWalks(reuse=2, t_max=0.5, T=40)
    first, second, third = _batch(1), _batch(2), _batch(3)
    new, t, own = walks.draw(model, first, 2, "cpu", torch.Generator().manual_seed(0))
    assert walks.walked == 1 and t.shape == (2,) and bool((t >= 0).all() and (t < 20).all())
    walk = walks.walks[16]
    assert own.rows.tolist() == [True, True, False, False]
    assert torch.equal(walk.batch.tgt, first.tgt[:2])  # the loop walks the rows it stands in for
    for i in range(2):  # a drawn row is one of the loop's rows, whole: request, program, language and state
        j = [r for r in range(2) if torch.equal(walk.batch.tgt[r], new.tgt[i])][0]
        assert torch.equal(new.src_ids[i], first.src_ids[j]) and new.langs[i] == first.langs[j]
        assert torch.equal(own.x_t[i], walk.x[t[i], j]) and torch.equal(own.x0_prev[i], walk.x0_prev[t[i], j])
        assert own.heads is own.x0_prev
    assert torch.equal(new.tgt[2:], first.tgt[2:]) and new.langs[2:] == first.langs[2:]
    assert not own.x_t[2:].any() and not own.x0_prev[2:].any()
    new2, _, _ = walks.draw(model, second, 2, "cpu")
    assert walks.walked == 1 and torch.equal(new2.tgt[2:], second.tgt[2:])  # served by the same loop
    assert all(any(torch.equal(new2.tgt[i], r) for r in first.tgt[:2]) for i in range(2))
    walks.draw(model, third, 2, "cpu")
    assert walks.walked == 2 and torch.equal(walks.walks[16].batch.tgt, third.tgt[:2])  # used up: walked afresh
    walks.draw(model, _batch(4, n=32), 1, "cpu")
    assert walks.walked == 3 and set(walks.walks) == {16, 32}  # a bucket of its own


def test_loop_rows_are_self_conditioned_on_the_loops_own_estimate(tiny_model):
    model = tiny_model
    real = model.denoiser
    model.denoiser = Recorder()
    try:
        y = torch.randint(0, model.cfg.vocab_size, (3, 16))
        mem, t = torch.randn(3, 5, model.cfg.enc_d_model), torch.tensor([100, 3, 700])
        eps, eps0 = torch.randn(3, 16, model.cfg.d_embed), torch.zeros(3, 16, model.cfg.d_embed)
        rows = torch.tensor([True, True, False])
        x_own, prev = torch.full((3, 16, model.cfg.d_embed), 5.0), torch.full((3, 16, model.cfg.d_embed), -2.0)
        loss_terms(model, y, mem, None, t, eps, eps0, False, OwnRows(rows, x_own, prev, prev))
        seen_x, seen_prev = model.denoiser.seen, model.denoiser.seen_prev
        assert torch.equal(seen_x[:2], x_own[:2]) and not torch.equal(seen_x[2], x_own[2])
        assert torch.equal(seen_prev[:2], prev[:2]) and not seen_prev[2].any()  # the rest: no self-condition
        loss_terms(model, y, mem, None, t, eps, eps0, True, OwnRows(rows, x_own, prev, prev))
        seen_prev = model.denoiser.seen_prev
        assert torch.equal(seen_prev[:2], prev[:2]) and not seen_prev[2].eq(-2.0).all()  # the rest: its own pass
    finally:
        model.denoiser = real


def test_a_run_with_loop_walks_trains_and_records_it(tmp_path):
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run"), max_steps=3, batch_size=4,
                            dev_rows=0, dtype="float32", warmup=1, rollout_share=0.5, rollout_loop=2,
                            rollout_t_max=0.05, rollout_snap="bash"))
    run = json.loads((out / "config.json").read_text())["meta"]["history"][-1]
    assert run["rollout_loop"] == 2 and run["rollout_steps"] == 1200 and run["rollout_t_max"] == 0.05
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert "snapped" in logged[0]


@pytest.mark.parametrize("kw, message", [({"rollout_loop": -1}, "--rollout-loop counts the batches"),
                                         ({"rollout_loop": 2}, "give --rollout-share and --task finetune"),
                                         ({"rollout_loop": 2, "rollout_share": 0.5, "task": "pretrain"},
                                          "give --rollout-share and --task finetune"),
                                         ({"rollout_loop": 2, "rollout_share": 0.5, "rollout_steps": 4},
                                          "drop one")])
def test_bad_loop_settings_are_refused(tmp_path, kw, message):
    with pytest.raises(CodeFusionError, match=message):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, **kw))
