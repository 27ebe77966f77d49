"""The ``onnxruntime`` backend: the sampling loop over the exported graphs (specs.py).

    encode   one encoder run → E_s, per-block cross K/V, length logits        (OrtMemory)
    step     z from the Philox stream (torch's Box–Muller; on CPU its words from C++), then one denoiser run
             that returns x̂0 and the fused update x_next = a·x̂0 + b·x_t + c·x̂0_prev + σ·z (★ in the graph)
    decode   one decoder run → argmax ids and their log-probabilities

Every run goes through an IOBinding over torch tensors (``data_ptr``), so inputs are not copied and
outputs land in memory we own: the step's two outputs are preallocated per (B, n) and used in turn
(ping-pong), so a state stays valid until the step after next (``run`` only keeps the latest).

Built from an export directory (``CodeFusion.from_pretrained(DIR, backend="onnxruntime")``), or from a
torch model through the registry (bench, ``CodeFusion(model, tok, "onnxruntime")``): then the model is
exported to a temporary directory first, which is the cold start.
Providers: CPU here; on ``cuda`` the TensorRT and CUDA providers of onnxruntime-gpu when present.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from codefusion.backends.base import Backend, Memory, SamplerState
from codefusion.diffusion.solvers import at, update
from codefusion.noise import gaussian
from codefusion.tokenizer import SourceBatch

from .manifest import ExportedModel, ExportError, ProviderError
from .specs import GraphSpec, graph_specs

NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.bool: np.bool_}
ORT_TYPES = {torch.float32: "tensor(float)", torch.float16: "tensor(float16)", torch.int64: "tensor(int64)",
             torch.bool: "tensor(bool)"}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(device: torch.device, available: list[str] | None = None) -> list[str]:
    """CPU on cpu; on cuda every GPU provider present (TensorRT first), CPU as the fallback for the rest."""
    available = ort.get_available_providers() if available is None else available
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if not gpu:
        raise ProviderError(f"device {device} needs onnxruntime's CUDAExecutionProvider, but this onnxruntime has "
                            f"only {', '.join(available)}: pip install onnxruntime-gpu, or use --device cpu")
    return [*gpu, "CPUExecutionProvider"]


@dataclass(frozen=True, eq=False)
class OrtMemory(Memory):
    kv: tuple[torch.Tensor, ...] = ()  # the encoder's kv_den_* then kv_dec_* outputs, each (B, h, S, d/h)
    length_logits: torch.Tensor | None = None  # (B, n_max) fp32, when the model has a length head
    cond: torch.Tensor | None = None  # (B, 1, d) the denoiser's pooled condition, when the model has one

    def repeat_interleave(self, k: int) -> "OrtMemory":
        rep = lambda x: None if x is None else x.repeat_interleave(k, 0)  # noqa: E731
        return replace(super().repeat_interleave(k), kv=tuple(rep(t) for t in self.kv),
                       length_logits=rep(self.length_logits), cond=rep(self.cond))


class Graph:
    """One ONNX Runtime session and its spec; ``run`` binds torch tensors in and out by pointer."""

    def __init__(self, file: Path, spec: GraphSpec, providers: list[str], device: torch.device):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        self.session = ort.InferenceSession(str(file), options, providers=providers)
        self.spec, self.device = spec, device
        # the manifest's dtype (not hashed) must be the graphs' own: else the first run fails deep inside ORT
        have = {i.name: i.type for i in self.session.get_inputs()}
        for t in spec.inputs:
            want = ORT_TYPES[t.torch_dtype(spec.dtype)]
            if have.get(t.name, want) != want:
                raise ExportError(f"{file}: input {t.name} is {have[t.name]}, but the manifest's dtype {spec.dtype} "
                                  f"needs {want}: the manifest does not describe its graphs; export again")

    def empty(self, name: str, sizes: dict) -> torch.Tensor:
        t = next(t for t in self.spec.outputs if t.name == name)
        shape = tuple(d if isinstance(d, int) else sizes[d] for d in t.shape)
        return torch.empty(shape, dtype=t.torch_dtype(self.spec.dtype), device=self.device)

    def run(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        binding = self.session.io_binding()
        keep = []  # contiguous copies must outlive the run
        for name, t in inputs.items():
            t = t.contiguous()
            keep.append(t)
            binding.bind_input(name, t.device.type, t.device.index or 0, NUMPY[t.dtype], tuple(t.shape), t.data_ptr())
        for name, t in outputs.items():
            binding.bind_output(name, t.device.type, t.device.index or 0, NUMPY[t.dtype], tuple(t.shape), t.data_ptr())
        if self.device.type == "cuda":  # ORT runs on its own CUDA stream: torch's writes must have landed
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)  # returns once the outputs are written


def load_export(path: Path, check_files: bool = True):
    import json

    from codefusion.checkpoint import CONFIG, TOKENIZER
    from codefusion.tokenizer import CodeTokenizer

    model = ExportedModel(path, check_files)
    for name in (CONFIG, TOKENIZER):
        if name not in model.manifest["files"]:
            raise ExportError(f"{path} holds graphs only (no {name}): export a checkpoint with `codefusion export onnx`")
    return model, CodeTokenizer.load(path / TOKENIZER), json.loads((path / CONFIG).read_text(encoding="utf-8"))


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        self._tmp, self.providers = None, self._providers(device)  # a missing provider fails before any export
        if not isinstance(model, ExportedModel):  # a torch model from the registry: export it first
            model = self._export(model, dtype)
        export_dtype = model.manifest["dtype"]
        if dtype not in (torch.float32, getattr(torch, export_dtype)):
            also = "" if export_dtype == "float32" else f" or {export_dtype}"
            raise ExportError(f"this export runs in {export_dtype}: pass --dtype float32 (the default){also}, or "
                              "export again with the other --dtype (fp32 | fp16)")
        super().__init__(model, device, getattr(torch, export_dtype))
        if device.type == "cpu":  # the noise's Philox words in one C++ pass (equal integers) instead of ~80 torch ops
            from codefusion.kernels.solver_step_cpu import philox_words_cpu
            self.philox_words = philox_words_cpu
        self.specs = graph_specs(model.cfg, export_dtype)
        self.graphs = {n: self._graph(n, s) for n, s in self.specs.items()}

    def _providers(self, device: torch.device) -> list[str]:
        return choose_providers(device)

    def _graph(self, name: str, spec: GraphSpec) -> Graph:
        return Graph(self.model.graph_file(name), spec, self.providers, self.device)

    @staticmethod
    def load_export(path: Path):
        """(model stand-in, tokenizer, checkpoint config) of an export directory: what from_pretrained needs."""
        return load_export(path)

    def _export(self, model, dtype: torch.dtype) -> ExportedModel:
        from .onnx import export_graphs

        if dtype not in (torch.float32, torch.float16):
            raise ExportError(f"the onnxruntime backend runs fp32 (or fp16 on GPU) exports, not {dtype}: "
                              "use --dtype float32")
        self._tmp = tempfile.TemporaryDirectory(prefix="codefusion-ort-")  # removed with the backend
        export_graphs(model, Path(self._tmp.name), "float16" if dtype == torch.float16 else "float32")
        return ExportedModel(self._tmp.name, check_files=False)

    def encode(self, source: SourceBatch) -> OrtMemory:
        ids, mask = source.ids.to(self.device), source.mask.to(self.device)
        graph, sizes = self.graphs["encoder"], {"batch": ids.shape[0]}
        out = {t.name: graph.empty(t.name, sizes) for t in graph.spec.outputs}
        graph.run({"src_ids": ids, "src_mask": mask}, out)
        kv = tuple(t for n, t in out.items() if n.startswith("kv_"))  # spec order: N's blocks, then D's
        return OrtMemory(out["memory"], mask, kv, out.get("length_logits"), out.get("cond_den"))

    def _kv(self, memory: OrtMemory, graph: str) -> dict[str, torch.Tensor]:
        """The per-request inputs of ``graph`` by name: its K/V from the memory's flat tuple, and for the
        denoiser the pooled condition when the model has one."""
        n_den = 2 * self.cfg.denoiser_layers
        names = [t.name for t in self.specs[graph].inputs if t.name.startswith("kv_")]
        out = dict(zip(names, memory.kv[:n_den] if graph == "denoiser" else memory.kv[n_den:]))
        if graph == "denoiser" and memory.cond is not None:
            out["cond_den"] = memory.cond
        return out

    def lengths(self, memory: OrtMemory, quantile: float) -> torch.Tensor | None:
        if memory.length_logits is None:
            return None
        from codefusion.model.length import length_quantile
        return length_quantile(memory.length_logits, quantile).cpu()

    def step(self, state: SamplerState, i) -> SamplerState:
        table = state.table
        t = at(table.timesteps, i).reshape(())
        coef = torch.cat([at(c, i).reshape(1) for c in (table.a, table.b, table.c, table.sigma)])  # (4,) fp32
        z = gaussian(state.seeds, state.samples, t, tuple(state.x_t.shape[1:]), words=self.philox_words)
        graph = self.graphs["denoiser"]
        # fresh outputs every step: a state handed out stays valid however long its caller keeps it (reusing two
        # buffers in turn overwrote a state held across two steps, e.g. bench parity's forced step)
        out = {o.name: graph.empty(o.name, {"batch": state.x_t.shape[0], "n": state.x_t.shape[1]})
               for o in graph.spec.outputs}
        graph.run({"x_t": state.x_t, "x0_prev": state.x0_hat, "timestep": t.reshape(1), "coef": coef, "noise": z,
                   "src_mask": state.memory.mask, **self._kv(state.memory, "denoiser")}, out)
        x0, x_next = out["x0_hat"], out["x_next"]
        if table.clamp != "none":  # x̂0 is rounded before the update: redo (★) in torch on the rounded x̂0
            x0 = self.round_x0(x0, state.memory, table.clamp)
            x_next = update(state.x_t, x0, state.x0_hat, table, i, z)
        return replace(state, x_t=x_next, x0_hat=x0)

    def denoise(self, x_t, t, memory: OrtMemory, x0_prev):
        """x̂0 alone (verification, callers of the base seam): the fused step with zero coefficients."""
        graph, sizes = self.graphs["denoiser"], {"batch": x_t.shape[0], "n": x_t.shape[1]}
        out = {o.name: graph.empty(o.name, sizes) for o in graph.spec.outputs}
        graph.run({"x_t": x_t, "x0_prev": x0_prev, "timestep": t.reshape(1).to(torch.int64),
                   "coef": torch.zeros(4, device=self.device), "noise": torch.zeros_like(x_t), "src_mask": memory.mask,
                   **self._kv(memory, "denoiser")}, out)
        return out["x0_hat"]

    def decode(self, x0: torch.Tensor, memory: OrtMemory) -> tuple[torch.Tensor, torch.Tensor]:
        graph, sizes = self.graphs["decoder"], {"batch": x0.shape[0], "n": x0.shape[1]}
        out = {o.name: graph.empty(o.name, sizes) for o in graph.spec.outputs}
        graph.run({"x0": x0, "src_mask": memory.mask, **self._kv(memory, "decoder")}, out)
        return out["token_ids"], out["logprobs"]

    def embedding(self, device: torch.device) -> torch.Tensor:
        return self.model.embed_weight.to(device)  # (V, d) fp32, from embedding.safetensors
