"""Bench output: one JSON file ({"environment", "rows"}), a Markdown table, and a PNG where it helps."""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path

import torch


def versions() -> dict:
    """Machine, thread count, versions and commit: what every bench record carries."""
    try:
        # the short hash, "-dirty" when the checkout has uncommitted changes (the figures are then not of that
        # commit's code); --exclude='*': never a tag name
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude=*"],
                                capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except OSError:
        commit = ""
    return {"machine": platform.machine(), **cpu(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "commit": commit or "unknown"}


CPU_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # what decides CPU matmul speed here


def cpu() -> dict:
    """The CPU's model name and the instruction-set flags of CPU_FLAGS it has (Linux's /proc/cpuinfo; elsewhere
    what platform knows): figures from two CPUs must not be compared, so each record names its own."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"cpu": platform.processor() or "unknown", "cpu_flags": []}
    field = lambda key: next((line.split(":", 1)[1].strip() for line in info.splitlines()  # noqa: E731
                              if line.split(":", 1)[0].strip() == key), "")
    flags = set(field("flags").split())
    return {"cpu": field("model name") or platform.processor() or "unknown",
            "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


def environment() -> dict:
    """``versions()`` plus the GPU, if any."""
    return {**versions(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def to_json(record: dict, indent: int | None = None) -> str:
    """Strict JSON: a value that is not finite (a p50 over no finished request) is written null, not NaN, which
    JSON parsers other than Python's refuse."""
    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        return [finite(x) for x in v] if isinstance(v, (list, tuple)) else v
    return json.dumps(finite(record), indent=indent, allow_nan=False)


def markdown(rows: list[dict], columns: list[str]) -> str:
    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):  # an interval
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return "–" if v is None else str(v)  # None: nothing to measure (e.g. no decided position)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def outputs(out_dir: str | Path, name: str) -> list[Path]:
    """The files a suite's run writes into ``out_dir`` (the plot only where there is one to draw)."""
    return [Path(out_dir) / f"{name}.{ext}" for ext in ("json", "md", "png")]


def write(out_dir: str | Path, name: str, rows: list[dict], columns: list[str], meta: dict) -> list[Path]:
    """``name``.json and .md; an earlier run's ``name``.png goes (this run draws its own, or none), so the folder
    never pairs new numbers with an old plot."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.png").unlink(missing_ok=True)
    env = environment()
    (out / f"{name}.json").write_text(to_json({"environment": env, **meta, "rows": rows}, indent=1) + "\n")
    header = f"# {name}\n\n{json.dumps(env)}\n\n{json.dumps(meta)}\n\n"
    (out / f"{name}.md").write_text(header + markdown(rows, columns))
    return [out / f"{name}.json", out / f"{name}.md"]


def plot_latency(rows: list[dict], path: Path) -> Path | None:
    """ms per step against batch, one line per (backend, dtype, steps, solver, clamp)."""
    if len({r["batch"] for r in rows}) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    line = lambda r: (r["backend"], r["dtype"], r["steps"], r.get("solver", ""), r.get("clamp") or "")  # noqa: E731
    for key in sorted({line(r) for r in rows}):
        sel = sorted((r for r in rows if line(r) == key), key=lambda r: r["batch"])
        ax.plot([r["batch"] for r in sel], [r["ms_per_step_p50"] for r in sel], "o-", label=" ".join(map(str, key)))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch (prompts)")
    ax.set_ylabel("ms per denoising step (p50)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
