"""The `torch` backend against `reference` on the same weights and seeds: x̂0 step by step, final tokens,
batch ≡ singles, graph safety (meta tensors), and the reference model left untouched."""
import pytest
import torch

from codefusion import CodeFusion, GenerationConfig
from codefusion.backends import get_backend
from codefusion.backends.fast_stack import FastMemory
from codefusion.diffusion.loop import initial_state, run
from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table
from codefusion.errors import CodeFusionError
from codefusion.model import CodeFusionModel
from conftest import pooled_model

CPU = torch.device("cpu")


def _pair(model, dtype=torch.float32):
    ref = get_backend("reference")(model, CPU, torch.float32)
    fast = get_backend("torch")(model, CPU, dtype)
    return ref, fast


def _variant(tiny_model, self_condition: bool, prediction: str, pooled: bool = False):
    """The tiny preset with self-conditioning, eps-prediction and/or the pooled condition."""
    import dataclasses
    cfg = dataclasses.replace(tiny_model.cfg, self_condition=self_condition, prediction=prediction)
    if pooled:
        return pooled_model(cfg)
    torch.manual_seed(1)
    return CodeFusionModel(cfg).eval()


@pytest.mark.parametrize("solver", ["ddpm", "ddim", "dpmpp_2m"])
@pytest.mark.parametrize("self_condition,prediction,pooled",
                         [(False, "x0", False), (True, "x0", False), (True, "eps", False), (True, "x0", True)])
def test_x0_matches_reference_every_step_fp32(tiny_model, tokenizer, solver, self_condition, prediction, pooled):
    ref, fast = _pair(_variant(tiny_model, self_condition, prediction, pooled))
    # padded to 32: `torch` trims its source to 16 (the reference keeps 32), so this also checks the trim
    src = tokenizer.encode_source(["list all files", "sum a list x"], ["bash", "python"], 32)
    table = step_table(NoiseSchedule.sqrt().respace(12), solver)
    seeds, samples = torch.tensor([3, 3]), torch.tensor([0, 1])
    a = initial_state(ref, ref.encode(src), table, seeds, samples, 16)
    b = initial_state(fast, fast.encode(src), table, seeds, samples, 16)
    worst = 0.0
    for i in range(len(table)):
        a, b = ref.step(a, i), fast.step(b, i)
        # relative to max(1, |x̂0|): an untrained eps-model's x̂0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ reaches 1e3 near t = T
        size = max(1.0, float(a.x0_hat.abs().max()))
        worst = max(worst, float((a.x0_hat - b.x0_hat).abs().max()) / size)
    assert worst <= 1e-5, f"max |Δx̂0| / max(1, |x̂0|) = {worst:.3g}"
    ids_a, logp_a = ref.decode(a.x_t, a.memory)
    ids_b, logp_b = fast.decode(b.x_t, b.memory)
    assert torch.equal(ids_a, ids_b)
    torch.testing.assert_close(logp_a, logp_b, atol=1e-5, rtol=1e-5)


def test_fp32_takes_the_reference_arithmetic(tiny_model, tokenizer):
    """In fp32 the engine runs the reference's own attention (``attend``, not SDPA) and its torch noise and
    update (not the fused C++ step), so its only rounding difference left is the time table: the
    reference evaluates the time MLP on B rows each step, the table on all T at load, and a GEMM's rows can
    round differently at different M. With the table's rows taken from the reference's own evaluation, 12
    steps agree to about an ulp (bit for bit on the development machine; SDPA and the C++ step made it 7e-7).
    Only in fp32 on CPU: the export and compile backends keep SDPA."""
    model = _variant(tiny_model, True, "x0")
    ref, fast = _pair(model)
    src = tokenizer.encode_source(["list all files", "sum a list x"], ["bash", "python"], 32)
    table = step_table(NoiseSchedule.sqrt().respace(12), "ddpm")
    seeds, samples = torch.tensor([3, 3]), torch.tensor([0, 1])
    with torch.inference_mode():
        for t in table.timesteps.tolist():
            fast.denoiser.time_table[t] = model.denoiser.time(torch.full((2,), t))[0]
    a = initial_state(ref, ref.encode(src), table, seeds, samples, 16)
    b = initial_state(fast, fast.encode(src), table, seeds, samples, 16)
    for i in range(len(table)):
        a, b = ref.step(a, i), fast.step(b, i)
        for x, y in ((a.x0_hat, b.x0_hat), (a.x_t, b.x_t)):  # within 1e-7 of max(1, |x|): about one ulp
            assert float((x - y).abs().max()) <= 1e-7 * max(1.0, float(x.abs().max())), f"step {i}"


