"""The API and the `generate` CLI on a tiny random model: determinism, batch ≡ singles, bad input."""
import json
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codefusion import CodeFusion, GenerationConfig
from codefusion.backends import available, get_backend
from codefusion.checkpoint import save_checkpoint
from codefusion.cli import main
from codefusion.errors import CodeFusionError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["torch", "reference"])
def cf(request, tiny_model, tokenizer):
    """The API on the default backend and on the oracle."""
    return CodeFusion(tiny_model, tokenizer, request.param)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model, tokenizer):
    return save_checkpoint(tmp_path_factory.mktemp("ck"), tiny_model, tokenizer)


def test_output_shape_and_timings(cf):
    out = cf.generate(["list files", "sum a list"], GenerationConfig(steps=8, num_samples=3, seed=1))
    assert len(out.texts) == len(out.scores) == 2 and out.seed == 1
    for texts, scores in zip(out.texts, out.scores):
        assert 1 <= len(texts) <= 3 and len(set(texts)) == len(texts) and scores == sorted(scores, reverse=True)
    assert out.timings["steps"] == 8 and out.timings["total_ms"] >= out.timings["sample_ms"] > 0
    assert set(json.loads(json.dumps(out.to_json()))) == {"texts", "scores", "seed", "warnings", "timings", "trace", "samples"}
    assert [len(s) for s in out.samples] == [3, 3] and all(set(t) == set(s) for t, s in zip(out.texts, out.samples))


def test_seeded_determinism(cf):
    config = GenerationConfig(steps=6, num_samples=2, seed=5)
    a, b = cf.generate(["find txt files"], config), cf.generate(["find txt files"], config)
    assert a.texts == b.texts and a.scores == b.scores


def _final_x(cf, prompts, config, n=None):
    """The sampled x̂0 rows of a request (to compare numbers, not only strings)."""
    from codefusion.diffusion.loop import initial_state, run
    from codefusion.diffusion.schedule import NoiseSchedule
    from codefusion.diffusion.solvers import step_table

    k = config.num_samples
    src = cf.tokenizer.encode_source(prompts, [config.lang] * len(prompts), cf.cfg.max_source_len)
    memory = cf.backend.encode(src).repeat_interleave(k)
    table = step_table(NoiseSchedule.sqrt().respace(config.steps), config.solver)
    seeds = torch.full((len(prompts) * k,), config.seed)
    samples = torch.arange(k).repeat(len(prompts))
    n = n or cf.cfg.max_target_len
    return run(cf.backend, initial_state(cf.backend, memory, table, seeds, samples, n)).x_t


@pytest.mark.parametrize("solver", ["ddpm", "ddim", "dpmpp_2m"])
def test_batch_of_n_equals_n_singles(cf, solver):
    prompts = ["list all files", "show disk usage now please", "top value"]
    config = GenerationConfig(steps=5, num_samples=2, seed=3, solver=solver)
    batch = _final_x(cf, prompts, config)
    singles = torch.cat([_final_x(cf, [p], config) for p in prompts])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=1e-5)
    assert cf.generate(prompts, config).texts == [cf.generate([p], config).texts[0] for p in prompts]


def test_different_seeds_differ(cf):
    a = _final_x(cf, ["x"], GenerationConfig(steps=3, seed=0))
    b = _final_x(cf, ["x"], GenerationConfig(steps=3, seed=1))
    assert not torch.allclose(a, b)


def test_trace_and_max_length(cf):
    out = cf.generate(["list files"], GenerationConfig(steps=10, trace_steps=(2, 10), max_length=10))
    assert [t["step"] for t in out.trace] == [2, 10] and out.trace[1]["timestep"] == 0
    # max_length 10 runs at the 16-token bucket and keeps the first 10 tokens
    x = _final_x(cf, ["list files"], GenerationConfig(steps=10), n=16)
    ids, _ = cf.backend.decode(x, cf.backend.encode(cf.tokenizer.encode_source(["list files"], ["bash"], 32)))
    assert out.texts[0] == [cf.tokenizer.decode(ids[0, :10].tolist())]


