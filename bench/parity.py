"""``codefusion bench parity``: every backend × dtype against ``reference`` fp32, same prompts and seeds.

Both loops run in lockstep from the same x_T (the counter-based noise makes it identical on every
backend): each step's max |x̂0 − x̂0_ref| is recorded, then the final tokens are compared.

    max_abs_err          max over prompts, samples, steps and elements of |x̂0 − x̂0_ref|
    token_agreement      share of target positions whose final token equals the reference's
    program_agreement    share of (prompt, sample) programs identical to the reference's
"""
from __future__ import annotations

import copy

import torch
from tqdm import tqdm

from codefusion.backends import get_backend
from codefusion.diffusion.loop import initial_state
from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table
from codefusion.validate import parse_device, parse_dtype


def _lockstep(ref, other, tokenizer, prompts, lang, n, ref_table, other_table, seed, k):
    src = tokenizer.encode_source(prompts, [lang] * len(prompts), ref.cfg.max_source_len)
    rows = len(prompts) * k
    seeds = torch.full((rows,), seed, dtype=torch.int64)
    samples = torch.arange(k).repeat(len(prompts))
    a = initial_state(ref, ref.encode(src).repeat_interleave(k), ref_table, seeds, samples, n)
    b = initial_state(other, other.encode(src).repeat_interleave(k), other_table, seeds.to(other.device),
                      samples.to(other.device), n)
    worst = 0.0
    for i in range(len(ref_table)):
        a, b = ref.step(a, i), other.step(b, i)
        worst = max(worst, float((a.x0_hat - b.x0_hat.to(a.x0_hat.device)).abs().max()))
    ids_a, _ = ref.decode(a.x_t, a.memory)
    ids_b, _ = other.decode(b.x_t, b.memory)
    return worst, ids_a.cpu(), ids_b.cpu()


def parity(model, tokenizer, prompts: list[str], lang: str, backends: list[str], dtypes: list[str], steps: int,
           solver: str = "ddpm", seed: int = 0, num_samples: int = 1, n: int | None = None, batch: int = 16,
           device: str = "cpu", progress: bool = True) -> list[dict]:
    ref = get_backend("reference")(model, torch.device("cpu"), torch.float32)
    n = n or model.cfg.max_target_len
    table = step_table(NoiseSchedule.sqrt(model.cfg.diffusion_steps).respace(steps), solver)
    rows = []
    for name in backends:
        for dtype in dtypes:
            other = get_backend(name)(copy.deepcopy(model), parse_device(device), parse_dtype(dtype))
            other_table = step_table(NoiseSchedule.sqrt(model.cfg.diffusion_steps, other.device).respace(steps), solver)
            worst, same_tok, total_tok, same_prog, total_prog = 0.0, 0, 0, 0, 0
            bar = tqdm(range(0, len(prompts), batch), desc=f"parity {name} {dtype}", disable=not progress)
            for start in bar:
                chunk = prompts[start:start + batch]
                err, ids_a, ids_b = _lockstep(ref, other, tokenizer, chunk, lang, n, table, other_table, seed,
                                              num_samples)
                worst = max(worst, err)
                same_tok += int((ids_a == ids_b).sum())
                total_tok += ids_a.numel()
                texts_a = [tokenizer.decode(r) for r in ids_a.tolist()]
                texts_b = [tokenizer.decode(r) for r in ids_b.tolist()]
                same_prog += sum(x == y for x, y in zip(texts_a, texts_b))
                total_prog += len(texts_a)
            rows.append({"backend": name, "dtype": dtype, "device": str(other.device), "steps": steps, "solver": solver,
                         "prompts": len(prompts), "samples": num_samples, "n": n, "max_abs_err": worst,
                         "token_agreement": same_tok / total_tok, "program_agreement": same_prog / total_prog})
    return rows
