"""Compile-only check of every kernel for a GPU target, without a GPU: ``python -m codefusion.kernels.compile_check``.

Triton 3.6–3.9 lower to PTX and run the ptxas shipped in the wheel with no driver, so errors the
interpreter cannot see (bf16/fp16 ``tl.dot``, libdevice calls, layouts, shared-memory limits) surface on a
CPU machine. Must run without TRITON_INTERPRET (the interpreter replaces the jit functions). Prints one
JSON object: {"target": ..., "kernels": [{"name", "ok", "seconds", "shared_bytes" | "error"}]}.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time


def _signature(kernel, types: dict, constexprs: dict) -> dict:
    """Every argument of ``kernel``: its type from ``types`` (default i32) or "constexpr"."""
    names = inspect.signature(kernel.fn).parameters
    return {n: "constexpr" if n in constexprs else types.get(n, "i32") for n in names}


def cases():
    """(name, kernel, types, constexprs): the specializations the backends launch on a GPU."""
    from .add_layernorm import _add_layernorm_kernel
    from .attention import _attention_kernel
    from .solver_step import _solver_step_kernel
    out = []
    for dt, d, ieee in (("bf16", 64, False), ("fp16", 128, False), ("fp32", 32, True)):
        types = {p: f"*{dt}" for p in ("q_ptr", "k_ptr", "v_ptr", "o_ptr")} | {"mask_ptr": "*u8", "qk_scale": "fp32"}
        cx = dict(HAS_MASK=True, HEAD_DIM=d, BLOCK_M=64, BLOCK_N=64, UPCAST=False, IEEE=ieee)
        out.append((f"attention[{dt},D={d}]", _attention_kernel, types, cx))
    for dt in ("bf16", "fp32"):
        types = {p: f"*{dt}" for p in ("x_ptr", "res_ptr", "pos_ptr", "table_ptr", "w_ptr", "b_ptr", "s_ptr", "y_ptr")}
        types |= {"t_ptr": "*i64", "eps": "fp32"}
        cx = dict(HAS_RES=True, HAS_POS=True, HAS_TIME=True, BLOCK_R=8, BLOCK_D=512)
        out.append((f"add_layernorm[{dt}]", _add_layernorm_kernel, types, cx))
    types = {p: "*fp32" for p in ("xt_ptr", "x0_ptr", "xp_ptr", "out_ptr", "a_ptr", "b_ptr", "c_ptr", "sigma_ptr")}
    types |= {p: "*i64" for p in ("t_ptr", "step_ptr", "seed_ptr", "sample_ptr")}
    out.append(("solver_step", _solver_step_kernel, types, dict(HAS_PREV=True, BLOCK_G=256, PRECISE=True)))
    return out


def check_all(arch: int = 90, warp_size: int = 32) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, warp_size)
    rows = []
    for name, kernel, types, cx in cases():
        start = time.perf_counter()
        try:
            src = ASTSource(kernel, _signature(kernel, types, cx), constexprs=cx)
            compiled = triton.compile(src, target=target, options={"num_warps": 4})
            rows.append({"name": name, "ok": True, "seconds": round(time.perf_counter() - start, 2),
                         "shared_bytes": compiled.metadata.shared})
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