def test_long_prompt_is_truncated_with_a_warning(cf):
    out = cf.generate(["files " * 200], GenerationConfig(steps=2))
    assert out.warnings == [f"prompt 0 truncated to {cf.cfg.max_source_len} tokens"]


@pytest.mark.parametrize("prompts,config,message", [
    ([""], GenerationConfig(), "prompt 0 is empty"),
    (["ok", "  \n\t"], GenerationConfig(), "prompt 1 is empty"),
    ([], GenerationConfig(), "non-empty list"),
    ([3], GenerationConfig(), "prompt 0 is a int"),
    (["x"], GenerationConfig(lang="java"), "unknown language 'java'"),
    (["x"], GenerationConfig(steps=0), "steps must be an integer in 1..1200"),
    (["x"], GenerationConfig(steps=1201), "steps must be an integer in 1..1200"),
    (["x"], GenerationConfig(num_samples=0), "num_samples must be an integer ≥ 1"),
    (["x"], GenerationConfig(solver="euler"), "unknown solver 'euler'"),
    (["x"], GenerationConfig(seed=-1), "seed must be an integer"),
    (["x"], GenerationConfig(max_length=999), "max_length must be an integer in 1..32"),
    (["x"], GenerationConfig(steps=5, trace_steps=(9,)), "trace_steps must be step counts in 1..5"),
    (["x"], GenerationConfig(steps=5, trace_steps=2), "trace_steps must be a list of step counts, got 2"),
    (["x"], GenerationConfig(eta="a"), "eta must be a number in"),
    (["x"], GenerationConfig(early_exit="no"), "early_exit must be True or False, got 'no'"),
    (["list \udcff files"], GenerationConfig(), "prompt 0 is not valid Unicode .a lone surrogate at character 5"),
])
def test_bad_input(cf, prompts, config, message):
    with pytest.raises(CodeFusionError, match=message):
        cf.generate(prompts, config)


def test_numpy_numbers_and_any_iterable_of_steps_are_accepted(cf):
    import numpy as np
    out = cf.generate(["list files"], GenerationConfig(steps=4, solver="ddim", eta=np.float32(0.5), seed=np.int64(3),
                                                       trace_steps=range(2, 5, 2)))
    assert [e["step"] for e in out.trace] == [2, 4]
    assert cf.generate(["list files"], GenerationConfig(steps=4, early_exit=np.bool_(False))).texts
    # NumPy steps (was: "steps must be an integer …, got np.int64(4)" from the schedule), an iterator of trace
    # steps (was: read up by the check, an empty trace), NumPy trace steps (was: to_json() not serialisable)
    out = cf.generate(["list files"], GenerationConfig(steps=np.int64(4), trace_steps=iter([np.int64(4), 2, 2])))
    assert [e["step"] for e in out.trace] == [2, 4] and json.dumps(out.to_json())
    plain = cf.generate(["list files"], GenerationConfig(steps=4, trace_steps=(2, 4)))
    assert (out.texts, out.scores, out.trace) == (plain.texts, plain.scores, plain.trace)


def test_generate_many_takes_any_iterable_of_pairs(cf):
    prompts, configs = [["list files"], ["pwd"]], [GenerationConfig(steps=3), GenerationConfig(steps=3, seed=2)]
    listed = cf.generate_many(list(zip(prompts, configs)))
    for got in (cf.generate_many(zip(prompts, configs)), cf.generate_many((p, c) for p, c in zip(prompts, configs))):
        assert [o.texts for o in got] == [o.texts for o in listed]