def test_reference_attention_only_where_parity_is_claimed(tiny_model):
    """fp32 `torch` on CPU runs the written-out attention; bf16, `torch-compile` and the ONNX export graphs keep
    SDPA (the exporter maps it to the opset's attention; an fp16 export must not square unscaled scores)."""
    import torch.nn.functional as F
    from codefusion.export.graphs import build_graphs
    from codefusion.model.layers import attend
    attention = lambda blocks: {b.attend for b in blocks}  # noqa: E731
    assert attention(get_backend("torch")(tiny_model, CPU, torch.float32).denoiser.blocks) == {attend}
    assert attention(get_backend("torch")(tiny_model, CPU, torch.bfloat16).denoiser.blocks) == {
        F.scaled_dot_product_attention}
    assert get_backend("torch-compile")(tiny_model, CPU, torch.float32).exact is False
    graphs = build_graphs(tiny_model, torch.float16)
    assert attention(graphs["denoiser"].stack.blocks) == {F.scaled_dot_product_attention}


def test_packed_linear_reproduces_linear_in_bf16():
    from torch import nn
    from codefusion.backends.fast_stack import PackedLinear, _packing_works
    if not _packing_works():
        pytest.skip("this torch build has no oneDNN packed linear")
    torch.manual_seed(0)
    lin = nn.Linear(64, 96).to(torch.bfloat16)
    packed, with_gelu = PackedLinear(lin), PackedLinear(lin, "gelu")
    for shape in ((1, 64), (7, 64), (3, 5, 64)):
        x = torch.randn(shape, dtype=torch.bfloat16)
        assert torch.equal(packed(x), torch.nn.functional.linear(x, lin.weight, lin.bias))
        # GELU applied before the bf16 rounding: within one bf16 ulp of GELU(linear)
        ref = torch.nn.functional.gelu(torch.nn.functional.linear(x, lin.weight, lin.bias)).float()
        assert (with_gelu(x).float() - ref).abs().max() <= 2 ** -7 * ref.abs().max()


def test_bf16_backend_packs_its_step_linears_and_keeps_its_results(tiny_model, tokenizer):
    """`torch` bf16 on CPU swaps the step's linears for PackedLinear; x̂0 stays within bf16 noise of the
    unpacked backend and the tokens agree."""
    from codefusion.backends.fast import TorchBackend
    from codefusion.backends.fast_stack import PackedLinear, _packing_works
    if not _packing_works():
        pytest.skip("this torch build has no oneDNN packed linear")

    class Unpacked(TorchBackend):
        eager_stacks = False  # as a subclass with its own stacks: no packing

    model = pooled_model(tiny_model.cfg)
    packed, plain = TorchBackend(model, CPU, torch.bfloat16), Unpacked(model, CPU, torch.bfloat16)
    assert isinstance(packed.denoiser.blocks[0].qkv, PackedLinear) and isinstance(packed.decoder.out, PackedLinear)
    assert not isinstance(plain.denoiser.blocks[0].qkv, PackedLinear)
    assert not isinstance(get_backend("torch")(model, CPU, torch.float32).denoiser.blocks[0].qkv, PackedLinear)
    src = tokenizer.encode_source(["list all files", "sum a list x"], ["bash", "python"], 32)
    table = step_table(NoiseSchedule.sqrt().respace(8), "ddpm")
    seeds, samples = torch.tensor([3, 3]), torch.tensor([0, 1])
    a = run(packed, initial_state(packed, packed.encode(src), table, seeds, samples, 16))
    b = run(plain, initial_state(plain, plain.encode(src), table, seeds, samples, 16))
    assert float((a.x0_hat - b.x0_hat).abs().max()) <= 0.02 * float(b.x0_hat.abs().max())  # measured 0.6%
    assert torch.equal(packed.decode(a.x_t, a.memory)[0], plain.decode(b.x_t, b.memory)[0])


