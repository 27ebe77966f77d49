"""Compile-only check of every kernel for a GPU target, without a GPU: ``python -m codefusion.kernels.compile_check``.

Triton 3.6–3.9 lower to PTX and run the ptxas shipped in the wheel with no driver, so errors the
interpreter cannot see (bf16/fp16 ``tl.dot``, libdevice calls, layouts, shared-memory limits) surface on a
CPU machine. Each case is a specialization the backends launch at the ``paper`` and ``small`` shapes (the
block sizes the launchers pick for n ∈ {16, 32, 64, 128}, S = 64, d ∈ {256, 384}), compiled as a launch
compiles it: pointers and the strides and sizes that are multiples of 16 carry Triton's divisibility hint,
and an argument equal to 1 is a constant. ptxas then reports each kernel's registers and spills
(``ptxas -v``); a kernel that spills fails the check, since spilling costs what the fusion saves.

Must run without TRITON_INTERPRET (the interpreter replaces the jit functions). Prints one JSON object:
{"target", "triton", "kernels": [{"name", "ok", "seconds", "shared_bytes", "registers", "spill_bytes" |
"error"}]}; ``registers`` and ``spill_bytes`` are null where this Triton's ptxas cannot be run on its own.
"""
from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ATTENTION_SIZES = (16, 32, 64, 128)  # target lengths n the presets' length buckets reach
CROSS_S = 64  # max_source_len of every preset


def _signature(kernel, types: dict, constexprs: dict) -> dict:
    """Every argument of ``kernel``: its type from ``types`` (default i32) or "constexpr"."""
    names = inspect.signature(kernel.fn).parameters
    return {n: "constexpr" if n in constexprs else types.get(n, "i32") for n in names}


def _attrs(kernel, names: list[str]) -> dict:
    """Triton's divisibility-by-16 hint on ``names``, keyed by argument position, as a launch sets it."""
    params = list(inspect.signature(kernel.fn).parameters)
    return {(params.index(n),): [["tt.divisibility", 16]] for n in names}


def _attention_cases(kernel, blocks):
    q_strides = ("sq_b", "sq_h", "sq_n", "sk_b", "sk_h", "sk_s", "sv_b", "sv_h", "sv_s", "so_b", "so_h", "so_n")
    out = []
    # the presets' head dims: tiny 32, small 64, paper 64; 128 is the kernel's widest
    for dt, d in (("bf16", 32), ("bf16", 64), ("bf16", 128), ("fp16", 128), ("fp32", 32), ("fp32", 64)):
        types = {p: f"*{dt}" for p in ("q_ptr", "k_ptr", "v_ptr", "o_ptr")} | {"mask_ptr": "*u8", "qk_scale": "fp32"}
        seen = set()
        for n in ATTENTION_SIZES:
            for mask, S in ((False, n), (True, CROSS_S)):  # self-attention, masked cross-attention
                bm, bn = blocks(n, S, False, dt == "fp32")
                if (bm, bn, mask) in seen:
                    continue
                seen.add((bm, bn, mask))
                cx = dict(HAS_MASK=mask, HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, UPCAST=False, IEEE=dt == "fp32",
                          ROUND_BF16=False)
                # a (B, S) bool mask has unit stride along S: launched, that argument is the constant 1
                hints = [*q_strides, "n", "S", "sm_b"] + ([] if mask else ["sm_s"])
                cx |= {"sm_s": 1} if mask else {}
                out.append((f"attention[{dt},D={d},{bm}x{bn}{',mask' if mask else ''}]", kernel, types, cx,
                            ["q_ptr", "k_ptr", "v_ptr", "mask_ptr", "o_ptr", *hints]))
    return out


def cases():
    """(name, kernel, types, constexprs, hinted args): the specializations the backends launch on a GPU."""
    from .add_layernorm import _add_layernorm_kernel, block_rows
    from .attention import _attention_kernel, _blocks
    from .solver_step import _solver_step_kernel
    out = _attention_cases(_attention_kernel, _blocks)
    ptrs = ("x_ptr", "res_ptr", "pos_ptr", "table_ptr", "w_ptr", "b_ptr", "s_ptr", "y_ptr")
    for dt, d in (("bf16", 384), ("bf16", 256), ("fp32", 384)):
        types = {p: f"*{dt}" for p in ptrs} | {"t_ptr": "*i64", "eps": "fp32"}
        block_d = 1 << (d - 1).bit_length()
        for res, pos, time_ in ((False, True, True), (True, False, False)):  # a stack's first add, every later one
            cx = dict(HAS_RES=res, HAS_POS=pos, HAS_TIME=time_, BLOCK_R=block_rows(block_d, False), BLOCK_D=block_d,
                      ROUND_BF16=False)
            out.append((f"add_layernorm[{dt},d={d},{'res' if res else 'pos+time'}]", _add_layernorm_kernel, types, cx,
                        [*ptrs, "t_ptr", "rows", "n", "d"]))
    types = {p: "*fp32" for p in ("xt_ptr", "x0_ptr", "xp_ptr", "out_ptr", "a_ptr", "b_ptr", "c_ptr", "sigma_ptr")}
    types |= {p: "*i64" for p in ("t_ptr", "step_ptr", "seed_ptr", "sample_ptr")}
    for prev in (True, False):  # step_ptr points at step i of a table: not 16-byte aligned in general, no hint
        out.append((f"solver_step[{'dpmpp_2m' if prev else 'ddpm/ddim'}]", _solver_step_kernel, types,
                    dict(HAS_PREV=prev, BLOCK_G=256, PRECISE=True),
                    [p for p in types if p != "step_ptr"] + ["numel"]))
    return out


def _ptxas_report(ptx: str, arch: int) -> tuple[int | None, int | None]:
    """(registers, spill bytes stored + loaded) from ``ptxas -v`` on ``ptx``, with the ptxas Triton itself
    uses for ``arch``; (None, None) where that cannot be run."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        ptxas = get_ptxas(arch).path
    except Exception:  # noqa: BLE001 — another Triton layout: report nothing rather than guess
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}a", str(src), "-o", str(Path(tmp) / "k.o")],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        return None, None
    log = proc.stdout + proc.stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = sum(int(b) for b in re.findall(r"(\d+) bytes spill (?:stores|loads)", log))
    return (int(regs.group(1)) if regs else None), spills


def check_all(arch: int = 90, warp_size: int = 32) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, warp_size)
    rows = []
    for name, kernel, types, cx, hinted in cases():
        start = time.perf_counter()
        try:
            signature = _signature(kernel, types, cx)
            try:
                src = ASTSource(kernel, signature, constexprs=cx, attrs=_attrs(kernel, hinted))
            except TypeError:  # a Triton without per-argument attributes: compile unhinted
                src = ASTSource(kernel, signature, constexprs=cx)
            compiled = triton.compile(src, target=target, options={"num_warps": 4})
            registers, spills = _ptxas_report(compiled.asm["ptx"], arch)
            rows.append({"name": name, "ok": not spills, "seconds": round(time.perf_counter() - start, 2),
                         "shared_bytes": compiled.metadata.shared, "registers": registers, "spill_bytes": spills})
        except Exception as e:  # report every kernel, not just the first failure
            rows.append({"name": name, "ok": False, "error": f"{type(e).__name__}: {str(e)[-400:]}"})
    return {"target": f"cuda:sm_{arch}", "triton": triton.__version__, "kernels": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90)
    report = check_all(p.parse_args(argv).arch)
    print(json.dumps(report))
    return 0 if all(r["ok"] for r in report["kernels"]) else 1


if __name__ == "__main__":
    sys.exit(main())
