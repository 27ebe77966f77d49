"""ONNX export and the onnxruntime backend against `reference`: x̂0 step by step, tokens, texts; the CLI;
every bad input's one-line error; the manifest's mismatch checks; the TensorRT gate and profiles.

One export of a tiny self-conditioning model with a length head and the pooled condition (the shipped
model's features) is shared by the module: it is also the `codefusion export onnx` CLI test."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from codefusion import CodeFusion, GenerationConfig
from codefusion.checkpoint import save_checkpoint
from codefusion.cli import main
from codefusion.config import ModelConfig
from codefusion.diffusion.loop import initial_state
from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table
from conftest import pooled_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from codefusion.export.manifest import ExportError, ProviderError  # noqa: E402
from codefusion.export.ort import choose_providers  # noqa: E402
from codefusion.export.specs import graph_specs  # noqa: E402
from codefusion.export.tensorrt import profile_shapes, require_tensorrt  # noqa: E402

CPU = torch.device("cpu")
PROMPTS = ["list all files", "find txt files", "count lines in a.txt"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model, tokenizer):
    cfg = dataclasses.replace(tiny_model.cfg, self_condition=True, length_head=True)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", pooled_model(cfg, seed=2), tokenizer)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, ckpt):
    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    assert main(["export", "onnx", "--model", str(ckpt), "--out", str(out)]) == 0
    return out


def _one_line_error(capsys, argv, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and match in err, err


def test_export_writes_checked_graphs_and_manifest(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["opset"] == 20 and manifest["dtype"] == "float32" and manifest["encoder_dtype"] == "float32"
    specs = graph_specs(ModelConfig.from_dict(manifest["model"]))
    for name, spec in specs.items():
        proto = onnx.load(str(export_dir / spec.file))
        onnx.checker.check_model(proto)
        assert [i.name for i in proto.graph.input] == [t.name for t in spec.inputs]
        assert [o.name for o in proto.graph.output] == [t.name for t in spec.outputs]
        assert {o.version for o in proto.opset_import if o.domain == ""} == {20}
    assert {"config.json", "tokenizer.json", "embedding.safetensors"} <= set(manifest["files"])


@pytest.mark.parametrize("solver", ["ddpm", "dpmpp_2m"])
def test_ort_matches_reference_every_step(export_dir, ckpt, tokenizer, solver):
    ref = CodeFusion.from_pretrained(ckpt, backend="reference").backend
    ox = CodeFusion.from_pretrained(export_dir, backend="onnxruntime").backend
    src = tokenizer.encode_source(PROMPTS, ["bash"] * 3, ref.cfg.max_source_len)
    table = step_table(NoiseSchedule.sqrt().respace(8), solver)
    seeds, samples = torch.tensor([5, 5, 6]), torch.tensor([0, 1, 0])
    a = initial_state(ref, ref.encode(src), table, seeds, samples, 16)
    b = initial_state(ox, ox.encode(src), table, seeds, samples, 16)
    torch.testing.assert_close(ref.lengths(a.memory, 0.9), ox.lengths(b.memory, 0.9), atol=0, rtol=0)
    worst = []
    for i in range(len(table)):
        a, b = ref.step(a, i), ox.step(b, i)
        worst.append(float((a.x0_hat - b.x0_hat).abs().max()))
    assert max(worst) <= 1e-4, f"max |Δx̂0| per step: {worst}"
    (ids_a, logp_a), (ids_b, logp_b) = ref.decode(a.x_t, a.memory), ox.decode(b.x_t, b.memory)
    assert torch.equal(ids_a, ids_b)
    torch.testing.assert_close(logp_a, logp_b, atol=1e-4, rtol=1e-4)


def test_ort_states_stay_valid_after_later_steps(export_dir, tokenizer):
    """step(state, i) hands out a state its caller may keep: bench parity holds one across a forced step. The
    backend reused two output buffers in turn, so the held state changed under its holder."""
    ox = CodeFusion.from_pretrained(export_dir, backend="onnxruntime").backend
    src = tokenizer.encode_source(PROMPTS, ["bash"] * 3, ox.cfg.max_source_len)
    table = step_table(NoiseSchedule.sqrt().respace(6), "ddpm")
    state = ox.step(initial_state(ox, ox.encode(src), table, torch.tensor([1, 2, 3]), torch.zeros(3, dtype=torch.int64),
                                  16), 0)
    held = state.x_t.clone(), state.x0_hat.clone()
    forced = ox.step(dataclasses.replace(state, x_t=state.x_t + 1.0), 1)
    ox.step(forced, 2)
    assert torch.equal(state.x_t, held[0]) and torch.equal(state.x0_hat, held[1])


@pytest.mark.parametrize("config", [GenerationConfig(steps=10, num_samples=2, seed=1),
                                    GenerationConfig(steps=6, solver="dpmpp_2m", clamp=True, max_length=9),
                                    GenerationConfig(steps=5, clamp="decode", seed=2)])
def test_generate_from_export_dir_equals_reference(export_dir, ckpt, config):
    ref = CodeFusion.from_pretrained(ckpt, backend="reference").generate(PROMPTS, config)
    out = CodeFusion.from_pretrained(export_dir, backend="onnxruntime").generate(PROMPTS, config)
    assert out.samples == ref.samples and out.texts == ref.texts
    assert [s for row in out.scores for s in row] == pytest.approx([s for row in ref.scores for s in row], abs=1e-4)


def test_registry_route_exports_on_the_fly(monkeypatch, export_dir, ckpt):
    """CodeFusion(torch model, …, "onnxruntime") — the bench's route — exports to a temporary directory
    first; the export itself is the fixture's (copied here instead of run again, to keep the file fast)."""
    import codefusion.export.onnx as onnx_export
    from codefusion.checkpoint import load_checkpoint

    monkeypatch.setattr(onnx_export, "export_graphs", lambda model, out, dtype, opset=20: shutil.copytree(
        export_dir, out, dirs_exist_ok=True))
    model, tok, _ = load_checkpoint(ckpt)
    config = GenerationConfig(steps=5, seed=2)
    out = CodeFusion(model, tok, "onnxruntime").generate(PROMPTS, config)
    assert out.texts == CodeFusion(model, tok, "reference").generate(PROMPTS, config).texts
    with pytest.raises(ExportError, match="fp32"):
        CodeFusion(model, tok, "onnxruntime", dtype="bfloat16")