def test_source_is_trimmed_to_a_power_of_two_above_the_longest_prompt(tiny_model, tokenizer):
    fast = get_backend("torch")(tiny_model, CPU, torch.float32)
    for words, width in ((3, 16), (20, 32), (200, 32)):  # 200 words are cut to the preset's 32 tokens
        src = tokenizer.encode_source(["list files", " ".join(["files"] * words)], ["bash"] * 2, 32)
        assert fast.encode(src).states.shape[1] == width and fast.trim(src).mask.sum() == src.mask.sum()
    fast.graphs = object()  # with CUDA graphs the width stays as captured
    assert fast.encode(src).states.shape[1] == 32


def _group_states(backend, tokenizer, table):
    """Three groups of a batch: 2 rows at 16 tokens, 1 at 32, 3 at 16 (other prompts, seeds)."""
    groups = [(["list all files", "sum a list x"], [3, 3], [0, 1], 16), (["count lines in a.txt"], [7], [0], 32),
              (["show disk usage", "pwd", "print the date"], [1, 2, 2], [0, 0, 1], 16)]
    return [initial_state(backend, backend.encode(tokenizer.encode_source(p, ["bash"] * len(p), 32)), table,
                          torch.tensor(seeds), torch.tensor(samples), n) for p, seeds, samples, n in groups]


@pytest.mark.parametrize("solver,clamp", [("ddpm", "none"), ("dpmpp_2m", "none"), ("ddim", "decode")])
def test_run_groups_equals_each_group_alone(tiny_model, tokenizer, solver, clamp):
    """One pass per step over every group (shared matrix products, attention per group) gives each group's
    own loop: x_t and x̂0 within 1e-5, the same tokens."""
    fast = get_backend("torch")(pooled_model(tiny_model.cfg), CPU, torch.float32)
    table = step_table(NoiseSchedule.sqrt().respace(8), solver, clamp=clamp)
    together = fast.run_groups(_group_states(fast, tokenizer, table), 0, len(table))
    alone = [run(fast, s) for s in _group_states(fast, tokenizer, table)]
    for a, b in zip(together, alone):
        assert a.x_t.shape == b.x_t.shape
        torch.testing.assert_close(a.x_t, b.x_t, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.x0_hat, b.x0_hat, atol=1e-5, rtol=1e-5)
        assert torch.equal(fast.decode(a.x_t, a.memory)[0], fast.decode(b.x_t, b.memory)[0])
    assert not torch.allclose(together[0].x_t[:1, :16], together[2].x_t[:1, :16])  # the groups did not mix


def test_run_groups_needs_one_step_table(tiny_model, tokenizer):
    fast = get_backend("torch")(tiny_model, CPU, torch.float32)
    states = _group_states(fast, tokenizer, step_table(NoiseSchedule.sqrt().respace(8), "ddpm"))
    states[1] = initial_state(fast, states[1].memory, step_table(NoiseSchedule.sqrt().respace(6), "ddpm"),
                              states[1].seeds, states[1].samples, 32)
    with pytest.raises(CodeFusionError, match="the same kept timesteps in every group"):
        fast.run_groups(states, 0, 6)


def test_generate_agrees_with_reference_fp32(tiny_model, tokenizer):
    prompts = ["list all files", "find txt files", "count lines in a.txt"]
    config = GenerationConfig(steps=30, num_samples=2, seed=4)
    ref = CodeFusion(tiny_model, tokenizer, "reference").generate(prompts, config)
    fp32 = CodeFusion(tiny_model, tokenizer, "torch").generate(prompts, config)
    assert fp32.texts == ref.texts and fp32.samples == ref.samples


