import dataclasses

import pytest
import torch

from codefusion.config import GenerationConfig, get_preset
from codefusion.errors import CodeFusionError
from codefusion.model import CodeFusionModel

PARAMS = {"paper": 75_650_020, "small": 14_060_288, "tiny": 266_912}


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
def test_preset_parameter_counts(name):
    with torch.device("meta"):
        model = CodeFusionModel(get_preset(name))
    assert model.num_parameters()["total"] == PARAMS[name]


def test_paper_preset_shape():
    cfg = get_preset("paper")
    assert (cfg.denoiser_layers, cfg.decoder_layers, cfg.enc_layers, cfg.enc_d_model, cfg.enc_heads) == (10, 6, 6, 512, 8)
    assert (cfg.vocab_size, cfg.enc_d_ff, cfg.diffusion_steps, cfg.max_target_len) == (32100, 2048, 1200, 128)


def test_presets_are_frozen_and_exact_name():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("tiny").d_model = 3
    with pytest.raises(CodeFusionError, match="unknown preset 'Tiny'"):
        get_preset("Tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        GenerationConfig().steps = 3


def test_shapes_at_any_bucket_length(tiny_model):
    m, cfg = tiny_model, tiny_model.cfg
    src = torch.randint(7, cfg.vocab_size, (3, 10))
    mem = m.encode(src, torch.ones(3, 10, dtype=torch.bool))
    assert mem.shape == (3, 10, cfg.enc_d_model)
    for n in cfg.length_buckets:
        x0 = m.predict_x0(torch.randn(3, n, cfg.d_embed), torch.tensor([0, 5, 1199]), mem, None)
        assert x0.shape == (3, n, cfg.d_embed)
        assert m.logits(m.decode(x0, mem, None)).shape == (3, n, cfg.vocab_size)


def test_key_padding_mask_hides_padding(tiny_model):
    m = tiny_model
    src = torch.randint(7, m.cfg.vocab_size, (1, 6))
    mask = torch.tensor([[True, True, True, False, False, False]])
    mem = m.encode(src, mask)
    garbage = mem.clone()
    garbage[:, 3:] = 1e3
    x = torch.randn(1, 16, m.cfg.d_embed)
    t = torch.tensor([10])
    torch.testing.assert_close(m.predict_x0(x, t, mem, mask), m.predict_x0(x, t, garbage, mask))


def test_eps_prediction_converts_to_x0():
    cfg = dataclasses.replace(get_preset("tiny"), prediction="eps")
    m = CodeFusionModel(cfg).eval()
    x_t, t, mem = torch.randn(2, 16, cfg.d_embed), torch.tensor([100, 700]), torch.randn(2, 4, cfg.enc_d_model)
    eps = m.denoiser(x_t, t, mem, None)
    abar = m.alphas_cumprod[t].view(-1, 1, 1)
    torch.testing.assert_close(m.predict_x0(x_t, t, mem, None), (x_t - (1 - abar).sqrt() * eps) / abar.sqrt())


def test_self_conditioning_input():
    cfg = dataclasses.replace(get_preset("tiny"), self_condition=True)
    m = CodeFusionModel(cfg).eval()
    x, t, mem = torch.randn(1, 16, cfg.d_embed), torch.tensor([5]), torch.randn(1, 4, cfg.enc_d_model)
    assert m.denoiser.inp.in_features == 2 * cfg.d_embed
    torch.testing.assert_close(m.predict_x0(x, t, mem, None), m.predict_x0(x, t, mem, None, torch.zeros_like(x)))
    assert not torch.allclose(m.predict_x0(x, t, mem, None), m.predict_x0(x, t, mem, None, torch.ones_like(x)))


def test_pooled_condition_reads_the_unpadded_request():
    """C(E_s) adds the same vector to every position; it reads only the unpadded source rows."""
    from conftest import pooled_model
    m = pooled_model(get_preset("tiny"))
    x, t = torch.randn(2, 8, m.cfg.d_embed), torch.tensor([1199, 1199])
    mem = torch.randn(2, 5, m.cfg.enc_d_model)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    cond = m.denoiser.cond(mem, mask)
    torch.testing.assert_close(cond[0], m.denoiser.cond.mlp(mem[0, :3].mean(0)))
    other = mem.clone()
    other[0, 3:] = 100.0  # padding rows changed: nothing moves
    torch.testing.assert_close(m.denoiser(x, t, mem, mask), m.denoiser(x, t, other, mask))
    assert not torch.allclose(m.denoiser(x, t, mem, mask), m.denoiser(x, t, mem.flip(0), mask.flip(0)))


def test_bucket_for():
    cfg = get_preset("paper")
    assert [cfg.bucket_for(n) for n in (1, 32, 33, 100, 128)] == [32, 32, 64, 128, 128]