def test_equal_configs_spelt_differently_batch_together(cf):
    """clamp=True is clamp="nearest", trace steps in any order: one batch key, so generate_many takes them."""
    a, b = cf.generate_many([(["list files"], GenerationConfig(steps=4, clamp=True, trace_steps=(4, 2))),
                             (["count lines"], GenerationConfig(steps=4, clamp="nearest", trace_steps=(2, 4)))])
    assert a.texts == cf.generate(["list files"], GenerationConfig(steps=4, clamp="nearest")).texts
    assert [e["step"] for e in a.trace] == [e["step"] for e in b.trace] == [2, 4]


@pytest.mark.parametrize("call, message", [
    (lambda cf: cf.generate(["x"], {"steps": 5}), "config must be a codefusion.GenerationConfig, got dict"),
    (lambda cf: cf.generate(["x"], {}), "config must be a codefusion.GenerationConfig, got dict"),
    (lambda cf: cf.generate_many([["x"]]), "each request of generate_many is a .prompts, GenerationConfig. pair"),
    (lambda cf: cf.generate_many(5), "each request of generate_many is a .prompts, GenerationConfig. pair"),
    (lambda cf: cf.generate_many([]), "non-empty list of .prompts, config. requests"),
    (lambda cf: cf.generate(["x"], GenerationConfig(steps=2), progress=5), "progress must be a callable"),
    (lambda cf: CodeFusion.from_pretrained(5), "path must be a checkpoint directory .str or Path. or None"),
])
def test_api_misuse_is_one_clear_error(cf, call, message):
    with pytest.raises(CodeFusionError, match=message):
        call(cf)


def test_default_backend_is_torch_and_early_exit_needs_it(tiny_model, tokenizer):
    assert CodeFusion(tiny_model, tokenizer).backend.name == "torch"
    with pytest.raises(CodeFusionError, match="early_exit is not supported by the .reference. backend"):
        CodeFusion(tiny_model, tokenizer, backend="reference").generate(["x"], GenerationConfig(early_exit=True))


