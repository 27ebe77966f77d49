"""Training curve of one or more consecutive runs (pre-training, then fine-tuning) as a PNG.

    python -m codefusion.train.curve RUN_DIR [RUN_DIR …] --out curve.png

Top: the loss terms (CE, x̂0 MSE, decoder MSE) against the cumulative step, raw (faint) and averaged
over 20 logged points, with a line where each run starts. Bottom: the in-training dev check (few-step sampling
from noise: exact match and token F1), the figure that tells progress from loss alone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import CodeFusionError


def read_log(run: Path) -> tuple[list[dict], list[dict]]:
    path = run / "train_log.jsonl"
    if not path.is_file():
        raise CodeFusionError(f"{path} is missing: pass run directories written by `codefusion train`")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written by a run still in progress
            continue
    return [r for r in rows if "loss" in r], [r for r in rows if r.get("dev")]


def _smooth(y: np.ndarray, w: int = 20) -> np.ndarray:
    if len(y) < w:
        return y
    return np.convolve(y, np.ones(w) / w, mode="valid")


def draw(runs: list[Path]):
    """The figure of the runs in order (a ``matplotlib.figure.Figure``, outside pyplot: the caller's backend and
    open figures are left alone). Each loss term is labelled in the legend from the first run that logs it: a
    seq2seq teacher logs only CE, the denoiser's runs after it add the MSE terms."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    offset = 0
    labelled: set[str] = set()
    for run in runs:
        losses, devs = read_log(run)
        if not losses:
            raise CodeFusionError(f"{run / 'train_log.jsonl'} has no logged step")
        steps = np.array([r["step"] for r in losses]) + offset
        for term, color in (("ce", "C0"), ("mse", "C1"), ("dec_mse", "C2")):
            if any(term not in r for r in losses):
                continue
            raw = np.array([r[term] for r in losses])
            y = _smooth(raw)
            top.plot(steps, raw, color=color, alpha=0.2, lw=0.6)
            top.plot(steps[len(steps) - len(y):], y, color=color, label=None if term in labelled else term)
            labelled.add(term)
        if devs:
            ds = [d["step"] + offset for d in devs]
            first = not bottom.get_legend_handles_labels()[0]
            bottom.plot(ds, [d["dev"]["exact"] for d in devs], "o-", color="C3", label="exact" if first else None)
            bottom.plot(ds, [d["dev"]["token_f1"] for d in devs], "s-", color="C4", label="token F1" if first else None)
        for ax in (top, bottom):
            ax.axvline(offset, color="grey", lw=0.8, ls="--")
        top.text(offset, 0.98, f" {run.name}", transform=top.get_xaxis_transform(), va="top", ha="left",
                 fontsize=7, rotation=90)  # upright, so the names of short runs side by side stay legible
        offset = int(steps[-1])
    top.set_yscale("log")
    top.set_ylabel("loss term (smoothed)")
    top.legend(loc="upper right")
    bottom.set_ylabel("dev check")
    bottom.set_xlabel("optimizer step (cumulative)")
    bottom.set_ylim(0, 1)
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(loc="upper left")
    fig.tight_layout()
    return fig


def plot(runs: list[Path], out: Path) -> Path:
    fig = draw(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        print(plot(args.runs, args.out))
    except CodeFusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
