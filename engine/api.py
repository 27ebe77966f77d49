"""Public API: one object, one verb.

    cf = CodeFusion.from_pretrained(path_or_None, backend="torch", device="cpu", dtype="float32")
    out = cf.generate(prompts, GenerationConfig(...))      # → GenerationOutput

``generate`` reads as numbered phases: validate → tokenize → encode → sample → decode → rank.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import backends
from .batching import _chunk_stops, _GroupRun, _per_request, _Progress, _rank, _sample, select_rows
from .checkpoint import generation_defaults, load_checkpoint
from .config import LENGTH_QUANTILE, GenerationConfig
from .diffusion.loop import initial_state
from .diffusion.schedule import NoiseSchedule
from .diffusion.solvers import step_table
from .errors import CheckpointError, CodeFusionError
from .split import TraceJoin, join, split_by_length
from .validate import check_config, check_prompts, parse_device, parse_dtype, resolve_dtype


@dataclass
class GenerationOutput:
    texts: list[list[str]]  # per prompt: up to k distinct programs, best first
    scores: list[list[float]]  # their mean token log-probabilities
    seed: int
    timings: dict[str, float]  # encode_ms, sample_ms, decode_ms, total_ms, steps
    warnings: list[str] = field(default_factory=list)
    trace: list[dict] | None = None  # [{"step", "timestep", "texts": per prompt, per sample}]
    samples: list[list[str]] | None = None  # per prompt: all k decoded samples in sample order (repeats kept)
    # per prompt, sample order: the tokens each sample wrote before its first </s> or <pad> (what a length head
    # is fitted to; re-encoding the text can count fewer). Python API only: not in to_json
    sample_lengths: list[list[int]] | None = None

    def to_json(self) -> dict:
        """JSON-safe: a score that is not finite (a network that overflowed, e.g. in fp16) is null, not NaN,
        which strict JSON parsers reject."""
        scores = [[s if math.isfinite(s) else None for s in row] for row in self.scores]
        return {"texts": self.texts, "scores": scores, "seed": self.seed, "warnings": self.warnings,
                "timings": self.timings, "trace": self.trace, "samples": self.samples}


def destructive_warnings(texts: list[list[str]]) -> list[str]:
    """One warning per generated Bash program that deletes or overwrites data or stops processes
    (``eval.destructive``): the model writes what its training data held, ``-exec rm`` included, whether or
    not the request asked for it."""
    from .eval.destructive import destructive

    return [f"prompt {j}, program {i}: {', '.join(hits)}; read the command before you run it"
            for j, programs in enumerate(texts) for i, text in enumerate(programs) if (hits := destructive(text))]


def batch_key(config: GenerationConfig) -> GenerationConfig:
    """What requests must share to run in one denoising batch: the loop's fields (steps, solver, eta, clamp,
    early exit, trace steps). Seed, sample count, language and max_length are per request."""
    return replace(config, seed=0, num_samples=1, lang="bash", max_length=None)


def default_model_dir() -> Path:
    from codefusion.models import DEFAULT_DIR
    return DEFAULT_DIR


class CodeFusion:
    def __init__(self, model, tokenizer, backend: str = "torch", device: str = "cpu", dtype: str = "float32",
                 config: dict | None = None):
        self.tokenizer = tokenizer
        self.cfg = model.cfg
        self.config = config or {}
        # what a request with clamp=None gets: the checkpoint's "generation" defaults (checked on load)
        self.default_clamp = generation_defaults(self.config).get("clamp", "none")
        device = parse_device(device)
        dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
        self.backend = backends.get_backend(backend)(model, device, parse_dtype(dtype))
        # requests without max_length run at the bucket holding this share of the length head's distribution:
        # lower runs shorter (faster) and truncates more often (see the README's length-bucket table)
        self.length_quantile = LENGTH_QUANTILE

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, backend: str = "torch", device: str = "cpu",
                        dtype: str = "float32") -> "CodeFusion":
        """Load a checkpoint directory; ``None`` loads the embedded default model. The default backend,
        ``torch`` in fp32, gives the ``reference`` oracle's numbers (bit for bit on the default model here,
        README "Parity") at a fraction of its cost; ``dtype="bfloat16"`` is the fast one where the hardware has
        bf16 (a GPU, or a CPU with AMX / AVX512-BF16), and ``"auto"`` picks it there and fp32 elsewhere."""
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise CheckpointError(f"path must be a checkpoint directory (str or Path) or None for the embedded "
                                  f"model, got {type(path).__name__}")
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

    def resolve(self, config: GenerationConfig) -> GenerationConfig:
        """``config`` with the fields it leaves to the model (clamp None) set to this model's defaults."""
        return config if config.clamp is not None else replace(config, clamp=self.default_clamp)

    def generate(self, prompts: list[str] | str, config: GenerationConfig | None = None,
                 progress=None) -> GenerationOutput:
        return self.generate_many([(prompts, GenerationConfig() if config is None else config)], progress=progress)[0]

    def generate_many(self, requests: list[tuple[list[str] | str, GenerationConfig]],
                      on_trace=None, progress=None) -> list[GenerationOutput]:
        """Several requests in as few denoising batches as possible (the server's dynamic batching).

        They must agree on the loop's GenerationConfig fields (``batch_key``); seed, num_samples, lang and
        max_length may differ. Every row keeps its own (seed, sample) noise key and each prompt runs at its
        own length bucket, the one the length head gives it (a request whose prompts fall in several buckets
        is split, and its answers joined back in prompt order; on the ``torch`` backend every bucket runs in
        one loop, ``Backend.run_groups``), so in fp32 each prompt's answer equals ``generate`` of that prompt
        alone; in bf16 a product's rounding depends on its row count (the kernel the library picks), so a prompt
        near a tie can change with its neighbours (README, "Python API": 1 of 64 Bash dev prompts here).
        ``on_trace(r, entry)``, if given, is called as soon as request r's loop reaches each of its
        ``trace_steps`` (entry as in ``GenerationOutput.trace``), while the loop goes on: streaming.
        ``progress(done, total)``, if given, is called as the denoising steps complete (the loop then runs in
        ~batching.PROGRESS_CHUNKS chunks, one host sync each; totals count every loop, e.g. one per length bucket; an
        early exit stops short of the total)."""
        t_start = time.perf_counter()
        # 1. validate
        try:  # any iterable of pairs: a list, zip(prompts, configs), a generator
            requests = [(p, c) for p, c in requests]
        except (TypeError, ValueError):
            raise CodeFusionError("each request of generate_many is a (prompts, GenerationConfig) pair") from None
        if not requests:
            raise CodeFusionError("generate_many needs a non-empty list of (prompts, config) requests")
        if progress is not None and not callable(progress):
            raise CodeFusionError(f"progress must be a callable progress(done, total), got {type(progress).__name__}")
        if on_trace is not None and not callable(on_trace):
            raise CodeFusionError(f"on_trace must be a callable on_trace(r, entry), got {type(on_trace).__name__}")
        reqs = [(check_prompts(p), self.resolve(check_config(c, self.cfg, self.backend.name))) for p, c in requests]
        for _, c in reqs:
            if batch_key(c) != batch_key(reqs[0][1]):
                raise CodeFusionError("requests batched together must share steps, solver, eta, clamp, early_exit "
                                      "and trace_steps: split them by batch_key(config)")
        config = reqs[0][1]
        # 2. tokenize every prompt of every request
        prompts = [p for ps, _ in reqs for p in ps]
        langs = [c.lang for ps, c in reqs for _ in ps]
        source = self.tokenizer.encode_source(prompts, langs, self.cfg.max_source_len)
        first = [sum(len(ps) for ps, _ in reqs[:r]) for r in range(len(reqs))]  # request r's first prompt
        warnings = [[f"prompt {j} truncated to {self.cfg.max_source_len} tokens"
                     for j in range(len(ps)) if source.truncated[first[r] + j]] for r, (ps, _) in enumerate(reqs)]
        # 3. encode once; each prompt's target length: a request is split into parts, one per length bucket of
        # its prompts (a part's prompts are ``index``: call-wide), so no prompt runs at a neighbour's length
        memory = self.backend.encode(source)
        predict = any(c.max_length is None for _, c in reqs)
        lengths = self.backend.lengths(memory, self.length_quantile) if predict else None
        parts, index, owner, keep = split_by_length(reqs, first, lengths, self.cfg)
        groups: dict[int, list[int]] = {}  # per length bucket: its parts
        for q, n in enumerate(keep):
            groups.setdefault(self.cfg.bucket_for(n), []).append(q)
        self.backend.synchronize()
        t_encoded = time.perf_counter()
        one_loop = len(groups) > 1 and not config.trace_steps and not config.early_exit
        bar = None if progress is None else _Progress(progress, config.steps * (1 if one_loop else len(groups)))
        if on_trace is not None:
            on_trace = TraceJoin(on_trace, owner, [len(ps) for ps, _ in reqs])
        if one_loop:  # 4–6, every bucket in one loop
            runs = [self._prepare(parts, members, index, keep, memory, n) for n, members in groups.items()]
            t0 = time.perf_counter()
            states, done = [run.state for run in runs], 0
            for stop in _chunk_stops(len(states[0].table), bar):
                states = self.backend.run_groups(states, done, stop)
                if bar:
                    bar.reach(self.backend, done, stop)
                done = stop
            self.backend.synchronize()
            t_sampled, rows = time.perf_counter(), sum(len(run.prompt_of) for run in runs)
            finished = [self._finish(parts, run, state, None, len(state.table), t0, t_sampled,
                                     rows if self.backend.groups_in_one_pass else len(run.prompt_of))
                        for run, state in zip(runs, states)]
        else:  # 4–6 per length bucket (trace and early exit stop and look at their own loop)
            finished = [self._generate_group(parts, members, index, keep, memory, n, on_trace, bar)
                        for n, members in groups.items()]
        by_part: list[GenerationOutput | None] = [None] * len(parts)
        for members, outs in zip(groups.values(), finished):
            for q, out in zip(members, outs):
                by_part[q] = out
        outputs = [join([(owner[q][1], by_part[q]) for q in range(len(parts)) if owner[q][0] == r], len(ps),
                        one_loop) for r, (ps, _) in enumerate(reqs)]
        for r, out in enumerate(outputs):
            out.warnings = warnings[r] + (destructive_warnings(out.texts) if reqs[r][1].lang == "bash" else [])
        total = round((time.perf_counter() - t_start) * 1e3, 3)
        for out in outputs:
            out.timings = {"encode_ms": round((t_encoded - t_start) * 1e3, 3), **out.timings, "total_ms": total}
        return outputs

    def _prepare(self, reqs, members: list[int], index: list[list[int]], keep: list[int], memory,
                 n: int) -> "_GroupRun":
        """The initial state of one length bucket's rows (request, prompt, sample), request-major, so each
        request's rows are contiguous. ``index[r]``: request r's prompts, as indices into the encoded batch."""
        config, device = reqs[members[0]][1], self.backend.device
        prompt_of, seeds, samples, spans = [], [], [], []
        for r in members:
            ps, c = reqs[r]
            spans.append((len(prompt_of), len(ps), c.num_samples))
            for j in range(len(ps)):
                prompt_of += [index[r][j]] * c.num_samples
                seeds += [c.seed] * c.num_samples
                samples += range(c.num_samples)
        rows_memory = select_rows(memory, torch.tensor(prompt_of, device=device))
        table = step_table(NoiseSchedule.sqrt(self.cfg.diffusion_steps, device).respace(config.steps), config.solver,
                           config.eta, config.clamp)
        seeds = torch.tensor(seeds, dtype=torch.int64, device=device)
        samples = torch.tensor(samples, dtype=torch.int64, device=device)
        state = initial_state(self.backend, rows_memory, table, seeds, samples, n)
        return _GroupRun(members, spans, prompt_of, [keep[r] for r in members], state)

    def _generate_group(self, reqs, members: list[int], index: list[list[int]], keep: list[int], memory, n: int,
                        on_trace=None, bar: "_Progress | None" = None):
        """Sample, decode and rank the requests ``members`` (one length bucket) as one batch of rows."""
        t0 = time.perf_counter()
        run = self._prepare(reqs, members, index, keep, memory, n)

        def publish(entry: dict) -> None:
            for r, span in zip(members, run.spans):
                on_trace(r, _per_request(entry, *span))
        row_keep = [cut for cut, (_, n_prompts, k) in zip(run.keep, run.spans) for _ in range(n_prompts * k)]
        state, trace, steps_run = _sample(self.backend, self.tokenizer, run.state, reqs[members[0]][1], row_keep,
                                          publish if on_trace else None, bar)
        self.backend.synchronize()
        return self._finish(reqs, run, state, trace, steps_run, t0, time.perf_counter(), len(run.prompt_of))

    def _finish(self, reqs, run: "_GroupRun", state, trace, steps_run: int, t0: float, t_sampled: float,
                loop_rows: int) -> list[GenerationOutput]:
        """5–6: decode the group's final state, then detokenize and rank per request."""
        ids, logp = self.backend.decode(state.x_t, state.memory)
        ids, logp = ids.cpu(), logp.cpu()
        t_decoded = time.perf_counter()
        ms = lambda a, b: round((b - a) * 1e3, 3)  # noqa: E731
        outs = []
        for r, (a, n_prompts, k), cut in zip(run.members, run.spans, run.keep):
            rows = slice(a, a + n_prompts * k)
            texts, scores, sample_texts, lengths = _rank(self.tokenizer, ids[rows, :cut], logp[rows, :cut],
                                                         n_prompts, k)
            req_trace = None if trace is None else [_per_request(e, a, n_prompts, k) for e in trace]
            timings = {"sample_ms": ms(t0, t_sampled), "decode_ms": ms(t_sampled, t_decoded), "steps": steps_run,
                       "length": state.x_t.shape[1], "batch_rows": loop_rows}
            outs.append(GenerationOutput(texts, scores, reqs[r][1].seed, timings, [], req_trace, sample_texts, lengths))
        return outs

    def length_buckets(self, prompts: list[str], lang: str) -> list[int]:
        """The bucket each prompt would run at alone (with no max_length): lets a caller batch like with like."""
        source = self.tokenizer.encode_source(check_prompts(prompts), [lang] * len(prompts), self.cfg.max_source_len)
        lengths = self.backend.lengths(self.backend.encode(source), self.length_quantile)
        if lengths is None:
            return [self.cfg.max_target_len] * len(prompts)
        return [self.cfg.bucket_for(int(n)) for n in lengths]
