"""The TensorRT path up to the builder call (TensorRT is not installable here): the gate, the optimization
profiles, the build against a recording fake, and the export folder built beside --out and moved onto it whole."""
import json
from pathlib import Path

import pytest
import torch

from codefusion import CodeFusion
from codefusion.config import ModelConfig
from export_helpers import ckpt, export_dir, one_line_error  # noqa: F401 (fixtures, found by name)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from codefusion.export.manifest import ExportError, ProviderError  # noqa: E402
from codefusion.export.specs import graph_specs  # noqa: E402
from codefusion.export.tensorrt import profile_shapes, require_tensorrt  # noqa: E402


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
        one_line_error(capsys, ["export", "tensorrt", "--model", str(export_dir), "--out", str(tmp_path / "t")],
                        "'tensorrt' is missing")
        with pytest.raises(ProviderError, match="'tensorrt'"):
            CodeFusion.from_pretrained(export_dir, backend="tensorrt")
        assert not (tmp_path / "t").exists()


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
