"""``codefusion export onnx``: the torch backend's fp32 model → three ONNX graphs + manifest.

    export_dir/  encoder.onnx  denoiser.onnx  decoder.onnx      one per spec (specs.py)
                 embedding.safetensors                          L (V, d_embed) fp32, for --clamp
                 tokenizer.json  config.json                    copied from the checkpoint
                 manifest.json                                  opset, exporter, versions, hashes, model config

Exporter: ``torch.export.export`` with the spec's dynamic dims → ONNX via the dynamo exporter
(``torch.onnx.export(program, dynamo=True, opset_version=N)``, onnxscript behind it). The encoder is
decomposed first (``run_decompositions()``, ``EncoderGraph.predecompose``): the ONNX exporter's own
decomposition of T5's attention-output reshape fails under a symbolic batch (torch 2.13: "Cannot view a
tensor … as a tensor with shape (s24, 32, 64)"), the default table keeps the copy it needs. Only there:
a decomposed program costs the exporter 3× the time (paper decoder, 2-core CPU: 15 s against 5 s).
Graphs are written without external data (the ``paper`` encoder is 141 MB, far below protobuf's 2 GB).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
import warnings
from pathlib import Path

import torch

from .graphs import build_graphs
from .manifest import EMBEDDING, MANIFEST, ExportError, file_sha256, weights_sha256, write_manifest
from .specs import DTYPES, GraphSpec, graph_specs

DEFAULT_OPSET = 20  # LayerNormalization (17), GELU (20); 23 maps SDPA to the Attention op
MIN_OPSET, MAX_OPSET = 18, 23  # the dynamo exporter's range (onnxscript 0.7, onnx 1.23)
EXPORT_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}


def parse_export_dtype(dtype: str) -> str:
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"--dtype {dtype!r} cannot be exported: choose fp32 or fp16")
    return EXPORT_DTYPES[dtype]


def check_out_dir(out: str | Path, force: bool) -> Path:
    """Refuse an existing directory unless --force (then the export's files in it are overwritten)."""
    from codefusion.validate import out_dir

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a directory: choose another --out")
    if out.exists() and not force:
        raise ExportError(f"{out} already exists: choose another --out or pass --force to overwrite it")
    if (out / "model.safetensors").exists():  # --force replaces an export, never a checkpoint
        raise ExportError(f"{out} holds a checkpoint (model.safetensors): export into another directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():  # nor a folder of other things
        raise ExportError(f"{out} holds files that are not an export: export into another directory")
    return out_dir(out, create=False)  # a folder that cannot be made fails now, in one line


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset} is not supported: the dynamo exporter writes {MIN_OPSET}..{MAX_OPSET}")
    return opset


def _dynamic_shapes(module: torch.nn.Module, spec: GraphSpec) -> tuple:
    """torch.export dynamic_shapes in the structure of ``forward``'s arguments (the K/V are ``*kv``)."""
    dims = {d: torch.export.Dim(d, min=lo, max=hi) for d, (lo, _, hi) in spec.dims.items()}
    per_input = [{i: dims[d] for i, d in enumerate(t.shape) if isinstance(d, str)} or None for t in spec.inputs]
    params = inspect.signature(module.forward).parameters.values()
    named = sum(p.kind == p.POSITIONAL_OR_KEYWORD for p in params)
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return (*per_input[:named], tuple(per_input[named:]))
    return tuple(per_input)


def export_graph(module: torch.nn.Module, spec: GraphSpec, path: Path, opset: int) -> None:
    """One module → one checked ONNX file. Sample batch 2 and n = 16 (not 0/1: torch.export specialises those)."""
    import onnx

    args = tuple(spec.sample_inputs(batch=2, n=min(16, spec.dims["n"][2])).values())
    with warnings.catch_warnings(), torch.no_grad():
        # the exporter's constant folder evaluates T5's log(relative position) at 0: harmless warnings
        warnings.simplefilter("ignore")
        program = torch.export.export(module, args, dynamic_shapes=_dynamic_shapes(module, spec))
        if getattr(module, "predecompose", False):
            program = program.run_decompositions()
        torch.onnx.export(program, args, str(path), dynamo=True, opset_version=opset, external_data=False,
                          input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                          verbose=False)
    onnx.checker.check_model(str(path))


def export_graphs(model, out: Path, dtype: str = "float32", opset: int = DEFAULT_OPSET,
                  extra_files: dict[str, str] | None = None) -> Path:
    """Graphs + embedding + manifest of ``model`` (a CodeFusionModel) into ``out`` (an existing directory)."""
    from safetensors.torch import save_file

    from codefusion.checkpoint import readable_by_all

    check_opset(opset)
    t0 = time.perf_counter()
    specs = graph_specs(model.cfg, dtype)
    graphs = build_graphs(model, DTYPES[dtype])
    timings = {}
    for name, module in graphs.items():
        t = time.perf_counter()
        export_graph(module, specs[name], out / specs[name].file, opset)
        timings[name] = round(time.perf_counter() - t, 2)
    save_file({"embed": model.embed.weight.detach().float().contiguous()}, str(out / EMBEDDING))
    readable_by_all(out / EMBEDDING)
    files = [specs[n].file for n in graphs] + [EMBEDDING] + sorted(extra_files or {})
    write_manifest(out, {
        "opset": opset, "dtype": dtype, "encoder_dtype": "float32",
        "exporter": "torch.export.export → run_decompositions → torch.onnx.export(dynamo=True)",
        "versions": _versions(), "model": model.cfg.to_dict(), "weights_sha256": weights_sha256(model),
        "graphs": {n: _spec_json(s) for n, s in specs.items()},
        "files": {f: file_sha256(out / f) for f in files},
        "export_s": {**timings, "total": round(time.perf_counter() - t0, 2)}})
    return out


def export_onnx(model_dir: str | Path | None, out: str | Path, dtype: str = "fp32", opset: int = DEFAULT_OPSET,
                force: bool = False) -> Path:
    """A checkpoint directory (None: the embedded model) → a self-contained export directory."""
    dtype, opset, out = parse_export_dtype(dtype), check_opset(opset), check_out_dir(out, force)
    model, model_dir = load_for_export(model_dir, out)
    out = out.resolve()
    with built_beside(out) as building:
        write_export(model, model_dir, building, dtype, opset)
    return out


def load_for_export(model_dir: str | Path | None, out: Path):
    """(model, its checkpoint directory), after refusing an --out that is the checkpoint or a source that is an
    export already."""
    from codefusion.api import default_model_dir
    from codefusion.checkpoint import load_checkpoint

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    if out.resolve() == model_dir.resolve():
        raise ExportError(f"--out {out} is the checkpoint itself: export into another directory")
    if (model_dir / MANIFEST).is_file():
        raise ExportError(f"{model_dir} is already an export directory: pass the checkpoint it came from")
    model, _, _ = load_checkpoint(model_dir)  # CheckpointError (one line) for anything but a checkpoint
    return model, model_dir


def write_export(model, model_dir: Path, into: Path, dtype: str, opset: int) -> None:
    import shutil

    from codefusion.checkpoint import CONFIG, TOKENIZER

    for name in (CONFIG, TOKENIZER):
        shutil.copyfile(model_dir / name, into / name)
    export_graphs(model, into, dtype, opset, {CONFIG: "", TOKENIZER: ""})


@contextlib.contextmanager
def built_beside(out: Path):
    """A hidden, empty sibling of ``out`` to build in, moved onto ``out`` whole when the block ends (with --force
    the earlier export goes only then): a failed or interrupted build (Ctrl-C, SIGTERM) leaves ``out`` as it was
    and no half folder, here or there. Refused in one line before any work: an ``out`` that holds the current
    directory (the swap would leave the shell in a deleted folder) or whose parent is not writable."""
    import shutil

    out = out.resolve()  # a name to build beside
    if Path.cwd().resolve().is_relative_to(out):
        raise ExportError(f"--out {out} is the current directory or holds it, and an export replaces its --out "
                          "whole: run the command from outside it")
    ancestor = next(p for p in (out.parent, *out.parent.parents) if p.exists())  # where the sibling gets made
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out}: an export is built beside it, in {out.parent}, and {ancestor} is not "
                          "writable; choose an --out in a writable folder")
    building = out.with_name(f".{out.name}.partial")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        yield building
        _move_onto(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _move_onto(building: Path, out: Path) -> None:
    """Renames ``building`` to ``out``; an existing ``out`` goes aside first and is deleted once the new one is in
    place, or put back if it cannot be (one-line error either way)."""
    import shutil

    if not out.exists():
        building.rename(out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    try:
        out.rename(old)
    except OSError as e:  # a mount point (EBUSY), a folder another process holds: nothing moved yet
        raise ExportError(f"cannot replace --out {out} ({e.strerror or e}): is it a mount point? Export into a new "
                          "folder inside it") from None
    try:
        building.rename(out)
    except OSError as e:
        old.rename(out)
        raise ExportError(f"cannot move the new export onto --out {out} ({e.strerror or e}); the earlier one is "
                          "back in place") from None
    shutil.rmtree(old)


def _spec_json(spec: GraphSpec) -> dict:
    io = lambda ts: [[t.name, t.resolved(spec.dtype), list(t.shape)] for t in ts]  # noqa: E731
    return {"file": spec.file, "inputs": io(spec.inputs), "outputs": io(spec.outputs),
            "dims": {k: list(v) for k, v in spec.dims.items()}}


def _versions() -> dict:
    import onnx
    import onnxscript
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def export_summary(out: Path) -> str:
    m = json.loads((out / MANIFEST).read_text())
    size = sum((out / f).stat().st_size for f in m["files"]) / 2**20
    return (f"wrote {out}: {', '.join(g['file'] for g in m['graphs'].values())} (opset {m['opset']}, {m['dtype']}, "
            f"{size:.1f} MiB) in {m['export_s']['total']:.1f} s; onnx.checker passed")

