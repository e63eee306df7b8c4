"""Portable CPU numerics: the same run gives the same bits on any x86-64 CPU.

torch picks its CPU code by the processor it runs on, and float32 arithmetic done in another order
or with other instructions differs in the last bits, which hundreds of training steps amplify into
other metrics. Measured on the tiny profile (AVX-512 AMD EPYC against the same machine emulating an
AVX2-only one), the sources are:

- ATen's vectorised kernels (DEFAULT, AVX2 or AVX512, chosen once per process): softmax, layer
  norm, reductions and the normal() generator that initialises the weights;
- MKL (matmul, FFT), which picks its code path by processor and vendor;
- oneDNN (convolutions, GELU), which compiles kernels for the processor's instruction set, and
  NNPACK (convolutions when oneDNN is off), which has AVX2 kernels only;
- the number of intra-op threads: parallel reductions and MKL split their sums by thread.

The "portable" mode removes each: ATen's AVX2 kernels (the same code on every x86-64 CPU with
AVX2, Intel since 2013 and AMD since 2015, AVX-512 ones included; ATen's scalar DEFAULT kernels would
serve older CPUs too but cost another 1.2x, docs/decisions/numerics.md), MKL's COMPATIBLE code path
(the same results on Intel and AMD processors for a fixed thread count; MKL's faster AVX2 branch is
reproducible on Intel CPUs only), oneDNN and NNPACK off (their work falls back to ATen and MKL) and
a fixed thread count. On a CPU without AVX2, `apply` refuses the mode. "native" changes nothing: the
machine's fastest kernels, whose last bits depend on the CPU. The environment variables must be in
place before torch runs its first computation in the process; `apply` checks that they took effect.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path

from thadcr.config import NUMERICS_MODES
from thadcr.errors import RunError, UsageError

MODES = NUMERICS_MODES
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's AVX2 kernels on every CPU, AVX-512 ones too (read at the first op)
    "MKL_CBWR": "COMPATIBLE",  # MKL's code path for all Intel and compatible CPUs (read at the first MKL call)
}
PORTABLE_THREADS = 1  # results depend on the intra-op thread count, so the mode fixes it
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
RECORDED_ENV = (*PORTABLE_ENV, *THREAD_ENV, "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "GLIBC_TUNABLES")
MKL_CBWR_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                     9: "AVX", 10: "AVX2", 12: "AVX512", 14: "AVX512_E1"}  # MKL's MKL_CBWR_* constants

_applied: str | None = None  # the mode `apply` set up in this process


class NumericsError(RunError):
    """The numerics mode cannot be set up in this process; the message says what to do."""


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"numerics={mode!r} is not one of {', '.join(MODES)}")


def environment(mode: str, threads: int = PORTABLE_THREADS, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process (papermill kernel, torchrun worker, subprocess) in `mode`.

    A copy of `base` (default: this process's environment). "portable" adds `PORTABLE_ENV` and
    the thread count, so the child's kernels are the portable ones from its first computation on;
    the child still calls `apply` (oneDNN and NNPACK are switched off from Python). "native"
    removes the portable values, so that a child of a portable process gets its CPU's kernels.
    """
    _check_mode(mode)
    env = dict(os.environ if base is None else base)
    if mode == "portable":
        env.update(PORTABLE_ENV)
        env.update({name: str(threads) for name in THREAD_ENV})
    else:
        for name, value in PORTABLE_ENV.items():
            if env.get(name) == value:
                del env[name]
    return env


def apply(mode: str, threads: int = PORTABLE_THREADS) -> None:
    """Set up `mode` in this process; "portable" must come before torch's first computation.

    "portable" sets `PORTABLE_ENV`, switches oneDNN and NNPACK off and fixes the intra-op thread
    count, then checks that ATen runs its DEFAULT kernels and MKL its COMPATIBLE path; when torch
    already computed something with other kernels it raises NumericsError saying what to do.
    Calling it again is harmless. "native" changes nothing (the machine's own kernels and threads).
    """
    global _applied
    _check_mode(mode)
    if mode == "native":
        _applied = _applied or mode  # a process set up as portable stays portable
        return
    if threads < 1:
        raise UsageError(f"numerics: threads={threads}; use at least 1 intra-op thread")
    os.environ.update(PORTABLE_ENV)
    import torch  # after the environment, so a first import sees it

    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(threads)
    wanted = PORTABLE_ENV["ATEN_CPU_CAPABILITY"].upper()
    capability, branch = torch.backends.cpu.get_cpu_capability(), mkl_branch()
    if capability == "DEFAULT" and "avx2" not in cpu()["vector_extensions"]:
        raise NumericsError(
            "numerics=portable needs a CPU with AVX2 (ATen's AVX2 kernels are the portable ones) and this one "
            f"has none ({cpu()['model']}); use numerics=native: the results will differ from the committed ones"
        )
    if capability != wanted or branch not in (None, "COMPATIBLE"):
        raise NumericsError(
            f"numerics=portable was asked for after torch had computed with other kernels (ATen {capability}, "
            f"MKL code path {branch}; portable needs {wanted} and COMPATIBLE): a process chooses them once, "
            "at its first computation. Call thadcr.numerics.apply('portable') before any torch computation (first "
            "thing in the program or notebook), or start the process with "
            + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
            + " (thadcr.numerics.environment('portable')), or use numerics=native."
        )
    _applied = mode


def is_portable() -> bool:
    """Whether `apply("portable")` set up this process (code with a vendor-independent variant uses it)."""
    return _applied == "portable"


def cache_tag() -> str:
    """What cached features computed in this process depend on: "portable" (the same on every
    machine), or "native-<ATen kernels>-<threads>t" (this kind of CPU only). Log-mel and text-feature
    caches put it in their keys, so features made one way never feed runs made the other."""
    import torch

    if _applied == "portable":
        return "portable"
    return f"native-{torch.backends.cpu.get_cpu_capability().lower()}-{torch.get_num_threads()}t"


def mkl_branch() -> str | None:
    """The code path MKL runs (its CNR branch: "OFF" means its own choice per CPU), read through
    the MKL service function in torch's library; None when this torch has no MKL to ask."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = library.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    value = get(1)  # 1: MKL_CBWR_BRANCH
    return MKL_CBWR_BRANCHES.get(value, str(value))


def cpu() -> dict:
    """The CPU's model, vendor and vector extensions (from /proc/cpuinfo on Linux, else `platform`)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = ["sse3" if flag == "pni" else flag for flag in fields.get("flags", "").split()]  # pni: SSE3's Linux name
    vector = sorted({flag for flag in flags if flag.startswith(("sse", "ssse", "avx", "fma", "f16c", "amx"))})
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "vendor": fields.get("vendor_id"),
        "architecture": platform.machine(),
        "vector_extensions": vector,
    }


def describe() -> dict:
    """What this process computes with, for metrics.json: the mode `apply` set up (None when it was
    not called), ATen's kernels, MKL's code path, oneDNN/NNPACK, threads, the relevant environment
    variables and the CPU. Reading ATen's kernels fixes them, so call it after `apply`."""
    import torch

    return {
        "mode": _applied,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_branch": mkl_branch(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "nnpack": torch._C._get_nnpack_enabled(),
        "torch_threads": torch.get_num_threads(),
        "env": {name: os.environ.get(name) for name in RECORDED_ENV},
        "cpu": cpu(),
    }
