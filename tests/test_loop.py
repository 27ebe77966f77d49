"""The sampling loop is graph-safe: it runs on `meta` tensors, where any host sync (.item(),
.tolist(), a data-dependent branch on a tensor) raises, so a CUDA graph can capture it."""
import torch

from codefusion.backends import get_backend
from codefusion.backends.base import Memory
from codefusion.diffusion.loop import initial_state, run
from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table
from codefusion.model import CodeFusionModel


def _meta_backend(cfg, batch: int):
    """The reference backend and an encoded memory of ``batch`` rows, all on `meta` (any host sync raises)."""
    meta = torch.device("meta")
    with meta:
        model = CodeFusionModel(cfg)
    backend = get_backend("reference")(model, meta, torch.float32)
    mask = torch.ones(batch, 9, dtype=torch.bool, device=meta)
    return backend, Memory(torch.empty(batch, 9, cfg.enc_d_model, device=meta), mask), meta


def test_loop_runs_on_meta_tensors(tiny_model):
    backend, memory, meta = _meta_backend(tiny_model.cfg, 4)
    cfg = tiny_model.cfg
    for solver in ("ddpm", "ddim", "dpmpp_2m"):
        table = step_table(NoiseSchedule.sqrt(1200, meta).respace(6), solver)
        seeds = torch.zeros(4, dtype=torch.int64, device=meta)
        state = run(backend, initial_state(backend, memory, table, seeds, seeds.clone(), 16))
        assert state.x_t.device == meta and state.x_t.shape == (4, 16, cfg.d_embed)
        assert state.x_t.dtype == torch.float32


def test_step_index_may_be_a_device_tensor(tiny_model, tokenizer):
    """A captured k-step graph keeps its step counter on the device: step(state, tensor(i)) ≡ step(state, i)."""
    backend = get_backend("reference")(tiny_model, torch.device("cpu"), torch.float32)
    src = tokenizer.encode_source(["list files"], ["bash"], 16)
    memory = backend.encode(src)
    table = step_table(NoiseSchedule.sqrt().respace(5), "dpmpp_2m")
    state = initial_state(backend, memory, table, torch.tensor([3]), torch.tensor([0]), 16)
    a, b = state, state
    for i in range(5):
        a, b = backend.step(a, i), backend.step(b, torch.tensor(i))
    torch.testing.assert_close(a.x_t, b.x_t, atol=0, rtol=0)


def test_a_device_tensor_step_index_never_syncs(tiny_model):
    """A captured k-step graph keeps its counter on the device: step(state, i) with i a `meta` tensor
    must not call .item() anywhere (timesteps, solver coefficients, noise)."""
    backend, memory, meta = _meta_backend(tiny_model.cfg, 2)
    cfg = tiny_model.cfg
    table = step_table(NoiseSchedule.sqrt(1200, meta).respace(4), "dpmpp_2m")
    seeds = torch.zeros(2, dtype=torch.int64, device=meta)
    state = initial_state(backend, memory, table, seeds, seeds.clone(), 16)
    for i in range(4):
        state = backend.step(state, torch.tensor(i, device=meta))
    assert state.x_t.shape == (2, 16, cfg.d_embed) and state.x_t.device == meta