def test_cli_generate_and_verify(export_dir, ckpt, capsys):
    args = ["generate", "list all files", "--steps", "6", "--num-samples", "2", "--json"]
    assert main([*args, "--model", str(ckpt)]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main([*args, "--model", str(export_dir), "--backend", "onnxruntime"]) == 0
    assert json.loads(capsys.readouterr().out)["texts"] == ref["texts"]
    assert main(["export", "verify", "--export", str(export_dir), "--model", str(ckpt), "--steps", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(err <= 1e-4 for g in report["graphs"].values() for err in g.values()), report["graphs"]
    e2e = report["onnxruntime"]
    assert e2e["token_agreement"] == 1.0 and e2e["length_agreement"] == 1.0 and e2e["max_abs_dx0"] <= 1e-4
    assert "not installed" in report["tensorrt"] or "skipped" not in report["tensorrt"]


def test_bad_inputs_are_one_line_errors(export_dir, ckpt, tiny_model, tokenizer, tmp_path, capsys):
    not_ckpt = tmp_path / "empty"
    not_ckpt.mkdir()
    other = save_checkpoint(tmp_path / "other", tiny_model, tokenizer)
    empty_rows = tmp_path / "empty.jsonl"
    empty_rows.write_text("")
    cases = [
        (["export", "onnx", "--model", str(not_ckpt), "--out", str(tmp_path / "a")], "not a CodeFusion checkpoint"),
        (["export", "onnx", "--model", str(ckpt), "--out", str(export_dir)], "already exists"),
        (["export", "onnx", "--model", str(ckpt), "--out", str(tmp_path / "b"), "--opset", "13"], "not supported"),
        (["export", "onnx", "--model", str(export_dir), "--out", str(tmp_path / "c")], "already an export"),
        (["export", "verify", "--export", str(export_dir), "--model", str(other)], "weights differ"),
        (["export", "verify", "--export", str(ckpt), "--model", str(ckpt)], "manifest.json is missing"),
        (["generate", "x", "--model", str(export_dir)], "export directory"),
        (["generate", "x", "--model", str(export_dir), "--backend", "onnxruntime", "--dtype", "bfloat16"],
         "runs in float32"),
        (["export", "onnx", "--model", str(ckpt), "--out", str(ckpt / "config.json")], "is a file, not a directory"),
        (["export", "onnx", "--model", str(ckpt), "--out", str(ckpt / "config.json" / "sub")], "not a writable"),
        (["export", "onnx", "--model", str(other), "--out", str(other), "--force"], "holds a checkpoint"),
        (["export", "onnx", "--model", str(ckpt), "--out", str(other), "--force"], "holds a checkpoint"),
        (["export", "onnx", "--model", str(ckpt), "--out", str(not_ckpt.parent), "--force"], "not an export"),
        (["export", "verify", "--export", str(export_dir), "--model", str(ckpt), "--limit", "-1"],
         "--limit must be at least 1"),
        (["export", "verify", "--export", str(export_dir), "--model", str(ckpt), "--data", str(empty_rows)],
         "holds no rows"),
        (["export", "verify", "--export", str(export_dir), "--model", str(ckpt), "--seed", str(2 ** 64)],
         "--seed must be an integer in 0..2^63-1"),
    ]
    for argv, match in cases:
        _one_line_error(capsys, argv, match)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_manifest_catches_mixed_exports(export_dir, tmp_path):
    def copy(name):
        return shutil.copytree(export_dir, tmp_path / name)

    d = copy("opset")
    proto = onnx.load(str(d / "decoder.onnx"))
    next(o for o in proto.opset_import if o.domain == "").version = 19
    onnx.save(proto, str(d / "decoder.onnx"))
    with pytest.raises(ExportError, match="opset 19, the manifest says 20"):
        CodeFusion.from_pretrained(d, backend="onnxruntime")
    d = copy("model")
    shutil.copyfile(d / "encoder.onnx", d / "decoder.onnx")
    with pytest.raises(ExportError, match="another model"):
        CodeFusion.from_pretrained(d, backend="onnxruntime")
    d = copy("config")
    config = json.loads((d / "config.json").read_text())
    config["model"]["d_model"] = 128
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="describes another model"):
        CodeFusion.from_pretrained(d, backend="onnxruntime")


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").write_text("{not json"), r"config.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "describes another model"),
    (lambda d: _edit_manifest(d, lambda m: m.pop("files")), r"has no valid 'files' entry"),
    (lambda d: (d / "manifest.json").write_text("[]"), "is not a codefusion-export v1 manifest"),
    (lambda d: _edit_manifest(d, lambda m: m.update(dtype="float16")),
     r"denoiser.onnx: input \w+ is tensor\(float\), but the manifest's dtype float16 needs tensor\(float16\)"),
])
def test_a_damaged_export_folder_is_one_line(export_dir, tmp_path, damage, message):
    """Damage the hashes do not cover (the manifest itself, config.json read before them): a one-line ExportError
    where there were KeyError / JSONDecodeError tracebacks, or an ORT type error at the first step."""
    d = shutil.copytree(export_dir, tmp_path / "d")
    damage(d)
    with pytest.raises(ExportError, match=message):
        CodeFusion.from_pretrained(d, backend="onnxruntime")


