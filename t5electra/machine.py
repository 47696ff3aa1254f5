"""What machine a measurement ran on, for the reports of benchmarks and experiments."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line starting with one of ``keys``; None where there is
    no such line or no file (macOS, Windows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """The CPU vendor from /proc/cpuinfo ("GenuineIntel", "AuthenticAMD", ...; "" where unknown):
    MKL's speed depends on it (it takes slower paths on other vendors' CPUs)."""
    return _cpuinfo("vendor_id") or ""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    return frozenset((_cpuinfo("flags", "Features") or "").split())


def amx_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU has AMX-BF16 tile units and torch may use them (:func:`native_bf16`): there a
    bf16 GEMM of many rows runs 2-4x faster than fbgemm's int8 one (docs/inference.md, session 18)."""
    return native_bf16(flags) and "amx_bf16" in (cpu_flags() if flags is None else flags)


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16; on ARM, BF16). For this
    machine (``flags`` None) also whether torch may use it: under ``ATEN_CPU_CAPABILITY=avx2`` or
    ``default`` on an AVX-512 CPU, oneDNN's bf16 kernels refuse to run ("pack_vnni2 is only
    supported when avx512 is supported", measured), so the answer is no."""
    if flags is None:
        capability = torch.backends.cpu.get_cpu_capability()
        if "AVX2" in capability or capability in ("DEFAULT", "NO AVX"):
            return False
        flags = cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


FP32_GEMM_ENV = "T5ELECTRA_FP32_GEMM"  # "auto" (default), "mkl" or "onednn"


def onednn_fp32_preferred(flags: frozenset[str] | None = None) -> bool:
    """Whether fp32 Linear products should run on oneDNN instead of PyTorch's default MKL call.

    Yes on AVX-512 CPUs with a PyTorch built with oneDNN: on the 2-core AMD EPYC with AVX-512 of
    docs/performance.md, oneDNN's fp32 GEMM ran 1.2-1.5x MKL's on the products of T5 and ELECTRA
    (MKL takes a slower path on AMD CPUs); on the AVX2 Zen 2 EPYC oneDNN was the slower one, so
    AVX2 CPUs keep MKL. A fixed rule rather than a timing probe: one machine always runs the same
    kernels and gives the same numbers. ``T5ELECTRA_FP32_GEMM=mkl`` or ``=onednn`` overrides it
    (read at each call, for this machine only: ``flags`` None)."""
    if flags is None:
        forced = os.environ.get(FP32_GEMM_ENV, "auto").strip().lower()
        if forced in ("mkl", "onednn"):
            return forced == "onednn" and _onednn_linear_available()
        flags = cpu_flags()
    return "avx512f" in flags and _onednn_linear_available()


@functools.cache
def _onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def matmul_peak(n: int = 1024, reps: int = 5, dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """Best FLOP/s of an n x n x n matmul (2 n^3 FLOPs) in ``dtype`` with the current torch threads:
    the MFU denominator of the quickstart and the benchmarks. On CPU in fp32 the best of PyTorch's
    ``torch.mm`` (MKL) and oneDNN's GEMM (what ``nn/linear.py`` runs where it is faster), so that
    MFU is measured against the faster library of this machine."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    calls = [lambda: torch.mm(a, b)]
    if torch.device(device).type == "cpu" and dtype == torch.float32 and _onednn_linear_available():
        bt = b.t().contiguous()  # weight (out, in) of a @ b
        calls.append(lambda: torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], ""))
    best = float("inf")
    for call in calls:
        call()
        sync()
        for _ in range(reps):
            t = time.perf_counter()
            call()
            sync()
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def describe_cpu(flags: frozenset[str] | None = None) -> str:
    """The flags that decide the kernels, e.g. 'avx2 fma f16c; no avx512_bf16/amx_bf16'. For this
    machine (``flags`` None) also where torch's CPU capability takes native bf16 away
    (:func:`native_bf16`): the flags alone then named a bf16 CPU next to the kernels chosen for one
    without it."""
    this = flags is None
    flags = cpu_flags() if this else flags
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    have = " ".join(f for f in wanted if f in flags) or "none of " + "/".join(wanted[:3])
    if not native_bf16(flags):
        return have + "; no avx512_bf16/amx_bf16 (no native bf16)"
    if this and not native_bf16():
        return (have + f"; torch's CPU capability {torch.backends.cpu.get_cpu_capability()} "
                "(ATEN_CPU_CAPABILITY): no native bf16")
    return have


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_INT_MAX = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc serve every allocation from its heap and keep what is freed there, for
    this process. Every ``t5electra`` command calls it, and so does training on CPU from Python
    (``init_distributed``); call it yourself elsewhere. Returns whether it applied.

    Why: glibc hands blocks over 32 MB (its largest mmap threshold) to ``mmap`` and returns them to
    the kernel on ``free``, so every training step pays page faults and the kernel's zeroing again
    for its largest tensors: T5's (32128, 512) embedding gradient, its bf16 copy under autocast,
    the logits, the optimiser's temporaries. With ``M_MMAP_MAX=0`` and the trim threshold at its
    maximum, a step reuses the previous step's pages. Measured on the 2-core EPYC (AVX-512), T5-small
    bf16 training step, one process each: 8 x 512 -> 114 5.43 -> 3.80 s (-30 %), 16 x 128 -> 32
    1.92-1.95 -> 1.59-1.71 s (-12 to -17 %); peak RSS +16 % / +2 % (docs/performance.md).
    The price: memory freed during training is not returned to the system until the process ends.
    ``T5ELECTRA_KEEP_FREED_MEMORY=0`` turns it off; non-glibc C libraries (musl, macOS) are left
    as they are."""
    if os.environ.get("T5ELECTRA_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])
    return mallopt is not None and bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))


def _libc_function(name: str, argtypes: list) -> Callable[..., int] | None:
    """glibc's ``name`` (int result) through ctypes, or None where there is no libc.so.6 with it."""
    try:
        fn = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> bool:
    """Ask Linux to send this process SIGTERM when its parent ends, however it ends (SIGKILL, an
    OOM kill, a crash), so a helper process (the quickstart's T5 lane) does not run on alone,
    using the CPU and writing into a run directory nobody watches. ``parent_pid``: the parent's pid
    as the parent saw it, to catch a parent that died before the request. Returns whether the
    request is in place (False off Linux; such a child ends when its parent's cleanup runs)."""
    if platform.system() != "Linux":
        return False
    prctl = _libc_function("prctl", [ctypes.c_int, ctypes.c_ulong])
    if prctl is None or prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM)) != 0:
        return False
    if os.getppid() != parent_pid:  # the parent ended before the request: end now
        os.kill(os.getpid(), signal.SIGTERM)
    return True
