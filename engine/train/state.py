"""Resumable training state without pickle: optimizer moments in safetensors, counters in JSON."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..checkpoint import replace_atomically
from ..errors import CheckpointError

OPTIMIZER, STATE = "optimizer.safetensors", "trainer_state.json"


def save_trainer_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, counters: dict) -> None:
    names = {id(p): n for n, p in model.named_parameters()}
    tensors, steps = {}, {}
    for p, s in optimizer.state.items():
        name = names[id(p)]
        tensors[f"{name}::exp_avg"] = s["exp_avg"].contiguous()
        tensors[f"{name}::exp_avg_sq"] = s["exp_avg_sq"].contiguous()
        steps[name] = float(s["step"])
    replace_atomically(path / OPTIMIZER, lambda tmp: save_file(tensors, str(tmp)))
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
