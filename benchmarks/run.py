"""``python -m benchmarks`` / ``t5electra bench``: run the cases, write BENCHMARKS.md and charts."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from t5electra.machine import keep_freed_memory

from . import cases as C
from .harness import machine_info, matmul_peak
from .report import misses, write_charts, write_markdown

ROOT = Path(__file__).resolve().parents[1]
CASES = ("train", "electra_pretrain", "generate", "electra_infer", "data")


@dataclasses.dataclass
class Plan:
    """Sizes of one mode. Shapes are (batch, input length, target length)."""

    train_presets: list[str]
    train_shapes: list[tuple[int, int, int]]
    train_dtypes: list[str]
    electra_preset: str
    electra_batch: tuple[int, int]
    gen_preset: str
    gen_batches: list[int]
    gen_beams: list[int]
    gen_lengths: tuple[int, int]  # (input tokens, forced new tokens)
    data_mb: float
    data_workers: int
    warmup: int
    reps: int


PLANS = {
    # the configurations
    "full": Plan(["t5-small", "t5-v1_1-small"], [(8, 512, 114), (16, 128, 32)], ["fp32", "bf16"],
                 "electra-small", (32, 128), "t5-small", [1, 16], [1, 4], (64, 64), 50, 2, warmup=1, reps=5),
    # one shape per case, for routine checks (< 5 min on 2 cores)
    "quick": Plan(["t5-small"], [(8, 128, 32)], ["fp32", "bf16"], "electra-small", (32, 128), "t5-small",
                  [1], [1, 4], (64, 64), 5, 2, warmup=1, reps=2),
    # tiny random models: checks the harness end to end in seconds (CI smoke test)
    "tiny": Plan(["t5-tiny", "t5-v1_1-tiny"], [(2, 16, 8)], ["fp32", "bf16"], "electra-tiny", (2, 16),
                 "t5-tiny", [1, 2], [1, 2], (8, 8), 0.2, 1, warmup=1, reps=2),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="one shape per case (< 5 min on 2 cores)")
    mode.add_argument("--full", action="store_const", dest="mode", const="full",
                      help="every configuration of the issue (default; < 40 min on 2 cores)")
    mode.add_argument("--tiny", action="store_const", dest="mode", const="tiny",
                      help="tiny random models: checks the harness in seconds (CI)")
    p.set_defaults(mode="full")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the rows and MFU on a GPU (run once, --quick on an H200: docs/benchmarks-h200.md; "
                        "docs/performance.md, \"On a GPU\")")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--threads", type=int, default=None,
                   help="torch (and CTranslate2) threads for every implementation (default: all CPUs)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per implementation")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls per implementation")
    p.add_argument("--output", type=Path, default=None,
                   help="the Markdown report (default: the repository's BENCHMARKS.md for --full; "
                        "bench-<mode>.md in the working directory for --quick / --tiny, which must not "
                        "replace the published numbers)")
    p.add_argument("--img-dir", type=Path, default=None,
                   help="where bench_*.png go (default: docs/img for --full into BENCHMARKS.md, else "
                        "bench-<mode>-img/ next to the report)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.profiler top ops of the first configuration per case (default: on in --full)")
    p.add_argument("--force-bf16", action="store_true",
                   help="time bf16 training even on a CPU without native bf16 matmuls (very slow)")
    p.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 generation rows")


def default_img_dir(mode: str, output: Path | None) -> Path:
    """Where the charts go without ``--img-dir``: docs/img for a --full run into BENCHMARKS.md (the
    default output or named with ``--output``: an explicit ``--output BENCHMARKS.md`` put them in the
    git-ignored bench-full-img/, which the published report then linked), else ``bench-<mode>-img/``
    next to the report (was the working directory: a quick run from the repository root with
    ``--output`` elsewhere left its charts in the checkout)."""
    if mode == "full" and (output is None or output.resolve() == (ROOT / "BENCHMARKS.md").resolve()):
        return ROOT / "docs" / "img"
    return (output.parent if output else Path()) / f"bench-{mode}-img"


def run(args: argparse.Namespace) -> int:
    if args.img_dir is None:
        args.img_dir = default_img_dir(args.mode, args.output)
    if args.output is None:
        args.output = ROOT / "BENCHMARKS.md" if args.mode == "full" else Path(f"bench-{args.mode}.md")
    for name in ("threads", "reps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"benchmarks: --{name} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.warmup is not None and args.warmup < 0:
        print(f"benchmarks: --warmup must be >= 0, got {args.warmup}", file=sys.stderr)
        return 2
    selected = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in selected if c not in CASES]
    if unknown:
        print(f"benchmarks: unknown case(s) {unknown}; choose from {list(CASES)}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    plan = PLANS[args.mode]
    # the allocator setting every t5electra command (and any training process) runs with (machine.py):
    # process-wide, so transformers' rows in this process run with it too (CTranslate2: its own process)
    kept = keep_freed_memory()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dtypes = plan.train_dtypes
    started = time.perf_counter()
    machine = machine_info(args.device, threads)
    machine["allocator"] = ("glibc, freed memory kept (keep_freed_memory: M_MMAP_MAX=0, maximal trim threshold)"
                            if kept else "the C library's default")
    print(f"benchmarks: {args.mode} run of {selected} on {machine['cpu']} with {threads} threads", flush=True)
    peaks = {key: matmul_peak(key, args.device) for key in ("fp32", "bf16")}
    notes = []
    if args.device == "cpu" and "bf16" in dtypes and args.mode != "tiny" and not args.force_bf16 \
            and peaks["bf16"] < 0.25 * peaks["fp32"]:
        dtypes = [d for d in dtypes if d != "bf16"]
        notes.append(f"bf16 training rows skipped: this CPU has no native bf16 matmul (measured "
                     f"{peaks['bf16'] / 1e9:.2f} GFLOP/s in bf16 vs {peaks['fp32'] / 1e9:.1f} in fp32), so one "
                     f"bf16 step of the issue's shapes takes many minutes for every implementation alike. "
                     f"Run with --force-bf16 to time it anyway, or on a CPU with avx512_bf16 / AMX or a GPU.")
    profile = set(selected) if (args.profile if args.profile is not None else args.mode == "full") else set()
    results: list[C.Result] = []
    case_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="t5electra-bench-") as tmp:
        env = C.Env(args.device, plan.warmup if args.warmup is None else args.warmup,
                    plan.reps if args.reps is None else args.reps, threads, Path(tmp),
                    log=lambda m: print(f"  {m}", flush=True), profile=profile)
        runners = {
            "train": lambda: C.bench_train(env, plan.train_presets, plan.train_shapes, dtypes, peaks),
            "electra_pretrain": lambda: C.bench_electra_pretrain(env, plan.electra_preset, *plan.electra_batch),
            "generate": lambda: C.bench_generate(env, plan.gen_preset, plan.gen_batches, plan.gen_beams,
                                                 *plan.gen_lengths, int8=args.int8),
            "electra_infer": lambda: C.bench_electra_infer(env, plan.electra_preset, *plan.electra_batch),
            "data": lambda: C.bench_data(env, plan.data_mb, plan.data_workers, next(
                (r for r in results if r.case == "train" and r.label.endswith("fp32")), None)),
        }
        for case in CASES:
            if case in selected:
                t = time.perf_counter()
                results += runners[case]()
                case_seconds[case] = time.perf_counter() - t
    wall = time.perf_counter() - started
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if Path(sys.argv[0]).name == "__main__.py" else "t5electra bench " + " ".join(
            shlex.quote(a) for a in sys.argv[2:])
    notes.append("wall time per case (model building, conversion, warm-up and profiling included): " + ", ".join(
        f"{c} {s:.0f} s" for c, s in case_seconds.items()))
    if args.device == "cuda":
        notes.append("--device cuda: the RSS columns are host memory.")
    charts = write_charts(results, args.img_dir, args.output.parent)
    write_markdown(args.output, results, machine, command.strip(), args.mode, wall, peaks, env.profiles,
                   notes, charts)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "peaks": peaks, "mode": args.mode, "command": command,
                                         "wall_s": wall, "notes": notes, "profiles": env.profiles,
                                         "results": [r.to_dict() for r in results]}, indent=1, default=str))
    for r in results:
        ratios = ", ".join(f"{p} {r.ratio(p):.2f}x" for p in r.timings if p != "t5electra")
        print(f"{r.case:17s} {r.label:60s} {r.throughput('t5electra'):12,.1f} {r.unit}  {ratios}")
    print(f"benchmarks: {len(misses(results))} target(s) missed; wrote {args.output} in {wall / 60:.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))
