"""Each solver's fused update (★) against its naive textbook formula, step by step."""
import math

import pytest
import torch

from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table, update
from codefusion.errors import CodeFusionError


def _chain(steps):
    return NoiseSchedule.sqrt(1200).respace(steps)


def _abar(s, i):
    return s.alphas_cumprod[i].item(), s.alphas_cumprod_prev[i].item()


@pytest.mark.parametrize("steps", [1200, 50, 7, 1])
def test_ddpm_is_the_posterior_step(steps):
    s = _chain(steps)
    table = step_table(s, "ddpm")
    x_t, x0, z = torch.randn(3, 2, 5, dtype=torch.float64).unbind(0)
    for i in [0, len(s) // 2, len(s) - 1]:
        abar, prev = _abar(s, i)
        beta = 1 - abar / prev
        mean = (beta * math.sqrt(prev) / (1 - abar)) * x0 + ((1 - prev) * math.sqrt(1 - beta) / (1 - abar)) * x_t
        var = beta if i < len(s) - 1 else 0.0  # FIXED_LARGE, no noise on the last step
        naive = mean + math.sqrt(var) * z
        got = update(x_t.float(), x0.float(), torch.zeros(2, 5), table, i, z.float())
        torch.testing.assert_close(got, naive.float(), atol=1e-5, rtol=1e-5)


def test_ddpm_posterior_mean_interpolates_between_x0_and_xt():
    """Sanity of the full chain: at t = 0 the step returns x̂0 exactly."""
    table = step_table(_chain(1200), "ddpm")
    assert table.a[-1].item() == pytest.approx(1.0, abs=1e-6) and table.b[-1].item() == pytest.approx(0, abs=1e-6)
    assert table.sigma[-1] == 0


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_song_et_al_eq12(eta):
    s = _chain(20)
    table = step_table(s, "ddim", eta)
    x_t, x0, z = torch.randn(3, 4, 3, dtype=torch.float64).unbind(0)
    for i in range(len(s)):
        abar, prev = _abar(s, i)
        eps = (x_t - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
        sigma = eta * math.sqrt((1 - prev) / (1 - abar) * (1 - abar / prev))
        naive = math.sqrt(prev) * x0 + math.sqrt(max(1 - prev - sigma ** 2, 0)) * eps + sigma * z
        got = update(x_t.float(), x0.float(), torch.zeros(4, 3), table, i, z.float())
        torch.testing.assert_close(got, naive.float(), atol=1e-5, rtol=1e-5)


def test_ddim_eta1_variance_equals_ddpm_posterior_variance():
    s = _chain(20)
    ddim, ddpm = step_table(s, "ddim", 1.0), step_table(s, "ddpm")
    abar, prev = s.alphas_cumprod[:-1], s.alphas_cumprod_prev[:-1]
    posterior = (1 - prev) / (1 - abar) * (1 - abar / prev)
    torch.testing.assert_close(ddim.sigma[:-1] ** 2, posterior.float())
    assert (ddpm.sigma[:-1] ** 2 >= ddim.sigma[:-1] ** 2 - 1e-7).all()  # FIXED_LARGE ≥ posterior


def test_dpmpp_2m_matches_the_multistep_recursion():
    """Run Algorithm 2 of Lu et al. (2022) naively in λ and compare the whole trajectory."""
    s = _chain(12)
    table = step_table(s, "dpmpp_2m")
    torch.manual_seed(0)
    x0s = [torch.randn(6, dtype=torch.float64) for _ in range(len(s))]  # model outputs per step
    x = torch.randn(6, dtype=torch.float64)
    naive, ours, prev_x0, h_prev = x.clone(), x.float(), None, None
    for i in range(len(s)):
        abar, prev = _abar(s, i)
        if prev == 1.0:
            naive = x0s[i]
        else:
            lam = lambda a: 0.5 * math.log(a / (1 - a))  # noqa: E731
            h = lam(prev) - lam(abar)
            if prev_x0 is None:
                d = x0s[i]
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0s[i] - 1 / (2 * r) * prev_x0
            naive = math.sqrt((1 - prev) / (1 - abar)) * naive - math.sqrt(prev) * math.expm1(-h) * d
            h_prev = h
        ours = update(ours, x0s[i].float(), (x0s[i - 1] if i else torch.zeros(6)).float(), table, i,
                      torch.zeros(6))
        prev_x0 = x0s[i]
        torch.testing.assert_close(ours, naive.float(), atol=1e-4, rtol=1e-4)


def test_unknown_solver_is_rejected():
    with pytest.raises(CodeFusionError, match="unknown solver 'euler'"):
        step_table(_chain(5), "euler")


def test_nearest_embedding_rounds_to_rows_of_L(tiny_model):
    from codefusion.backends import get_backend
    backend = get_backend("reference")(tiny_model, torch.device("cpu"), torch.float32)
    emb = tiny_model.embed.weight.detach()
    ids = torch.tensor([[3, 7, 7, 11]])
    noisy = emb[ids] + 0.01 * torch.randn(1, 4, emb.shape[1], generator=torch.Generator().manual_seed(0))
    assert torch.equal(backend.nearest_embedding(noisy), emb[ids])
    x = torch.randn(2, 5, emb.shape[1], generator=torch.Generator().manual_seed(1))
    brute = torch.cdist(x.reshape(-1, emb.shape[1]), emb).argmin(dim=-1)  # the naive oracle
    assert torch.equal(backend.nearest_embedding(x).reshape(-1, emb.shape[1]), emb[brute])


def test_clamped_sampling_ends_on_embedding_rows(tiny_model, tokenizer):
    from codefusion.backends import get_backend
    from codefusion.diffusion.loop import initial_state, run
    backend = get_backend("reference")(tiny_model, torch.device("cpu"), torch.float32)
    memory = backend.encode(tokenizer.encode_source(["list files"], ["bash"], 16))
    emb = tiny_model.embed.weight.detach()
    for clamp in (True, False):
        table = step_table(NoiseSchedule.sqrt().respace(6), "ddpm", clamp=clamp)
        state = run(backend, initial_state(backend, memory, table, torch.tensor([0]), torch.tensor([0]), 16))
        on_rows = (torch.cdist(state.x_t[0], emb).min(dim=-1).values < 1e-5).all()
        assert bool(on_rows) is clamp  # the last step returns x̂0: clamped, it is made of rows of L


def test_decode_rounding_feeds_back_the_decoded_tokens(tiny_model, tokenizer):
    """clamp="decode": every step's x̂0 becomes L of the tokens D reads from the raw x̂0, so the final x (the
    last step returns x̂0) is made of rows of L; a bad clamp value is a one-line error."""
    from codefusion import CodeFusion, GenerationConfig
    from codefusion.backends import get_backend
    from codefusion.diffusion.loop import initial_state, run
    backend = get_backend("reference")(tiny_model, torch.device("cpu"), torch.float32)
    memory = backend.encode(tokenizer.encode_source(["list files", "sum x"], ["bash", "python"], 16))
    raw = torch.randn(2, 16, tiny_model.cfg.d_embed, generator=torch.Generator().manual_seed(3))
    ids, _ = backend.decode(raw, memory)
    torch.testing.assert_close(backend.round_x0(raw, memory, "decode"), tiny_model.embed.weight.detach()[ids])
    table = step_table(NoiseSchedule.sqrt().respace(5), "ddim", clamp="decode")
    assert table.clamp == "decode" and step_table(NoiseSchedule.sqrt(), clamp=True).clamp == "nearest"
    seeds = torch.tensor([0, 0])
    state = run(backend, initial_state(backend, memory, table, seeds, torch.tensor([0, 1]), 16))
    emb = tiny_model.embed.weight.detach()
    gap = (state.x_t[:, :, None, :] - emb).abs().amax(dim=-1).min(dim=-1).values  # (B, n): to the closest row
    assert float(gap.max()) < 1e-6
    cf = CodeFusion(tiny_model, tokenizer, "reference", "cpu", "float32")
    with pytest.raises(CodeFusionError, match="clamp must be one of none, nearest, decode"):
        cf.generate(["list files"], GenerationConfig(steps=2, clamp="round"))
