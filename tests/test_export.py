"""ONNX export and the onnxruntime backend against `reference`: x̂0 step by step, tokens, texts; the CLI;
every bad input's one-line error; the manifest's mismatch checks (TensorRT: test_export_tensorrt.py).

One export of a tiny self-conditioning model with a length head and the pooled condition (the shipped
model's features) is shared by the module: it is also the `codefusion export onnx` CLI test."""
import dataclasses
import json
import shutil

import pytest
import torch

from codefusion import CodeFusion, GenerationConfig
from codefusion.checkpoint import save_checkpoint
from codefusion.cli import main
from codefusion.config import ModelConfig
from codefusion.diffusion.loop import initial_state
from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table
from export_helpers import ckpt, export_dir, one_line_error  # noqa: F401 (fixtures, found by name)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from codefusion.export.manifest import ExportError, ProviderError  # noqa: E402
from codefusion.export.ort import choose_providers  # noqa: E402
from codefusion.export.specs import graph_specs  # noqa: E402

CPU = torch.device("cpu")
PROMPTS = ["list all files", "find txt files", "count lines in a.txt"]


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
        one_line_error(capsys, argv, match)
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
