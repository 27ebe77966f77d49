"""``codefusion export verify``: the exported graphs against the eager model they came from.

    graphs       each graph's spec sample inputs (batch 3, a short and the opt length): eager module
                 (graphs.py, fp32 torch) vs ONNX Runtime → max |Δ| per output (ids: mismatches)
    end_to_end   real prompts through ``reference`` and ``onnxruntime`` with the same seeds and schedule:
                 max |Δx̂0| over every step, token agreement of the decoded ids, program agreement,
                 length-bucket agreement (the length head runs inside the encoder graph)
    tensorrt     the same when the ``tensorrt`` package, a GPU and engines are present; else says why not
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from codefusion.backends import get_backend
from codefusion.diffusion.loop import initial_state
from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table

from .manifest import ExportedModel, ExportError, weights_sha256
from .ort import Graph, OrtBackend, choose_providers, load_export

CPU = torch.device("cpu")
PROMPTS = {  # written for these checks: a spread of lengths and topics
    "bash": ["list all files in the current directory", "find txt files modified today",
             "count the lines in a.txt", "show free disk space in human readable form",
             "delete every .tmp file under /var/tmp recursively", "print the working directory",
             "search for foo in all log files", "sort the numbers in f and drop duplicates"],
    "python": ["sum a list x", "reverse the list x", "read the file f into a string", "sort dict d by value"],
    "cf": ["values above 10", "text contains error", "between 1 and 5", "the top value"],
}


def load_pair(export_dir: str | Path, model_dir: str | Path | None):
    """(exported model, tokenizer, the checkpoint's torch model); refuses a --model whose weights differ."""
    from codefusion.api import default_model_dir
    from codefusion.checkpoint import load_checkpoint

    exported, tokenizer, _ = load_export(Path(export_dir))
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    model, _, _ = load_checkpoint(model_dir)
    if weights_sha256(model) != exported.manifest["weights_sha256"]:
        raise ExportError(f"{export_dir} was not exported from {model_dir} (the weights differ): pass the "
                          "checkpoint it came from as --model")
    return exported, tokenizer, model


def graph_errors(exported: ExportedModel, model) -> dict[str, dict[str, float]]:
    """Max |eager − ORT| per output of every graph, on the spec's sample inputs (batch 3, n = 5 and opt)."""
    from .graphs import build_graphs
    from .specs import DTYPES, graph_specs

    dtype = exported.manifest["dtype"]
    specs, modules = graph_specs(model.cfg, dtype), build_graphs(model, DTYPES[dtype])
    report = {}
    for name, spec in specs.items():
        graph = Graph(exported.graph_file(name), spec, choose_providers(CPU), CPU)
        errs: dict[str, float] = {}
        for n in sorted({min(5, spec.dims["n"][2]), spec.dims["n"][1]}):
            inputs = spec.sample_inputs(batch=3, n=n, seed=n)
            sizes = {"batch": 3, "n": n}
            out = {t.name: graph.empty(t.name, sizes) for t in spec.outputs}
            graph.run(inputs, out)
            with torch.no_grad():
                eager = modules[name](*inputs.values())
            for t, ref in zip(spec.outputs, eager):
                got = out[t.name]
                err = (got != ref).sum() if t.dtype == "int64" else (got.double() - ref.double()).abs().max()
                errs[t.name] = max(errs.get(t.name, 0.0), float(err))
        report[name] = errs
    return report


def end_to_end(ref, other, tokenizer, prompts: list[str], lang: str, steps: int, solver: str, seed: int,
               batch: int = 16) -> dict:
    """Both backends sample the same rows (seed, sample 0) stepwise; → max |Δx̂0|, agreements."""
    cfg, dev = ref.cfg, other.device
    table_a = step_table(NoiseSchedule.sqrt(cfg.diffusion_steps).respace(steps), solver)
    table_b = step_table(NoiseSchedule.sqrt(cfg.diffusion_steps, dev).respace(steps), solver)
    buckets = lambda lengths: [cfg.bucket_for(int(x)) for x in lengths]  # noqa: E731
    worst, tokens, same_tokens, programs, same_programs, same_length = 0.0, 0, 0, 0, 0, 0
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        src = tokenizer.encode_source(chunk, [lang] * len(chunk), cfg.max_source_len)
        mem_a, mem_b = ref.encode(src), other.encode(src)
        len_a, len_b = ref.lengths(mem_a, 0.9), other.lengths(mem_b, 0.9)
        same_length += len(chunk) if len_a is None else sum(x == y for x, y in zip(buckets(len_a), buckets(len_b)))
        n = cfg.max_target_len if len_a is None else max(buckets(len_a))
        seeds, samples = torch.full((len(chunk),), seed), torch.zeros(len(chunk), dtype=torch.int64)
        a = initial_state(ref, mem_a, table_a, seeds, samples, n)
        b = initial_state(other, mem_b, table_b, seeds.to(dev), samples.to(dev), n)
        for i in range(len(table_a)):
            a, b = ref.step(a, i), other.step(b, i)
            worst = max(worst, float((a.x0_hat - b.x0_hat.cpu()).abs().max()))
        ids_a, ids_b = ref.decode(a.x_t, a.memory)[0].cpu(), other.decode(b.x_t, b.memory)[0].cpu()
        tokens += ids_a.numel()
        same_tokens += int((ids_a == ids_b).sum())
        texts_a = [tokenizer.decode(r) for r in ids_a.tolist()]
        texts_b = [tokenizer.decode(r) for r in ids_b.tolist()]
        programs += len(chunk)
        same_programs += sum(x == y for x, y in zip(texts_a, texts_b))
    return {"prompts": len(prompts), "steps": steps, "solver": solver, "max_abs_dx0": worst,
            "token_agreement": same_tokens / tokens, "program_agreement": same_programs / programs,
            "length_agreement": same_length / len(prompts)}


def verify(export_dir: str | Path, model_dir: str | Path | None = None, prompts: list[str] | None = None,
           lang: str = "bash", steps: int = 20, solver: str = "ddpm", seed: int = 0) -> dict:
    exported, tokenizer, model = load_pair(export_dir, model_dir)
    prompts = prompts or PROMPTS[lang]
    ref = get_backend("reference")(model, CPU, torch.float32)
    report = {"export": str(export_dir), "opset": exported.manifest["opset"], "dtype": exported.manifest["dtype"],
              "graphs": graph_errors(exported, model)}
    ort_backend = OrtBackend(exported, CPU, torch.float32)
    report["onnxruntime"] = end_to_end(ref, ort_backend, tokenizer, prompts, lang, steps, solver, seed)
    report["tensorrt"] = _tensorrt(exported, ref, tokenizer, prompts, lang, steps, solver, seed)
    return report


def _tensorrt(exported, ref, tokenizer, prompts, lang, steps, solver, seed):
    if importlib.util.find_spec("tensorrt") is None:
        return "skipped: the tensorrt package is not installed"
    if not torch.cuda.is_available():
        return "skipped: no CUDA GPU"
    if "engines" not in exported.manifest:
        return "skipped: no engines in this export (codefusion export tensorrt)"
    from .tensorrt import TensorRTBackend
    trt = TensorRTBackend(exported, torch.device("cuda"), torch.float32)
    return end_to_end(ref, trt, tokenizer, prompts, lang, steps, solver, seed)