def _edit_manifest(d, edit):
    manifest = json.loads((d / "manifest.json").read_text())
    edit(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))


def test_a_failed_export_leaves_no_hidden_partial_folder(ckpt, tmp_path, monkeypatch):
    from codefusion.export import onnx as export_onnx_module

    def fail(*args, **kw):
        raise KeyboardInterrupt  # Ctrl-C in the middle of the exporter
    monkeypatch.setattr(export_onnx_module, "export_graphs", fail)
    with pytest.raises(KeyboardInterrupt):
        export_onnx_module.export_onnx(str(ckpt), str(tmp_path / "exp"))
    assert list(tmp_path.iterdir()) == []


def test_providers():
    cuda = torch.device("cuda")
    assert choose_providers(CPU, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        choose_providers(cuda, ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert choose_providers(cuda, ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_tensorrt_gate_and_profiles(export_dir, tiny_model, tmp_path, capsys):
    specs = graph_specs(tiny_model.cfg)
    shapes = profile_shapes(specs["denoiser"])
    n_max, d, S = tiny_model.cfg.max_target_len, tiny_model.cfg.d_embed, tiny_model.cfg.max_source_len
    assert shapes["x_t"] == ((1, 1, d), (8, n_max, d), (256, n_max, d))
    assert shapes["timestep"] == ((1,), (1,), (1,)) and shapes["coef"] == ((4,), (4,), (4,))
    assert shapes["kv_den_0_k"][0] == (1, tiny_model.cfg.n_heads, S, tiny_model.cfg.d_model // tiny_model.cfg.n_heads)
    assert profile_shapes(specs["encoder"])["src_ids"] == ((1, S), (8, S), (256, S))
    try:
        require_tensorrt()
    except ProviderError as e:
        assert "'tensorrt'" in str(e)
        _one_line_error(capsys, ["export", "tensorrt", "--model", str(export_dir), "--out", str(tmp_path / "t")],
                        "'tensorrt' is missing")
        with pytest.raises(ProviderError, match="'tensorrt'"):
            CodeFusion.from_pretrained(export_dir, backend="tensorrt")
        assert not (tmp_path / "t").exists()


def test_spec_sample_inputs_follow_the_spec(tiny_model):
    for spec in graph_specs(tiny_model.cfg, "float16").values():
        inputs = spec.sample_inputs(batch=3, n=7)
        for t in spec.inputs:
            want = tuple({"batch": 3, "n": 7}.get(d, d) for d in t.shape)
            assert inputs[t.name].shape == want and inputs[t.name].dtype == t.torch_dtype("float16"), t.name


@pytest.mark.slow
def test_fp16_export_runs_with_fp32_encoder(ckpt, tmp_path, capsys):
    out = tmp_path / "fp16"
    assert main(["export", "onnx", "--model", str(ckpt), "--out", str(out), "--dtype", "fp16"]) == 0
    enc = onnx.load(str(out / "encoder.onnx"))
    assert {i.data_type for i in enc.graph.initializer if "encoder" in i.name} <= {onnx.TensorProto.FLOAT}
    assert main(["export", "verify", "--export", str(out), "--model", str(ckpt), "--steps", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["onnxruntime"]["max_abs_dx0"] < 0.1


class FakeTensorRT:
    """Records what export_tensorrt asks of the TensorRT API; builds nothing (TensorRT is absent here)."""

    __version__ = "10.0.0"
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    BuilderFlag = type("BuilderFlag", (), {"FP16": "FP16", "BF16": "BF16"})
    MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "WORKSPACE"})
    NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), {})

    def __init__(self):
        self.calls = []
        fake = self

        class Config:
            def set_memory_pool_limit(self, pool, size): pass
            def set_flag(self, flag): fake.calls.append(("flag", flag))
            def add_optimization_profile(self, profile): pass
            def create_timing_cache(self, data): return data
            def set_timing_cache(self, cache, ignore_mismatch): pass
            def get_timing_cache(self): return type("Cache", (), {"serialize": lambda s: b"cache"})()

        class Profile:
            def set_shape(self, name, lo, opt, hi): fake.calls.append(("shape", name, lo, opt, hi))

        class Builder:
            def __init__(self, logger): pass
            def create_network(self, flags): return "network"
            def create_builder_config(self): return Config()
            def create_optimization_profile(self): return Profile()
            def build_serialized_network(self, network, config): return b"engine"

        class OnnxParser:
            def __init__(self, network, logger): pass
            def parse_from_file(self, path):
                fake.calls.append(("parse", path))
                return True

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_tensorrt_build_up_to_the_builder(monkeypatch, export_dir, tmp_path):
    import codefusion.export.tensorrt as trt_export

    fake = FakeTensorRT()
    monkeypatch.setattr(trt_export, "require_tensorrt", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = trt_export.export_tensorrt(export_dir, tmp_path / "trt", "fp16")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engines"]["encoder"]["precision"] == "fp32" and manifest["engines"]["decoder"]["precision"] == "fp16"
    assert (out / "denoiser.plan").read_bytes() == b"engine" and (out / "timing.cache").read_bytes() == b"cache"
    assert [c[1] for c in fake.calls if c[0] == "flag"] == ["FP16", "FP16"]  # not on the encoder
    spec = graph_specs(ModelConfig.from_dict(manifest["model"]))["denoiser"]
    shapes = {c[1]: c[2:] for c in fake.calls if c[0] == "shape" and c[1] in {t.name for t in spec.inputs}}
    assert shapes == profile_shapes(spec)
    in_place = trt_export.export_tensorrt(out, out, "fp16")  # engines next to the graphs (a copy onto itself failed)
    assert in_place == out
    with pytest.raises(ExportError, match="keep their opset"):
        trt_export.export_tensorrt(out, tmp_path / "trt2", "fp16", opset=23)
    with pytest.raises(ProviderError, match="CUDA GPUs only"):
        CodeFusion.from_pretrained(out, backend="tensorrt")


def test_a_failed_tensorrt_build_leaves_out_as_it_was(monkeypatch, export_dir, tmp_path):
    """Engines are built beside --out and moved onto it whole, as `export onnx` does: a build that fails (or is
    interrupted) onto an earlier export with --force leaves that export and no hidden half folder."""
    import codefusion.export.tensorrt as trt_export

    fake = FakeTensorRT()
    monkeypatch.setattr(trt_export, "require_tensorrt", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = trt_export.export_tensorrt(export_dir, tmp_path / "trt", "fp16")
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    monkeypatch.setattr(fake.Builder, "build_serialized_network", lambda self, network, config: None)
    for source in (out, export_dir):  # in place, and from the ONNX export onto it with --force
        with pytest.raises(ExportError, match="failed to build an engine"):
            trt_export.export_tensorrt(source, out, "fp16", force=True)
        assert {f.name: f.read_bytes() for f in out.iterdir()} == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["trt"]


def test_built_beside_refuses_what_it_cannot_replace(tmp_path, monkeypatch):
    """An export replaces its --out whole: refused in one line for the current directory (the shell would be left in
    a deleted folder); a --out that cannot be moved aside (a mount point) fails in one line with --out intact and
    no hidden folder left."""
    import errno

    from codefusion.export.onnx import built_beside

    out = tmp_path / "exp"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    monkeypatch.chdir(out)
    with pytest.raises(ExportError, match="current directory"):
        with built_beside(Path(".")):
            pytest.fail("built in the current directory")
    monkeypatch.chdir(tmp_path)
    real_rename = Path.rename

    def busy(self, target):
        if self == out:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", busy)
    with pytest.raises(ExportError, match="mount point"):
        with built_beside(out) as building:
            (building / "manifest.json").write_text('{"new": 1}')
    assert (out / "manifest.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


@pytest.mark.slow
def test_opset_23_maps_sdpa_to_attention(ckpt, tmp_path, capsys):
    out = tmp_path / "op23"
    assert main(["export", "onnx", "--model", str(ckpt), "--out", str(out), "--opset", "23"]) == 0
    assert "Attention" in {n.op_type for n in onnx.load(str(out / "denoiser.onnx")).graph.node}
    assert main(["export", "verify", "--export", str(out), "--model", str(ckpt), "--steps", "5", "--json"]) == 0
    e2e = json.loads(capsys.readouterr().out)["onnxruntime"]
    assert e2e["token_agreement"] == 1.0 and e2e["max_abs_dx0"] <= 1e-4


def test_export_force_replaces_an_export_whole(ckpt, tmp_path, capsys):
    """The export is built in a hidden sibling and moved onto --out once whole, so an interrupted one leaves
    nothing there; --force replaces an earlier export and leaves no trace of the old one or the build."""
    out = tmp_path / "exp"
    for extra in ([], ["--force"]):
        assert main(["export", "onnx", "--model", str(ckpt), "--out", str(out), *extra]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    assert CodeFusion.from_pretrained(out, backend="onnxruntime").generate(["list files"], GenerationConfig(steps=2))