def test_backend_registry_is_lazy_and_checked():
    assert "reference" in available()
    with pytest.raises(CodeFusionError, match="unknown backend 'nope': choose one of .*reference"):
        get_backend("nope")
    code = "import sys, codefusion; from codefusion import backends; " \
           "print(any(m.split('.')[0] in ('triton', 'onnxruntime', 'tensorrt') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_cli_generate_json(ckpt, capsys):
    assert main(["generate", "list files", "--model", str(ckpt), "--steps", "4", "--num-samples", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["timings"]) == {"encode_ms", "sample_ms", "decode_ms", "total_ms", "steps", "length", "batch_rows"}
    assert out["seed"] == 0 and len(out["texts"]) == 1 and out["timings"]["steps"] == 4


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "steps must be an integer"),
    (["--lang", "rust"], "unknown language 'rust'"),
    (["--num-samples", "0"], "num_samples"),
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--dtype", "int8"], "unknown dtype 'int8'"),
    (["--trace", "1,a"], "--trace takes comma-separated step counts"),
])
def test_cli_errors_are_one_line(ckpt, capsys, args, message):
    assert main(["generate", "list files", "--model", str(ckpt), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_length_quantile(ckpt, capsys):
    assert main(["generate", "list files", "--model", str(ckpt), "--steps", "2", "--length-quantile", "0.5",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["timings"]["steps"] == 2
    for bad in ("1.5", "0", "nan", "half"):
        with pytest.raises(SystemExit) as e:
            main(["generate", "list files", "--model", str(ckpt), "--length-quantile", bad])
        assert e.value.code == 2 and f"takes a number in (0, 1) such as 0.75, got '{bad}'" in capsys.readouterr().err


def test_cli_missing_model_and_empty_prompt(tmp_path, ckpt, capsys):
    assert main(["generate", "x", "--model", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", "   ", "--model", str(ckpt)]) == 2
    assert "prompt 0 is empty" in capsys.readouterr().err


def test_python_dash_m(ckpt):
    r = subprocess.run([sys.executable, "-m", "codefusion", "generate", "list files", "--model", str(ckpt),
                        "--steps", "2", "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["timings"]["steps"] == 2


def test_the_checkouts_kernels_folder_does_not_shadow_hugging_faces_kernels():
    """transformers >= 5 imports the PyPI package ``kernels``; run from the checkout's root (on sys.path first),
    the name must still find that package, not our kernels/ folder (codefusion.kernels)."""
    probe = ("import sys, codefusion.model, codefusion.kernels; m = sys.modules.get('kernels'); "
             "print(getattr(m, '__file__', '') or '', codefusion.kernels.__file__, sep='\\n')")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    hub, ours = r.stdout.splitlines()
    assert Path(ours).resolve() == (ROOT / "kernels" / "__init__.py").resolve()  # installed as links, too
    assert Path(hub) != Path(ours)  # absent (transformers < 5) or the installed package (CI's .venv is in ROOT)


def test_generate_many_equals_each_request_alone(ckpt):
    """The server's batching: rows keep their (seed, sample) noise, so a batch answers like singles."""
    cf = CodeFusion.from_pretrained(ckpt, backend="torch")
    requests = [(["list files", "count lines in a.txt"], GenerationConfig(steps=6, seed=3, num_samples=2)),
                (["show disk usage"], GenerationConfig(steps=6, seed=11)),
                (["list files"], GenerationConfig(steps=6, seed=3, num_samples=3))]
    batched = cf.generate_many(requests)
    for (prompts, config), got in zip(requests, batched):
        alone = cf.generate(prompts, config)
        assert got.texts == alone.texts and got.samples == alone.samples and got.seed == config.seed
        for a, b in zip(got.scores, alone.scores):
            assert a == pytest.approx(b, abs=1e-5)
        assert got.timings["batch_rows"] == 4 + 1 + 3 and alone.timings["batch_rows"] == len(prompts) * config.num_samples
    assert batched[2].samples[0][:2] == batched[0].samples[0]  # same prompt, seed, sample index → same code


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_generate_many_runs_every_length_bucket_in_one_loop(ckpt, backend):
    """Requests at two buckets, in two languages: max_length 10 and 12 run at 16 tokens, 30 at 32. `torch` runs
    them as one loop of 4 rows (Backend.run_groups), `reference` as one loop per bucket; either way each
    request answers as it would alone, cut to its own max_length."""
    cf = CodeFusion.from_pretrained(ckpt, backend=backend)
    requests = [(["list files", "count lines in a.txt"], GenerationConfig(steps=6, seed=3, max_length=10)),
                (["sum a list"], GenerationConfig(steps=6, seed=11, max_length=30, lang="python")),
                (["pwd"], GenerationConfig(steps=6, seed=2, max_length=12))]
    batched = cf.generate_many(requests)
    assert [out.timings["length"] for out in batched] == [16, 32, 16]
    assert [out.timings["batch_rows"] for out in batched] == ([4] * 3 if backend == "torch" else [3, 1, 3])
    for (prompts, config), got in zip(requests, batched):
        alone = cf.generate(prompts, config)
        assert got.texts == alone.texts and got.samples == alone.samples
        for a, b in zip(got.scores, alone.scores):
            assert a == pytest.approx(b, abs=1e-5)
    assert batched[1].texts != cf.generate(["sum a list"], replace(requests[1][1], lang="bash")).texts


def test_length_quantile_is_what_the_length_head_is_asked_for(ckpt):
    cf = CodeFusion.from_pretrained(ckpt, backend="torch")
    asked = []
    cf.backend.lengths = lambda memory, q: asked.append(q) or torch.tensor([10])
    cf.generate(["list files"], GenerationConfig(steps=2))
    cf.length_quantile = 0.5
    assert cf.length_buckets(["list files"], "bash") == [16]
    assert asked == [0.9, 0.5]


def test_generate_many_traces_per_request_and_checks_the_batch_key(ckpt):
    cf = CodeFusion.from_pretrained(ckpt, backend="torch")
    a, b = (["list files"], GenerationConfig(steps=4, trace_steps=(2,))), \
        (["pwd", "df"], GenerationConfig(steps=4, trace_steps=(2,), seed=5, num_samples=2))
    out_a, out_b = cf.generate_many([a, b])
    assert len(out_a.trace[0]["texts"]) == 1 and [len(t) for t in out_b.trace[0]["texts"]] == [2, 2]
    assert out_b.trace == cf.generate(*b).trace
    with pytest.raises(CodeFusionError, match="must share steps, solver"):
        cf.generate_many([a, (["pwd"], GenerationConfig(steps=5))])
    with pytest.raises(CodeFusionError, match="non-empty list of .prompts, config. requests"):
        cf.generate_many([])


@pytest.mark.parametrize("config,max_lengths,total", [
    (GenerationConfig(steps=120, num_samples=2, seed=1), (None,), 120),  # one loop in 40 chunks of 3
    (GenerationConfig(steps=7, trace_steps=(2, 5)), (None,), 7),  # chunks of 1 around the trace stops
    (GenerationConfig(steps=30), (10, 20), 30),  # two length buckets as one loop (run_groups)
])
def test_progress_reports_every_step_and_changes_nothing(cf, config, max_lengths, total):
    requests = [(["list files"], replace(config, max_length=m, seed=config.seed + j))
                for j, m in enumerate(max_lengths)]
    calls = []
    with_bar = cf.generate_many(requests, progress=lambda done, of: calls.append((done, of)))
    plain = cf.generate_many(requests)
    done = [c[0] for c in calls]
    steps = [b - a for a, b in zip([0, *done], done)]
    assert calls[-1] == (total, total) and min(steps) >= 1 and len(calls) <= 50
    assert len(set(steps[:-1])) <= 1 or config.trace_steps  # equal chunks (the last may be shorter)
    for a, b in zip(with_bar, plain):
        assert a.samples == b.samples and a.scores == b.scores and a.trace == b.trace


def test_destructive_bash_programs_are_flagged(cf, monkeypatch):
    """A Bash program that deletes files gets a warning naming the prompt and program; other languages are not
    checked (the flag comes from `eval.destructive`, tested on its own in test_eval_bash.py)."""
    import codefusion.api as api
    assert api.destructive_warnings([["ls -l", "find . -mtime -1 -exec rm {} \\;"], ["sudo dd if=a of=b"]]) == [
        "prompt 0, program 1: rm deletes files; read the command before you run it",
        "prompt 1, program 0: dd writes raw blocks; read the command before you run it"]
    seen = []
    monkeypatch.setattr(api, "destructive_warnings", lambda texts: seen.append(texts) or ["flagged"])
    bash = cf.generate(["files " * 200], GenerationConfig(steps=2))
    python = cf.generate(["sum a list"], GenerationConfig(steps=2, lang="python"))
    assert bash.warnings == [f"prompt 0 truncated to {cf.cfg.max_source_len} tokens", "flagged"]
    assert python.warnings == [] and seen == [bash.texts]


def test_json_output_has_no_nan():
    from codefusion.api import GenerationOutput
    out = GenerationOutput([["a", "b"]], [[float("nan"), -0.5]], 0, {}, [], None, [["a", "b"]], None)
    assert json.loads(json.dumps(out.to_json(), allow_nan=False))["scores"] == [[None, -0.5]]


@pytest.mark.parametrize("argv, message", [
    (["generate", "x", "--solverr", "ddim"],
     "error: unrecognized arguments: --solverr ddim (see codefusion generate --help)"),
    (["bench", "latency", "--nope"], "error: unrecognized arguments: --nope (see codefusion bench latency --help)"),
    (["bench"], "error: the following arguments are required: suite (see codefusion bench --help)"),
    (["export", "onnx"], "error: the following arguments are required: --out (see codefusion export onnx --help)"),
])
def test_usage_errors_are_one_line_too(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and capsys.readouterr().err == message + "\n"
