"""Timing, memory and machine helpers shared by every benchmark case.

Fairness rules the cases follow (see docs/performance.md):

- every implementation of a case runs in this one process, on the same inputs, with the same
  ``torch.set_num_threads`` (CTranslate2 gets the same ``intra_threads``);
- runs are *alternated*: warm-up rounds first, then repetition r runs every implementation once,
  in an order rotated by r, so a burst of load from another process hits all of them alike;
- we report medians over the repetitions and ratios of medians.

Memory: :class:`PeakRSS` resets the kernel's resident-set high-water mark (``VmHWM``, by writing
``5`` to ``/proc/self/clear_refs``) before a call and reads it after, so ``delta_mb`` is the
growth of the process's resident memory during that call (activations, gradients, allocator
caches). It is measured on one extra, untimed call per implementation after the timed ones, right
after :func:`trim_heap` has handed the heap's free pages back to the kernel: otherwise memory that an
earlier, bigger call left cached in the allocator hides what this call needs (an earlier version
read 0 MB for a small shape measured after a big one). Both implementations' models are resident
the whole time, so the absolute RSS is not a per-implementation number; the delta is. Where the
reset is not allowed the value is None and the report says "n/a".
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable

import torch

from t5electra.machine import cpu_model, describe_cpu, native_bf16
from t5electra.machine import matmul_peak as machine_matmul_peak


# ------------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def trim_heap() -> None:
    """Return the C heap's free pages to the kernel (glibc ``malloc_trim(0)``); a no-op elsewhere."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """``with PeakRSS() as m: work()`` -> ``m.delta_mb``: peak resident memory during the block
    minus resident memory before it (None where the kernel does not let us reset the peak)."""

    def __enter__(self) -> "PeakRSS":
        self.delta_mb: float | None = None
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
            self._before = _status_kb("VmRSS")
        except OSError:
            self._before = None
        return self

    def __exit__(self, *exc: Any) -> None:
        peak = _status_kb("VmHWM")
        if self._before is not None and peak is not None:
            self.delta_mb = max(0.0, (peak - self._before) / 1024)


# ------------------------------------------------------------------------------------------------
# Alternating timer
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Timing:
    """Seconds per call of one implementation; ``median_s`` is what every table reports."""

    seconds: list[float]
    rss_delta_mb: float | None = None  # PeakRSS delta of one untimed call after trim_heap()
    note: str = ""

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": [round(s, 5) for s in self.seconds], "median_s": round(self.median_s, 5),
                "rss_delta_mb": None if self.rss_delta_mb is None else round(self.rss_delta_mb, 1),
                "note": self.note}


def compare(impls: dict[str, Callable[[], Any]], *, warmup: int, reps: int,
            sync: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Time each zero-argument callable ``reps`` times after ``warmup`` untimed calls, alternating.

    Round r runs the implementations in the order rotated by r (A B C, B C A, C A B, ...).
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read.
    """
    names = list(impls)
    for _ in range(warmup):
        for name in names:
            impls[name]()
    seconds: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, float | None] = {n: None for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if sync:
                sync()
            t = time.perf_counter()
            impls[name]()
            if sync:
                sync()
            seconds[name].append(time.perf_counter() - t)
    # Memory: one more, untimed call each, after handing the heap's free pages back to the kernel,
    # so that memory an earlier (bigger) call left in the allocator does not hide this call's needs.
    for name in names:
        trim_heap()
        with PeakRSS() as mem:
            impls[name]()
        rss[name] = mem.delta_mb
    return {n: Timing(seconds[n], rss[n]) for n in names}


# ------------------------------------------------------------------------------------------------
# Matmul peak and machine description
# ------------------------------------------------------------------------------------------------
def matmul_peak(precision: str, device: str, reps: int = 3) -> float:
    """``t5electra.machine.matmul_peak`` (the best of MKL and oneDNN in fp32 on CPU), measured in the
    same run and with the same threads as the cases, at the size the benchmark uses for ``precision`` ("fp32" or "bf16"):
    8192³ on GPU; on CPU 1024³, as the quickstart's probe, except a small 256³ probe for bf16 on
    CPUs without native bf16 (avx512_bf16 / AMX: there a bf16 matmul is ~30x slower than fp32). With
    native bf16 a 256³ product is too short to reach the peak (on an AMX Xeon 644-780 GFLOP/s against
    1,060-1,208 at 1024³, one thread), which overstated bf16 MFU up to 1.8x before 4 Dec 2026."""
    n = 8192 if device == "cuda" else (1024 if precision == "fp32" or native_bf16() else 256)
    return machine_matmul_peak(n, reps, torch.bfloat16 if precision == "bf16" else torch.float32, device)


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # not installed / no version: the report says so
        return "not installed"


def machine_info(device: str, threads: int) -> dict[str, Any]:
    info = {
        "cpu": cpu_model(), "cpu_flags": describe_cpu(), "logical_cpus": os.cpu_count(),
        "threads": threads, "device": device, "python": platform.python_version(),
        "platform": platform.platform(), "torch": torch.__version__,
        "transformers": _version("transformers"), "ctranslate2": _version("ctranslate2"),
        "load_average_at_start": _loadavg(),
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
