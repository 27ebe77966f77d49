"""Training on the sampler's own states (--rollout-share): the walk is Ho et al.'s ancestral step, its x_t
reaches the loss for exactly the rows asked, and a run records it."""
import json

import pytest
import torch

from codefusion.diffusion.losses import loss_terms
from codefusion.errors import CodeFusionError
from codefusion.train.config import TrainConfig
from codefusion.train.rollout import OwnRows, own_x_t, rollout_table
from codefusion.train.trainer import train

from conftest import PAIRS, Recorder, write_data


def test_rollout_table_walks_from_pure_noise_to_the_rows_t():
    table = rollout_table(1200, 300, 4)
    assert table.timesteps.tolist()[0] == 1199 and table.timesteps.tolist()[-1] == 300 and len(table) == 5
    assert len(rollout_table(1200, 1197, 8)) == 3  # 1199, 1198, 1197: repeats merged
    assert len(rollout_table(1200, 1199, 8)) == 1  # nothing to walk: x_{T−1} is the noise itself


def test_own_x_t_is_the_ancestral_sampler_by_hand(tiny_model):
    """Each step μ = β √ᾱ_prev/(1−ᾱ) x̂0 + (1−ᾱ_prev) √(1−β)/(1−ᾱ) x_t, σ = √β (Ho et al. eq. 6–7), with x̂0
    self-conditioned on the previous step's, as the engine's loop does."""
    model = tiny_model
    B, n, d = 3, 16, model.cfg.d_embed
    mem = torch.randn(B, 5, model.cfg.enc_d_model, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, 5, dtype=torch.bool)
    got = own_x_t(model, mem, mask, 400, 3, (B, n, d), generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    abar = model.alphas_cumprod.double()
    x = torch.randn(B, n, d, generator=g)
    x0_prev = torch.zeros_like(x)
    kept = rollout_table(1200, 400, 3).timesteps.tolist()
    assert kept == [1199, 933, 666, 400]
    with torch.no_grad():
        for s, s_next in zip(kept, kept[1:]):
            x0 = model.predict_x0(x, torch.full((B,), s), mem, mask, x0_prev)
            ab, ab_prev = abar[s], abar[s_next]
            beta = 1 - ab / ab_prev
            mean = beta * ab_prev.sqrt() / (1 - ab) * x0 + (1 - ab_prev) * (1 - beta).sqrt() / (1 - ab) * x
            x = (mean + beta.sqrt() * torch.randn(B, n, d, generator=g)).float()
            x0_prev = x0
    torch.testing.assert_close(got, x, atol=2e-5, rtol=1e-5)
    assert not model.denoiser.training


def test_own_x_t_turns_dropout_off_for_the_walk_and_back_on(tiny_model):
    model = tiny_model.train()
    try:
        mem = torch.randn(2, 5, model.cfg.enc_d_model)
        a = own_x_t(model, mem, None, 600, 2, (2, 16, model.cfg.d_embed), torch.Generator().manual_seed(0))
        b = own_x_t(model, mem, None, 600, 2, (2, 16, model.cfg.d_embed), torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and model.denoiser.training  # no dropout in the walk: the same noise, the same x_t
    finally:
        model.eval()


def test_loss_uses_the_own_x_t_for_those_rows_only(tiny_model):
    model = tiny_model
    real = model.denoiser
    model.denoiser = Recorder()
    try:
        y = torch.randint(0, model.cfg.vocab_size, (3, 16))
        mem, t = torch.randn(3, 5, model.cfg.enc_d_model), torch.tensor([100, 100, 700])
        eps, eps0 = torch.randn(3, 16, model.cfg.d_embed), torch.zeros(3, 16, model.cfg.d_embed)
        plain = loss_terms(model, y, mem, None, t, eps, eps0)
        q = model.denoiser.seen
        x_own = torch.full_like(q, 5.0)
        rows = torch.tensor([True, False, False])
        mixed = loss_terms(model, y, mem, None, t, eps, eps0, own=OwnRows(rows, x_own, None))
        assert torch.equal(model.denoiser.seen[0], x_own[0]) and torch.equal(model.denoiser.seen[1:], q[1:])
        # the x0-prediction target is the program either way: a zero x̂0 costs the same
        assert torch.equal(mixed["mse"], plain["mse"])
        none = loss_terms(model, y, mem, None, t, eps, eps0, own=OwnRows(torch.zeros(3, dtype=torch.bool), x_own, None))
        assert all(torch.equal(none[k], plain[k]) for k in plain)
    finally:
        model.denoiser = real


def test_a_run_with_rollout_trains_and_records_it(tmp_path):
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run"), max_steps=3, batch_size=4,
                            dev_rows=0, dtype="float32", warmup=1, rollout_share=0.5, rollout_steps=2))
    run = json.loads((out / "config.json").read_text())["meta"]["history"][-1]
    assert run["rollout_share"] == 0.5 and run["rollout_steps"] == 2 and run["steps"] == 3


def test_rollout_t_max_ends_the_walk_near_the_loops_end_for_those_rows_only(tiny_model):
    from codefusion.train.rollout import own_rows
    model = tiny_model
    mem = torch.randn(8, 5, model.cfg.enc_d_model)
    torch.manual_seed(0)
    ends = []
    for _ in range(40):
        t = torch.full((8,), 1000)
        rows = own_rows(model, mem, None, t, (8, 16, model.cfg.d_embed), 0.5, 1, t_max=0.25).rows
        assert rows.tolist() == [True] * 4 + [False] * 4
        assert t[1:4].eq(t[0]).all() and t[4:].eq(1000).all()  # one walk for the rollout rows, the rest untouched
        ends.append(int(t[0]))
    assert max(ends) < 300 and len(set(ends)) > 20  # drawn afresh from [0, 0.25·T)
    t = torch.full((8,), 1000)
    own_rows(model, mem, None, t, (8, 16, model.cfg.d_embed), 0.5, 1)
    assert t.eq(1000).all()  # default: the batch's own t


def test_a_run_records_rollout_t_max(tmp_path):
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run"), max_steps=2, batch_size=4,
                            dev_rows=0, dtype="float32", warmup=1, rollout_share=0.5, rollout_steps=2,
                            rollout_t_max=0.3))
    run = json.loads((out / "config.json").read_text())["meta"]["history"][-1]
    assert run["rollout_t_max"] == 0.3


@pytest.mark.parametrize("kw, message", [({"rollout_share": 1.5}, "--rollout-share is a share"),
                                         ({"rollout_steps": 0}, "--rollout-steps counts sampler steps"),
                                         ({"rollout_share": 0.5, "rollout_t_max": 0.0},
                                          "--rollout-t-max is a fraction"),
                                         ({"rollout_t_max": 0.5}, "give --rollout-share too")])
def test_bad_rollout_settings_are_refused(tmp_path, kw, message):
    with pytest.raises(CodeFusionError, match=message):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, **kw))
