import pytest
import torch

from codefusion.diffusion.schedule import NoiseSchedule, sqrt_alphas_cumprod_table
from codefusion.errors import CodeFusionError

GOLDEN = {0: "0.97924", 99: "0.71834", 599: "0.29578", 1198: "3.70e-4", 1199: "3.70e-7"}  # DESIGN §2, T = 1200


@pytest.mark.parametrize("t,value", GOLDEN.items())
def test_sqrt_schedule_golden_values(t, value):
    """Equal to the golden value at the precision it is quoted with."""
    digits = len(value.split("e")[0].replace("0.", "", 1).lstrip("0").replace(".", ""))
    abar = sqrt_alphas_cumprod_table(1200)[t].item()
    assert float(f"{abar:.{digits}g}") == float(value)


def test_table_is_decreasing_and_positive():
    abar = sqrt_alphas_cumprod_table(1200)
    assert abar.dtype == torch.float64 and (abar > 0).all() and (abar.diff() < 0).all()


def test_full_respace_is_the_full_schedule():
    full = NoiseSchedule.sqrt(1200)
    same = full.respace(1200)
    assert torch.equal(same.timesteps, full.timesteps)
    assert torch.allclose(same.alphas_cumprod_prev, full.alphas_cumprod_prev)
    assert torch.equal(full.timesteps[:3], torch.tensor([1199, 1198, 1197]))
    assert full.alphas_cumprod_prev[-1] == 1.0


@pytest.mark.parametrize("steps", [1, 2, 5, 50, 999, 1200])
@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_respace_keeps_endpoints(steps, spacing):
    s = NoiseSchedule.sqrt(1200).respace(steps, spacing)
    assert len(s) == steps and s.timesteps[0] == 1199 and (steps == 1 or s.timesteps[-1] == 0)
    assert (s.timesteps.diff() < 0).all()
    table = sqrt_alphas_cumprod_table(1200)
    assert torch.equal(s.alphas_cumprod, table[s.timesteps])
    assert torch.equal(s.alphas_cumprod_prev[:-1], s.alphas_cumprod[1:])


@pytest.mark.parametrize("steps", [0, 1201, -3, 2.5])
def test_respace_rejects_bad_step_counts(steps):
    with pytest.raises(CodeFusionError, match="steps must be an integer in 1..1200"):
        NoiseSchedule.sqrt(1200).respace(steps)


def test_q_sample_matches_formula():
    s = NoiseSchedule.sqrt(1200)
    x0, eps = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    t = torch.tensor([0, 599, 1199])
    abar = sqrt_alphas_cumprod_table(1200)[t].float().view(3, 1, 1)
    assert torch.allclose(s.q_sample(x0, t, eps), abar.sqrt() * x0 + (1 - abar).sqrt() * eps)


def test_the_cached_table_is_on_the_cpu_whatever_the_default_device():
    """First built under a meta (or cuda) default device, the cached table used to stay there and break every
    later schedule in the process."""
    sqrt_alphas_cumprod_table.cache_clear()
    try:
        with torch.device("meta"):
            table = sqrt_alphas_cumprod_table(1200)
        assert table.device.type == "cpu"
        assert len(NoiseSchedule.sqrt(1200).respace(10).timesteps) == 10
    finally:
        sqrt_alphas_cumprod_table.cache_clear()
