"""manifest.json of an export directory: what was exported, how, from which weights — and the checks that
catch a directory put together from different exports.

    {"format": "codefusion-export", "format_version": 1, "opset": 20, "dtype": "float32",
     "encoder_dtype": "float32", "exporter": "…", "versions": {torch, onnx, onnxscript},
     "model": ModelConfig, "weights_sha256": "…", "graphs": {name: {file, inputs, outputs, dims}},
     "files": {file: sha256}, "export_s": {…}[, "engines": {…} (TensorRT)]}

Loading re-hashes every listed file: a graph swapped in from another model or opset is caught before
any session is built, and the message says which (opset, input shapes, or just "modified").
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from codefusion.errors import CodeFusionError

MANIFEST, EMBEDDING = "manifest.json", "embedding.safetensors"
FORMAT, FORMAT_VERSION = "codefusion-export", 1


class ExportError(CodeFusionError):
    """An export that cannot be made or loaded (bad flags, output directory, mismatched files)."""


class ProviderError(ExportError):
    """An execution provider or runtime package that this machine lacks."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """Hash of the fp32 weights by name: ties an export to the checkpoint it came from (verify checks it)."""
    from codefusion.checkpoint import unique_state

    h = hashlib.sha256()
    for name, t in sorted(unique_state(model).items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def write_manifest(out: Path, fields: dict) -> None:
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(path: str | Path, check_files: bool = True) -> dict:
    """Parse and validate ``path/manifest.json``; with ``check_files`` re-hash every listed file."""
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise ExportError(f"{path} is not an export directory: {MANIFEST} is missing "
                          "(make one with `codefusion export onnx --out DIR`)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{file} is not valid JSON ({e}); export again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{file} is not a {FORMAT} v{FORMAT_VERSION} manifest; export again with this engine")
    kinds = {"files": dict, "graphs": dict, "model": dict, "dtype": str, "opset": int}
    bad = next((k for k, kind in kinds.items() if not isinstance(manifest.get(k), kind)), None)
    if bad is not None:
        raise ExportError(f"{file} has no valid {bad!r} entry (a damaged manifest); export again")
    config = path / "config.json"
    if config.is_file():
        try:
            described = json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ExportError(f"{config} is not valid JSON ({e}); export again") from None
        if not isinstance(described, dict) or described.get("model") != manifest["model"]:
            raise ExportError(f"{config} describes another model than {file}: the directory mixes two exports")
    if check_files:
        for name, digest in manifest["files"].items():
            if not (path / name).is_file():
                raise ExportError(f"{path / name} is missing: the export is incomplete, export again")
            if file_sha256(path / name) != digest:
                raise ExportError(_mismatch(path / name, manifest))
    return manifest


def _mismatch(file: Path, manifest: dict) -> str:
    """Why a file's hash differs from the manifest: another opset, another model, or a modified file."""
    head = f"{file} does not match {MANIFEST}"
    graph = next((g for g in manifest["graphs"].values() if g["file"] == file.name), None)
    if graph is None:
        return f"{head} (sha256 differs): it was modified, or comes from another export; export again"
    import onnx
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure means the same thing here
        return f"{head}: it is not a readable ONNX file; export again"
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != manifest["opset"]:
        return f"{head}: it has opset {opset}, the manifest says {manifest['opset']}; export again"
    for (name, _, shape), value in zip(graph["inputs"], proto.graph.input):
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
        static = [d for d in shape if isinstance(d, int)]
        if value.name != name or [d for d in dims if isinstance(d, int) and d] != static:
            return f"{head}: it comes from another model (input {value.name} {dims}, expected {name} {shape})"
    return f"{head} (sha256 differs): the file was modified after export; export again"


class ExportedModel:
    """What a backend needs from an export directory in place of a torch model: ``cfg``, the files, and L
    (for clamping). ``length_head`` is None because p(n | E_s) runs inside the encoder graph."""

    length_head = None

    def __init__(self, path: str | Path, check_files: bool = True):
        from safetensors.torch import load_file

        from codefusion.config import ModelConfig

        self.path = Path(path)
        self.manifest = read_manifest(self.path, check_files)
        self.cfg = ModelConfig.from_dict(self.manifest["model"])
        self.embed_weight = load_file(str(self.path / EMBEDDING))["embed"]

    def graph_file(self, name: str) -> Path:
        return self.path / self.manifest["graphs"][name]["file"]

    def to(self, *args, **kwargs) -> "ExportedModel":  # the backend seam moves models; nothing to move here
        return self

    def eval(self) -> "ExportedModel":
        return self
