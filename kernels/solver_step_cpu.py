"""CPU twin of kernels/solver_step.py: the C++ kernel in cpu/solver_step.cpp (pybind11 + OpenMP), built on
first use with torch.utils.cpp_extension (cached under ~/.cache/torch_extensions, a few seconds once), with
kernels.reference.solver_step — pure torch — as the fallback where no compiler is present.

Why built lazily and not by setup.py: CI installs with pip's build isolation, where neither torch nor
pybind11 is importable at build time (pybind11 headers ship inside torch), and a build that needs them
would have to become a hard build requirement. Building at first use keeps ``pip install`` unchanged
and picks the host's instruction set (-march=native: AVX-512 where present), which a wheel could not.
Set CODEFUSION_NO_CPP=1 to force the torch fallback.

Same signature and numbers as the Triton op, up to a few ulps of torch's and the GPU's log/cos/sin (the C++ ones
are correctly rounded): tests/test_kernels.py checks C++, torch and interpreted Triton against each other.
"""
from __future__ import annotations

import functools
import os
import platform
import warnings
from pathlib import Path

import torch

from ._common import check
from .reference import solver_step as _torch_solver_step

SOURCE = Path(__file__).with_name("cpu") / "solver_step.cpp"
# -ffp-contract=off: no FMA contraction, so the update rounds like torch's ops. -fno-math-errno and
# -fno-trapping-math let the compiler vectorise the Box–Muller loop (sqrt without errno, branch-free selects);
# neither changes a result. 512-bit vectors on x86 (an option only x86 compilers know): GCC's default on Intel is
# 256; 512 is 1.12–1.15× faster here (AVX-512 Xeon).
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
         *(["-mprefer-vector-width=512"] if platform.machine().lower() in ("x86_64", "amd64") else [])]


@functools.cache
def extension():
    """The compiled module, or None (no compiler, build error, CODEFUSION_NO_CPP=1) with one warning."""
    if os.environ.get("CODEFUSION_NO_CPP", "0") not in ("", "0"):
        return None
    try:
        from torch.utils.cpp_extension import load
        return load(name="codefusion_solver_step_cpu", sources=[str(SOURCE)], extra_cflags=FLAGS,
                    extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # no compiler / ninja / headers: the torch version computes the same numbers
        warnings.warn(f"C++ solver_step unavailable ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "using the torch version", RuntimeWarning, stacklevel=2)
        return None


def solver_step_cpu(x_t: torch.Tensor, x0_hat: torch.Tensor, x0_prev: torch.Tensor, a: torch.Tensor,
                    b: torch.Tensor, c: torch.Tensor, sigma: torch.Tensor, timesteps: torch.Tensor, step: torch.Tensor,
                    seeds: torch.Tensor, samples: torch.Tensor, has_prev: bool = True) -> torch.Tensor:
    """x_prev (B, n, d) fp32 of (★) with the counter-based z, on CPU tensors; arguments as kernels.solver_step."""
    ext = extension()
    if ext is None:
        return _torch_solver_step(x_t, x0_hat, x0_prev, a, b, c, sigma, timesteps, step, seeds, samples)
    tensors = (x_t, x0_hat, x0_prev, a, b, c, sigma, timesteps, step, seeds, samples)
    check(all(t.device.type == "cpu" and t.is_contiguous() for t in tensors),
          "solver_step_cpu needs contiguous CPU tensors")
    check(x_t.dim() == 3 and x0_hat.shape == x_t.shape == x0_prev.shape,
          "x_t, x0_hat, x0_prev must be one (B, n, d) shape")
    check(x_t.dtype == x0_hat.dtype == x0_prev.dtype == torch.float32, "the diffusion state must be fp32")
    K = timesteps.shape[0]
    check(all(col.shape == (K,) and col.dtype == torch.float32 for col in (a, b, c, sigma)),
          f"a, b, c, sigma: ({K},) fp32")
    check(timesteps.dtype == step.dtype == torch.int64 and step.numel() == 1, "timesteps, step: int64, step 1 element")
    B = x_t.shape[0]
    check(seeds.shape == samples.shape == (B,) and seeds.dtype == samples.dtype == torch.int64,
          f"seeds, samples: ({B},) int64")
    out = torch.empty_like(x_t)
    ext.solver_step(*(t.data_ptr() for t in (x_t, x0_hat, x0_prev, out, a, b, c, sigma, timesteps, step, seeds,
                                              samples)), B, x_t.shape[1] * x_t.shape[2], bool(has_prev))
    return out


def philox_words_cpu(seeds: torch.Tensor, samples: torch.Tensor, step: torch.Tensor | int, groups: int,
                     stream: int) -> tuple[torch.Tensor, ...]:
    """engine.noise.philox_words in C++ (same signature, equal integers): four (B, groups) int64 tensors. The
    torch version runs ~80 int64 ops (~0.55 ms per step at 32 × 64 here, 78% of the noise); this is one pass.
    Falls back to the torch version without the extension."""
    from codefusion.noise import philox_words

    ext = extension()
    if ext is None:
        return philox_words(seeds, samples, step, groups, stream)
    step = torch.as_tensor(step, dtype=torch.int64).reshape(1)
    check(seeds.device.type == samples.device.type == step.device.type == "cpu", "philox_words_cpu runs on CPU")
    check(seeds.shape == samples.shape and seeds.dim() == 1 and seeds.dtype == samples.dtype == torch.int64,
          "seeds, samples: (B,) int64")
    seeds, samples = seeds.contiguous(), samples.contiguous()
    out = torch.empty(4, seeds.shape[0], groups, dtype=torch.int64)
    ext.philox_words(seeds.data_ptr(), samples.data_ptr(), step.data_ptr(), out.data_ptr(), seeds.shape[0], groups,
                     int(stream))
    return out.unbind(0)
