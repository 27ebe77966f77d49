"""``codefusion pack``: a shipping copy of a checkpoint (DESIGN §6): its weights in bf16 or fp32, the sampler default
its requests run with (config.json ``generation``), and optionally a blend with checkpoints of its lineage (blend.py)."""
from __future__ import annotations

from pathlib import Path

from .blend import blend, parse_blend
from .checkpoint import CONFIG, TOKENIZER, WEIGHTS, load_checkpoint, save_checkpoint
from .errors import CodeFusionError
from .validate import out_dir, parse_dtype


def pack(model_dir: str, out: str, dtype: str = "bfloat16", default_clamp: str | None = None,
         blend_specs: list[str] = (), force: bool = False) -> str:
    """Write the copy to ``out``; → the one-line report. ``blend_specs``: ``DIR=WEIGHT`` strings (parse_blend)."""
    if Path(out).resolve() == Path(model_dir).resolve():
        raise CodeFusionError(f"--out {out} is --model itself: write the copy to another directory")
    held = [name for name in (CONFIG, WEIGHTS, TOKENIZER) if (Path(out) / name).exists()]
    if held and not force:
        what = "a checkpoint" if CONFIG in held else held[0]
        raise CodeFusionError(f"{out} already holds {what}: choose another --out or pass --force")
    run_files = [name for name in ("trainer_state.json", "optimizer.safetensors", "seq2seq.safetensors")
                 if (Path(out) / name).exists()]
    if run_files:  # --resume there would train the packed weights with the run's optimizer state
        raise CodeFusionError(f"{out} is a training run's folder (it holds {run_files[0]}): pack into another --out")
    out_dir(out, create=False)
    others = parse_blend(list(blend_specs))
    model, tok, config = load_checkpoint(model_dir)
    meta, mix = config.get("meta") or {}, ""
    if others:
        entry = blend(model, tok, others)
        meta = {**meta, "history": [*meta.get("history", []), entry]}
        mix = f" ({entry['base_weight']:g}·{model_dir}" + "".join(f" + {w:g}·{p}" for p, w in others) + ")"
    generation = {**config.get("generation", {}), **({"clamp": default_clamp} if default_clamp else {})}
    path = save_checkpoint(out, model, tok, meta, dtype=parse_dtype(dtype), generation=generation)
    size = (path / WEIGHTS).stat().st_size / 2**20
    return f"wrote {path}: weights {size:.1f} MiB in {dtype}{mix}"