def test_bf16_stays_close_to_the_fp32_reference(tiny_model, tokenizer):
    """bf16 networks, fp32 state: per-step |Δx̂0| bounded (bf16 has 8 mantissa bits; the tiny model's x̂0
    are O(1)), final tokens mostly equal. The trained-model figure comes from `bench parity`."""
    from codefusion.bench.parity import parity
    (row,) = parity(tiny_model, tokenizer, ["list all files", "find txt files", "sum a list x"], "bash", ["torch"],
                    ["bfloat16"], steps=12, progress=False)
    assert row["max_abs_err"] < 0.1 and row["token_agreement"] >= 0.9, row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_read_tokens_takes_the_first_of_tied_logits(dtype):
    from codefusion.backends.base import read_tokens
    logits = torch.tensor([[[1.0, 3.0, 3.0, 0.0], [0.5, -1.0, 2.0, 2.0]]], dtype=dtype)
    ids, logp = read_tokens(logits)
    assert ids.tolist() == [[1, 2]] and logp.dtype == torch.float32
    expected = torch.log_softmax(logits.float(), dim=-1)[0, [0, 1], [1, 2]]
    assert torch.equal(logp[0], expected)


@pytest.mark.parametrize("backend,dtype,head_rows", [("reference", torch.float32, None),
                                                     ("torch", torch.float32, 512), ("torch", torch.bfloat16, 512),
                                                     ("torch", torch.float32, 5), ("torch", torch.bfloat16, 7)])
def test_decode_ids_are_the_ids_decode_reads(tiny_model, tokenizer, backend, dtype, head_rows, monkeypatch):
    """The "decode" clamp reads ``decode_ids`` every step (no softmax; on CPU the head in blocks of positions,
    here also blocks that do not divide the 32 rows); it must pick what ``decode`` picks."""
    if head_rows:
        monkeypatch.setattr("codefusion.backends.fast.HEAD_ROWS", head_rows)
    be = get_backend(backend)(tiny_model, CPU, dtype)
    memory = be.encode(tokenizer.encode_source(["list all files", "sum a list x"], ["bash"] * 2, 32))
    x0 = torch.randn(2, 16, tiny_model.cfg.d_embed, generator=torch.Generator().manual_seed(0))
    assert torch.equal(be.decode_ids(x0, memory), be.decode(x0, memory)[0])


def test_reference_model_is_left_untouched(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    get_backend("torch")(tiny_model, CPU, torch.bfloat16)
    after = tiny_model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(before[k], after[k]) for k in before)


def test_memory_repeat_keeps_the_cache_aligned(tiny_model, tokenizer):
    fast = get_backend("torch")(tiny_model, CPU, torch.float32)
    mem = fast.encode(tokenizer.encode_source(["a", "b c"], ["bash", "bash"], 16)).repeat_interleave(3)
    assert isinstance(mem, FastMemory) and mem.states.shape[0] == 6 and mem.attn_mask.shape[0] == 6
    assert all(k.shape[0] == 6 and v.shape[0] == 6 for k, v in mem.kv)
    assert torch.equal(mem.kv[0][0][0], mem.kv[0][0][2]) and not torch.equal(mem.kv[0][0][2], mem.kv[0][0][3])


def test_loop_runs_on_meta_tensors(tiny_model):
    """No host sync anywhere in the loop: every step runs on `meta` tensors, where a sync raises."""
    from conftest import meta_fast_backend
    B = 4
    fast, memory, meta = meta_fast_backend("torch", tiny_model.cfg, B)
    cfg = tiny_model.cfg
    for solver, clamp in (("ddpm", False), ("ddim", True), ("dpmpp_2m", False)):
        table = step_table(NoiseSchedule.sqrt(1200, meta).respace(6), solver, clamp=clamp)
        seeds = torch.zeros(B, dtype=torch.int64, device=meta)
        state = run(fast, initial_state(fast, memory, table, seeds, seeds.clone(), 16))
        assert state.x_t.device == meta and state.x_t.shape == (B, 16, cfg.d_embed)


def test_fp16_on_cpu_is_refused(tiny_model):
    with pytest.raises(CodeFusionError, match="float16 runs on GPU only"):
        get_backend("torch")(tiny_model, CPU, torch.float16)


