"""Resumable training state without pickle: optimizer moments in safetensors, counters in JSON; what --resume
checks before it continues a run; and the guard that keeps an interrupt out of the middle of an optimizer step."""
from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..checkpoint import CONFIG, WEIGHTS, replace_atomically
from ..errors import CheckpointError, CodeFusionError, Terminated
from .data import parse_repeat, select_datasets

OPTIMIZER, STATE = "optimizer.safetensors", "trainer_state.json"
# One id per save ("<step>-<random>"), stamped into every file of it (safetensors metadata, the JSON files): each
# file is replaced atomically but the set is not, so --resume refuses files of different saves.
SAVE = "save"
TORCH_RNG = "::torch_rng"  # torch's CPU generator state (uint8), beside the moments


def save_trainer_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, counters: dict,
                       draws: tuple[dict, torch.Tensor] | None = None) -> None:
    """``draws``: (the batches' draw state, torch's RNG state) after the saved step, which --resume puts back."""
    names = {id(p): n for n, p in model.named_parameters()}
    tensors, steps = {}, {}
    if draws is not None:
        counters = {**counters, "draws": draws[0]}
        tensors[TORCH_RNG] = draws[1]
    for p, s in optimizer.state.items():
        name = names[id(p)]
        tensors[f"{name}::exp_avg"] = s["exp_avg"].contiguous()
        tensors[f"{name}::exp_avg_sq"] = s["exp_avg_sq"].contiguous()
        steps[name] = float(s["step"])
    stamp = {SAVE: counters[SAVE]} if counters.get(SAVE) else None
    replace_atomically(path / OPTIMIZER, lambda tmp: save_file(tensors, str(tmp), metadata=stamp))
    replace_atomically(path / STATE, lambda tmp: tmp.write_text(json.dumps({**counters, "adam_steps": steps}, indent=1)
                                                                + "\n", encoding="utf-8"))


