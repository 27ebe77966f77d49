"""Public API: one object, one verb.

    cf = CodeFusion.from_pretrained(path_or_None, backend="reference", device="cpu", dtype="float32")
    out = cf.generate(prompts, GenerationConfig(...))      # → GenerationOutput

``generate`` reads as numbered phases: validate → tokenize → encode → sample → decode → rank.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import backends
from .checkpoint import load_checkpoint
from .config import GenerationConfig
from .diffusion.loop import initial_state, run
from .diffusion.schedule import NoiseSchedule
from .diffusion.solvers import step_table
from .errors import CheckpointError
from .validate import check_config, check_prompts, parse_device, parse_dtype


@dataclass
class GenerationOutput:
    texts: list[list[str]]  # per prompt: up to k distinct programs, best first
    scores: list[list[float]]  # their mean token log-probabilities
    seed: int
    timings: dict[str, float]  # encode_ms, sample_ms, decode_ms, total_ms, steps
    warnings: list[str] = field(default_factory=list)
    trace: list[dict] | None = None  # [{"step", "timestep", "texts": per prompt, per sample}]
    samples: list[list[str]] | None = None  # per prompt: all k decoded samples in sample order (repeats kept)

    def to_json(self) -> dict:
        return {"texts": self.texts, "scores": self.scores, "seed": self.seed, "warnings": self.warnings,
                "timings": self.timings, "trace": self.trace, "samples": self.samples}


LENGTH_QUANTILE = 0.9  # run at the bucket holding 90% of the predicted length distribution
EARLY_EXIT_CHECKS = 20  # early exit: decode x̂0 this many times over a run …
EARLY_EXIT_PATIENCE = 3  # … and freeze a sample whose tokens held for this many checks


def default_model_dir() -> Path:
    from codefusion.models import DEFAULT_DIR
    return DEFAULT_DIR


class CodeFusion:
    def __init__(self, model, tokenizer, backend: str = "reference", device: str = "cpu", dtype: str = "float32",
                 config: dict | None = None):
        self.tokenizer = tokenizer
        self.cfg = model.cfg
        self.config = config or {}
        self.backend = backends.get_backend(backend)(model, parse_device(device), parse_dtype(dtype))

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, backend: str = "reference", device: str = "cpu",
                        dtype: str = "float32") -> "CodeFusion":
        """Load a checkpoint directory; ``None`` loads the embedded default model."""
        if path is not None and (Path(path) / "manifest.json").is_file():  # `codefusion export` output: no torch weights
            backend_cls = backends.get_backend(backend)
            if not hasattr(backend_cls, "load_export"):
                raise CheckpointError(f"{path} is an export directory (graphs, no torch weights): run it with "
                                      "backend='onnxruntime' or 'tensorrt', or pass the checkpoint it came from")
            model, tokenizer, config = backend_cls.load_export(Path(path))
            return cls(model, tokenizer, backend, device, dtype, config)
        if path is None:
            path = default_model_dir()
            if not (path / "model.safetensors").is_file():
                raise CheckpointError("this install has no embedded default model yet: pass a checkpoint "
                                      "directory (train one with `codefusion train`, see README)")
        model, tokenizer, config = load_checkpoint(path)
        return cls(model, tokenizer, backend, device, dtype, config)

    def generate(self, prompts: list[str] | str, config: GenerationConfig | None = None) -> GenerationOutput:
        t_start = time.perf_counter()
        # 1. validate
        config = config or GenerationConfig()
        prompts = check_prompts(prompts)
        check_config(config, self.cfg, self.backend.name)
        k, warnings = config.num_samples, []
        # 2. tokenize
        source = self.tokenizer.encode_source(prompts, [config.lang] * len(prompts), self.cfg.max_source_len)
        warnings += [f"prompt {j} truncated to {self.cfg.max_source_len} tokens"
                     for j, cut in enumerate(source.truncated) if cut]
        # 3. encode (once per prompt), choose the target length, then one row per (prompt, sample)
        memory = self.backend.encode(source)
        n_max = self.target_length(memory, config)
        n = self.cfg.bucket_for(n_max)
        memory = memory.repeat_interleave(k)
        self.backend.synchronize()
        t_encoded = time.perf_counter()
        # 4. sample
        device = self.backend.device
        table = step_table(NoiseSchedule.sqrt(self.cfg.diffusion_steps, device).respace(config.steps), config.solver,
                           config.eta, config.clamp)
        rows = len(prompts) * k
        seeds = torch.full((rows,), config.seed, dtype=torch.int64, device=device)
        samples = torch.arange(k, dtype=torch.int64, device=device).repeat(len(prompts))
        state = initial_state(self.backend, memory, table, seeds, samples, n)
        state, trace, steps_run = self._sample(state, config, len(prompts), n_max)
        self.backend.synchronize()
        t_sampled = time.perf_counter()
        # 5. decode
        ids, logp = self.backend.decode(state.x_t, memory)
        ids, logp = ids[:, :n_max].cpu(), logp[:, :n_max].cpu()
        t_decoded = time.perf_counter()
        # 6. detokenize and rank
        texts, scores, sample_texts = self._rank(ids, logp, len(prompts), k)
        ms = lambda a, b: round((b - a) * 1e3, 3)  # noqa: E731
        timings = {"encode_ms": ms(t_start, t_encoded), "sample_ms": ms(t_encoded, t_sampled),
                   "decode_ms": ms(t_sampled, t_decoded), "total_ms": ms(t_start, time.perf_counter()),
                   "steps": steps_run, "length": n}
        return GenerationOutput(texts, scores, config.seed, timings, warnings, trace, sample_texts)

    def length_buckets(self, prompts: list[str], lang: str) -> list[int]:
        """The bucket each prompt would run at alone (with no max_length): lets a caller batch like with like."""
        source = self.tokenizer.encode_source(check_prompts(prompts), [lang] * len(prompts), self.cfg.max_source_len)
        lengths = self.backend.lengths(self.backend.encode(source), LENGTH_QUANTILE)
        if lengths is None:
            return [self.cfg.max_target_len] * len(prompts)
        return [self.cfg.bucket_for(int(n)) for n in lengths]

    def target_length(self, memory, config: GenerationConfig) -> int:
        """The user's max_length (output cut there); else the bucket of the length head's LENGTH_QUANTILE
        over the batch (the whole bucket kept: a prediction is not a limit); else the model's maximum."""
        if config.max_length is not None:
            return config.max_length
        lengths = self.backend.lengths(memory, LENGTH_QUANTILE)
        return self.cfg.max_target_len if lengths is None else self.cfg.bucket_for(int(lengths.max()))

    def _sample(self, state, config: GenerationConfig, n_prompts: int, n_max: int):
        """Run the loop → (state, trace, steps run). With ``trace_steps``, stop after each requested step
        count and decode x̂0; with ``early_exit``, stop once every sample's tokens have settled."""
        if config.early_exit:
            state, steps_run = self._sample_early_exit(state)
            return state, None, steps_run
        if not config.trace_steps:
            return run(self.backend, state), None, len(state.table)
        trace, done = [], 0
        for stop in sorted(set(config.trace_steps)):
            state = run(self.backend, state, done, stop)
            done = stop
            ids, _ = self.backend.decode(state.x0_hat, state.memory)
            flat = [self.tokenizer.decode(row) for row in ids[:, :n_max].cpu().tolist()]
            k = config.num_samples
            trace.append({"step": stop, "timestep": int(state.table.timesteps[stop - 1]),
                          "texts": [flat[p * k:(p + 1) * k] for p in range(n_prompts)]})
        return run(self.backend, state, done), trace, len(state.table)

    def _sample_early_exit(self, state):
        """DESIGN §3: every K/EARLY_EXIT_CHECKS steps decode x̂0; a sample whose tokens were unchanged for
        EARLY_EXIT_PATIENCE checks is frozen (its x̂0 becomes its result, by a masked where); the loop
        stops when all are. One host sync per check, none inside the chunks."""
        K = len(state.table)
        every = -(-K // EARLY_EXIT_CHECKS)  # ceil: at most EARLY_EXIT_CHECKS checks
        frozen = torch.zeros(state.x_t.shape[0], dtype=torch.bool, device=state.x_t.device)
        stable = torch.zeros_like(frozen, dtype=torch.int64)
        result, last, done = state.x_t, None, 0
        while done < K:
            state = run(self.backend, state, done, min(done + every, K))
            done = min(done + every, K)
            if done == K:
                break
            ids, _ = self.backend.decode(state.x0_hat, state.memory)
            if last is not None:
                stable = torch.where((ids == last).all(dim=1), stable + 1, 0)
            last = ids
            settle = (stable >= EARLY_EXIT_PATIENCE) & ~frozen
            result = torch.where(settle[:, None, None], state.x0_hat, result)
            frozen = frozen | settle
            if bool(frozen.all()):
                break
        return replace(state, x_t=torch.where(frozen[:, None, None], result, state.x_t)), done

    def _rank(self, ids: torch.Tensor, logp: torch.Tensor, n_prompts: int, k: int):
        """Score = mean log-prob up to and including the first </s>; dedupe; best first (ties: sample order)."""
        texts, scores, samples = [], [], []
        for p in range(n_prompts):
            best: dict[str, float] = {}
            samples.append([])
            for row in range(p * k, (p + 1) * k):
                row_ids = ids[row].tolist()
                length = min(self.tokenizer.content_length(row_ids) + 1, len(row_ids))
                score = float(logp[row, :length].mean())
                text = self.tokenizer.decode(row_ids)
                samples[-1].append(text)
                if text not in best or score > best[text]:
                    best[text] = score
            ranked = sorted(best.items(), key=lambda kv: -kv[1])
            texts.append([t for t, _ in ranked])
            scores.append([round(s, 6) for _, s in ranked])
        return texts, scores, samples
