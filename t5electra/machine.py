"""What machine a measurement ran on, for the reports of benchmarks and experiments."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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


def describe_cpu(flags: frozenset[str] | None = None) -> str:
    """The flags that decide the kernels, e.g. 'avx2 fma f16c; no avx512_bf16/amx_bf16'."""
    flags = cpu_flags() if flags is None else flags
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    have = " ".join(f for f in wanted if f in flags) or "none of " + "/".join(wanted[:3])
    return have + ("" if native_bf16(flags) else "; no avx512_bf16/amx_bf16 (no native bf16)")