def load_trainer_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The counters of the saved run, its Adam moments put back on ``model``'s parameters; a one-line
    CheckpointError for a state that is unreadable or belongs to another module layout."""
    if not (path / STATE).is_file() or not (path / OPTIMIZER).is_file():
        raise CheckpointError(f"{path} holds no resumable training state ({STATE}, {OPTIMIZER}); "
                              "drop --resume to start a new run in another --out directory")
    try:
        counters = json.loads((path / STATE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / OPTIMIZER))
    except (ValueError, OSError, SafetensorError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: the training state is unreadable ({type(e).__name__}); the run cannot "
                              "be resumed: start a new one with --init") from None
    if not (isinstance(counters, dict) and isinstance(counters.get("step"), int)
            and isinstance(counters.get("adam_steps"), dict)):
        raise CheckpointError(f"{path / STATE} lacks the step counts (step, adam_steps): the run cannot be resumed: "
                              "start a new one with --init")
    missing = next((n for n in counters["adam_steps"] if f"{n}::exp_avg" not in tensors
                    or f"{n}::exp_avg_sq" not in tensors), None)
    if missing is not None:
        raise CheckpointError(f"{path / OPTIMIZER} lacks the moments of {missing!r}: the run cannot be resumed: "
                              "start a new one with --init")
    if TORCH_RNG in tensors and "draws" in counters:
        counters["torch_rng"] = tensors[TORCH_RNG]
    restored = 0
    for name, p in model.named_parameters():
        if name in counters["adam_steps"]:
            moments = tensors[f"{name}::exp_avg"], tensors[f"{name}::exp_avg_sq"]
            if any(m.shape != p.shape for m in moments):
                raise CheckpointError(f"{path}: the saved optimizer moments of {name!r} have shape "
                                      f"{tuple(moments[0].shape)}, the parameter {tuple(p.shape)}: the state belongs "
                                      "to another model")
            optimizer.state[p] = {"step": torch.tensor(counters["adam_steps"][name]),
                                  "exp_avg": moments[0].to(p.device), "exp_avg_sq": moments[1].to(p.device)}
            restored += 1
    if counters["adam_steps"] and not restored:
        raise CheckpointError(f"{path}: the saved optimizer state names none of this run's parameters (was the run "
                              "started with other flags, e.g. --aux-seq2seq?): resume with the flags it began with")
    return counters


# what --resume keeps
RESUME_FIXED = ("task", "datasets", "repeat", "batch_size", "seed", "freeze_encoder", "aux_seq2seq")


def run_identity(cfg) -> dict:
    """The RESUME_FIXED flags, in a form that compares meaning: the datasets as the sorted names they select
    (None: every one the data folder holds), --repeat as its parsed map."""
    out = {k: getattr(cfg, k) for k in RESUME_FIXED}
    out["datasets"] = ",".join(sorted(select_datasets(cfg.data, cfg.datasets)[1]))
    out["repeat"] = dict(sorted(parse_repeat(cfg.repeat).items()))
    return out


def same_out(recorded, out) -> bool:
    return recorded is not None and Path(str(recorded)).resolve() == Path(out).resolve()


def check_resume(cfg, counters: dict, meta: dict) -> None:
    """--resume continues the run as it began: the flags that shape it must match those it saved, and the
    checkpoint's weights must be those of the saved optimizer state (a save cut short leaves them apart)."""
    saved, now = counters.get("run") or {}, run_identity(cfg)
    changed = [k for k in RESUME_FIXED if k in saved and saved[k] != now[k]]
    if changed:
        k = changed[0]
        raise CodeFusionError(f"--resume continues {cfg.out} as it began, with --{k.replace('_', '-')} "
                              f"{saved[k]!r}, not {now[k]!r}: pass the same, or start a new run with --init")
    stamps = {**file_stamps(Path(cfg.out)), STATE: counters.get(SAVE), CONFIG: meta.get(SAVE)}
    # a run saved before stamps has none in any file; once one file has one, all must carry the same
    if any(stamps.values()) and len(set(stamps.values())) > 1:
        steps = ", ".join(f"{name} step {stamp.split('-')[0] if stamp else '?'}" for name, stamp in stamps.items())
        raise CodeFusionError(f"{cfg.out}: its files are from different saves ({steps}; a save was cut short): "
                              "resume from a copy saved whole, or start a new run with --init")
    entry = next((h for h in reversed(meta.get("history", [])) if same_out(h.get("out"), cfg.out)), None)
    if entry is not None and entry.get("steps") != counters["step"]:
        raise CodeFusionError(f"{cfg.out}: the weights are from step {entry.get('steps')} but the optimizer state "
                              f"from step {counters['step']} (a save was cut short): resume from a copy saved whole, "
                              "or start a new run with --init")


def file_stamps(path: Path) -> dict[str, str]:
    """The save id in each safetensors file of a run directory that has one."""
    from .seq2seq import SEQ2SEQ

    stamps = {}
    for name in (WEIGHTS, OPTIMIZER, SEQ2SEQ):
        if (path / name).is_file():
            try:
                with safe_open(str(path / name), "pt") as f:
                    stamps[name] = (f.metadata() or {}).get(SAVE)
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{path / name} is unreadable ({type(e).__name__}): the run cannot be "
                                      "resumed; start a new one with --init") from None
    return stamps


class DeferInterrupt:
    """Ctrl-C (or SIGTERM) while inside: held until the block ends, then raised, so an optimizer step is never
    half applied (the AdamW update goes parameter by parameter). Only the main thread receives signals; elsewhere
    a no-op."""

    def __enter__(self):
        self.pending, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                # an ignored signal stays ignored; one handled outside Python (None) could not be put back
                if signal.getsignal(sig) not in (signal.SIG_IGN, None):
                    self.previous[sig] = signal.signal(sig, lambda signum, _: setattr(self, "pending", signum))
        return self

    def __exit__(self, kind, value, tb):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.pending is not None and kind is None:
            raise Terminated if self.pending == signal.SIGTERM else KeyboardInterrupt
        return False