def test_early_exit_stops_once_tokens_settle(overfit_dir):
    """On a model that knows its 8 programs, tokens settle long before step 400 of 400; the answer
    is the one the full run gives, and timings report the steps actually run."""
    from conftest import PAIRS
    cf = CodeFusion.from_pretrained(overfit_dir, backend="torch")
    prompts = [nl for nl, _ in PAIRS["nl2bash"][:3]]
    full = cf.generate(prompts, GenerationConfig(steps=400))
    early = cf.generate(prompts, GenerationConfig(steps=400, early_exit=True))
    assert early.timings["steps"] < 400 and early.timings["steps"] % 20 == 0  # whole chunks of K/20 steps
    assert early.texts == full.texts


def test_early_exit_errors():
    from codefusion.validate import check_config
    from codefusion.config import get_preset
    with pytest.raises(CodeFusionError, match="'reference' backend"):
        check_config(GenerationConfig(early_exit=True), get_preset("tiny"), "reference")
    with pytest.raises(CodeFusionError, match="cannot be combined"):
        check_config(GenerationConfig(early_exit=True, steps=10, trace_steps=(5,)), get_preset("tiny"), "torch")


def test_compiled_backend_matches_torch_and_compiles_once_per_shape(tiny_model, tokenizer):
    """`torch-compile` (Inductor with frozen weights) gives the `torch` backend's x̂0 step by step and its
    tokens, and a second request of the same shape replays the compiled graphs instead of recompiling."""
    from torch._dynamo.utils import counters
    fast = get_backend("torch")(tiny_model, CPU, torch.float32)
    compiled = get_backend("torch-compile")(tiny_model, CPU, torch.float32)
    table = step_table(NoiseSchedule.sqrt().respace(6), "ddpm")
    seeds, samples = torch.tensor([3, 3]), torch.tensor([0, 1])
    for prompts in (["list all files", "sum a list x"], ["count lines", "print the date"]):
        src = tokenizer.encode_source(prompts, ["bash", "python"], 16)
        a = initial_state(fast, fast.encode(src), table, seeds, samples, 16)
        b = initial_state(compiled, compiled.encode(src), table, seeds, samples, 16)
        for i in range(len(table)):
            a, b = fast.step(a, i), compiled.step(b, i)
            torch.testing.assert_close(b.x0_hat, a.x0_hat, atol=1e-5, rtol=1e-5)
        assert torch.equal(fast.decode(a.x_t, a.memory)[0], compiled.decode(b.x_t, b.memory)[0])
        if prompts[0] == "list all files":
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs


def test_compiled_backend_lifts_dynamos_recompile_limit(tiny_model):
    """The denoiser and decoder share FastStack.forward, whose compilations Dynamo caps at recompile_limit (8):
    past 4 shapes each a server ran uncompiled, silently. The backend lifts the cap (never lowers it)."""
    import torch._dynamo.config as dynamo
    before = dynamo.recompile_limit, dynamo.accumulated_recompile_limit
    try:
        dynamo.recompile_limit, dynamo.accumulated_recompile_limit = 8, 256
        backend = get_backend("torch-compile")
        backend(tiny_model, CPU, torch.float32)
        assert dynamo.recompile_limit == backend.RECOMPILE_LIMIT >= 64
        assert dynamo.accumulated_recompile_limit >= 2 * backend.RECOMPILE_LIMIT
        dynamo.recompile_limit = 1000
        backend(tiny_model, CPU, torch.float32)
        assert dynamo.recompile_limit == 1000
    finally:
        dynamo.recompile_limit, dynamo.accumulated_recompile_limit = before


def test_logits_are_what_decode_reads(tiny_model, tokenizer):
    """``logits(x0, memory)`` is public (the parity bench reads its top-2 margins): callable as decode is, outside
    inference mode, and its argmax is decode's ids."""
    src = tokenizer.encode_source(["list all files"], ["bash"], 32)
    x0 = torch.randn(1, 8, tiny_model.cfg.d_embed, generator=torch.Generator().manual_seed(0))
    for name in ("reference", "torch"):
        backend = get_backend(name)(tiny_model, torch.device("cpu"), torch.float32)
        memory = backend.encode(src)
        logits = backend.logits(x0, memory)
        assert logits.shape == (1, 8, tiny_model.cfg.vocab_size)
        assert torch.equal(logits.argmax(-1), backend.decode(x0, memory)[0])
