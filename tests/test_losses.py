"""Loss terms on a hand-computed tiny case: every network replaced by a known map."""
import dataclasses

import pytest
import torch
from torch import nn

from codefusion.config import get_preset
from codefusion.diffusion.losses import loss_terms
from codefusion.model import CodeFusionModel


class Const(nn.Module):
    """Returns a fixed tensor shaped like the input (the 'network' of the hand computation)."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, *args):
        return torch.full_like(x[..., : self.value.shape[-1]], 0) + self.value


@pytest.fixture
def model():
    cfg = dataclasses.replace(get_preset("tiny"), vocab_size=3, d_embed=2, max_target_len=16, length_buckets=(16,))
    m = CodeFusionModel(cfg)
    with torch.no_grad():
        m.embed.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]))
        m.head.bias.zero_()
    return m


def test_terms_by_hand(model):
    y = torch.tensor([[0, 1]])  # L(y) = [[1, 0], [0, 2]]
    model.denoiser = Const(torch.tensor([1.0, 1.0]))  # x̂0 ≡ (1, 1)
    model.decoder = Const(torch.tensor([0.0, 1.0]))  # D ≡ (0, 1)
    zeros = torch.zeros(1, 2, 2)
    abar = model.alphas_cumprod
    for t in (0, 500):
        terms = loss_terms(model, y, torch.zeros(1, 1, 64), None, torch.tensor([t]), zeros, zeros)
        # t = 0 and zero jitter: x0 = L(y); ‖x̂0 − L(y)‖² = mean of (0, 1, 1, 1) = 0.75 either way
        assert terms["mse"].item() == pytest.approx(0.75)
        # ‖D − L(y)‖² = mean of (1, 1, 0, 1) = 0.75
        assert terms["dec_mse"].item() == pytest.approx(0.75)
        # logits = D·Lᵀ = (0, 2, 4) at both positions; CE of tokens 0 and 1
        lse = torch.logsumexp(torch.tensor([0.0, 2.0, 4.0]), 0).item()
        assert terms["ce"].item() == pytest.approx(((lse - 0) + (lse - 2)) / 2, rel=1e-6)
        # prior: ᾱ_{T−1} · mean(L(y)²) = ᾱ_1199 · (1 + 0 + 0 + 4) / 4
        assert terms["prior"].item() == pytest.approx(abar[-1].item() * 1.25, rel=1e-5)
        total = terms["mse"] + terms["dec_mse"] + terms["ce"] + terms["prior"]
        assert terms["loss"].item() == pytest.approx(total.item())


def test_t0_anchor_uses_the_clean_embedding(model):
    """With jitter ε0, t > 0 targets the jittered x0, t = 0 the clean L(y)."""
    y = torch.tensor([[0, 1]])
    model.denoiser = Const(torch.tensor([1.0, 0.0]))
    model.decoder = Const(torch.tensor([0.0, 0.0]))
    eps0 = torch.ones(1, 2, 2)
    jitter = (1 - model.alphas_cumprod[0]).sqrt().item()
    clean = loss_terms(model, y, torch.zeros(1, 1, 64), None, torch.tensor([0]), torch.zeros(1, 2, 2), eps0)
    noisy = loss_terms(model, y, torch.zeros(1, 1, 64), None, torch.tensor([7]), torch.zeros(1, 2, 2), eps0)
    assert clean["mse"].item() == pytest.approx((0 + 0 + 1 + 4) / 4)
    expected = ((1 - 1 - jitter) ** 2 + (0 - jitter) ** 2 + (1 - jitter) ** 2 + (0 - 2 - jitter) ** 2) / 4
    assert noisy["mse"].item() == pytest.approx(expected, rel=1e-5)


def test_eps_prediction_target_is_the_noise():
    cfg = dataclasses.replace(get_preset("tiny"), vocab_size=3, d_embed=2, prediction="eps")
    m = CodeFusionModel(cfg)
    eps = torch.randn(1, 2, 2)
    m.denoiser = Const(torch.zeros(2))  # ε̂ ≡ 0
    terms = loss_terms(m, torch.tensor([[0, 1]]), torch.zeros(1, 1, 64), None, torch.tensor([300]), eps,
                       torch.zeros(1, 2, 2))
    assert terms["mse"].item() == pytest.approx(eps.pow(2).mean().item(), rel=1e-5)


def test_gradients_reach_every_part(tokenizer, tiny_model):
    m = CodeFusionModel(tiny_model.cfg)
    y = torch.randint(0, m.cfg.vocab_size, (2, 16))
    src = torch.randint(0, m.cfg.vocab_size, (2, 8))
    mem = m.encode(src, torch.ones(2, 8, dtype=torch.bool))
    loss_terms(m, y, mem, None, torch.tensor([3, 900]), torch.randn(2, 16, 16), torch.randn(2, 16, 16))["loss"].backward()
    for part in (m.encoder, m.denoiser, m.decoder, m.embed, m.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), part
