"""Resumable training state without pickle: optimizer moments in safetensors, counters in JSON."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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
    save_file(tensors, str(path / OPTIMIZER))
    (path / STATE).write_text(json.dumps({**counters, "adam_steps": steps}, indent=1) + "\n", encoding="utf-8")


def load_trainer_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    if not (path / STATE).is_file() or not (path / OPTIMIZER).is_file():
        raise CheckpointError(f"{path} holds no resumable training state ({STATE}, {OPTIMIZER}); "
                              "drop --resume to start a new run in another --out directory")
    counters = json.loads((path / STATE).read_text(encoding="utf-8"))
    tensors = load_file(str(path / OPTIMIZER))
    for name, p in model.named_parameters():
        if name in counters["adam_steps"]:
            optimizer.state[p] = {"step": torch.tensor(counters["adam_steps"][name]),
                                  "exp_avg": tensors[f"{name}::exp_avg"].to(p.device),
                                  "exp_avg_sq": tensors[f"{name}::exp_avg_sq"].to(p.device)}
    return counters
