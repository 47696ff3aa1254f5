"""The kernel table of docs/inference.md: milliseconds per call of each candidate kernel for
``optimize_for_inference`` on this CPU (T5-small's output layer at 1/4/16 rows, a 2048 x 512
matrix at 1 row, ELECTRA-sized 256 -> 1024 at 4096 rows), best of 5 x 30 calls.

    python -m benchmarks.kernels [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

import t5electra.inference.weights as W
from t5electra.machine import cpu_model, describe_cpu

SHAPES = [((32128, 512), 1), ((32128, 512), 4), ((32128, 512), 16), ((2048, 512), 1), ((1024, 256), 4096)]


def best_ms(fn, x: torch.Tensor, reps: int = 30) -> float:
    fn(x)
    fn(x)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            fn(x)
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e3


def kernels(w: torch.Tensor) -> dict[str, object]:
    """name -> callable(x) for every candidate (fbgemm ones only where this torch has fbgemm)."""
    wc, wb = w.t().contiguous().t(), w.bfloat16()
    out: dict[str, object] = {"fp32 F.linear (row-major weight)": lambda x: F.linear(x, w),
                              "fp32, column-major weight (our fp32 fast path)": lambda x: F.linear(x, wc),
                              "bf16 F.linear, bf16 activations (cast of x included)": lambda x: F.linear(x.bfloat16(), wb),
                              "Bf16Native (casts in and out)": W.Bf16Native(w, None),
                              "Int8WeightOnly (_weight_int8pack_mm, bf16 activations)": W.Int8WeightOnly(w, None)}
    if W.fbgemm_available():
        out["Fp16Fbgemm (fbgemm fp16-stored weights, fp32 activations)"] = W.Fp16Fbgemm(w, None)
        out["Int8Fbgemm (fbgemm dynamic int8, per-channel weights)"] = W.Int8Fbgemm(w, None)
    out["Int8AsBf16 (int8 values in bf16, bf16 activations: the AMX path of Int8ByRows)"] = W.Int8AsBf16(w, None)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    rows: dict[str, list[float]] = {}
    for (n, k), m in SHAPES:
        w, x = torch.randn(n, k) * 0.05, torch.randn(m, k)
        for name, fn in kernels(w).items():
            rows.setdefault(name, []).append(best_ms(fn, x))
    print(f"{cpu_model()} ({describe_cpu()}), {args.threads} thread(s), torch {torch.__version__}; ms per call\n")
    print("| kernel | " + " | ".join(f"{n}×{k}, {m} row{'s' * (m > 1)}" for (n, k), m in SHAPES) + " |")
    print("|---" * (len(SHAPES) + 1) + "|")
    for name, vs in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vs) + " |")


if __name__ == "__main__":
    main()
