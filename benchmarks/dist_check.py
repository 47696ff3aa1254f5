"""torchrun through the real CLI on one machine (docs/performance.md, "On a GPU"): T5 and ELECTRA
pretraining under DDP and FSDP log the losses of one process on the same global batch, and a sharded
checkpoint resumes in one process:

    python -m benchmarks.dist_check --device cuda --nproc 1 --out OUT_DIR     # NCCL
    python -m benchmarks.dist_check --device cpu --nproc 2 --out OUT_DIR      # gloo

The CPU suite proves the same with two gloo processes (tests/recipes/test_pretrain_fsdp.py, in-process
launches); this runs the commands a user types (``torchrun ... -m t5electra.cli pretrain``) on the
accelerator's backend and kernels, with ``train.deterministic=true`` on a GPU. One GPU takes one NCCL
rank (NCCL refuses two ranks on one device), so ``--nproc 1`` there: the process group, the DDP/FSDP
wrapping, the sharded checkpoint and its resume, not the gradient reduction across ranks.
Each run's losses and the comparisons go to ``OUT_DIR/dist_check.json``; exit status 1 if one fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("the cat sat on a mat while the dog ran after a red ball in the green park near the old house "
         "and children played games under tall trees until the sun went down over quiet hills").split()
TOL = 1e-5  # tests/recipes/test_pretrain_fsdp.py's: float rounding of another reduction order, not a lost example
MODELS = {  # objective -> (preset, tokenizer kind, dropout off, metrics compared)
    "t5-span-corruption": ("t5-v1_1-tiny", "t5", "{dropout_rate: 0.0}", ("loss",)),
    "electra-rtd": ("electra-tiny", "electra", "{hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
                    ("loss", "gen_loss", "disc_loss")),
}


def make_data(root: Path) -> None:
    """test_pretrain_fsdp.py's corpus as one document (every ELECTRA row full: equal token counts per rank)
    and a tokenizer of each kind trained on it."""
    from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer

    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(8 + i % 9)) for i in range(300)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "lines.txt").write_text("\n".join(lines) + "\n")
    (root / "train.txt").write_text(" ".join(lines) + "\n")
    T5Tokenizer.train([str(root / "lines.txt")], vocab_size=50, extra_ids=20, output_dir=root / "tok-t5")
    ElectraTokenizer.train([str(root / "lines.txt")], vocab_size=120, min_frequency=1,
                           output_dir=root / "tok-electra")


def pretrain(root: Path, run: Path, objective: str, device: str, nproc: int, mode: str, *extra: str) -> dict:
    """One ``t5electra pretrain`` run (under torchrun when ``mode`` is ddp/fsdp); its train rows by step."""
    from t5electra.train.logging import read_metrics

    preset, kind, dropout, _ = MODELS[objective]
    args = ["pretrain", f"--objective={objective}", f"--train.output_dir={run}",
            f"--data.train_files={root / 'train.txt'}", f"--data.tokenizer={root / f'tok-{kind}'}",
            f"--model.preset={preset}", f"--model.overrides={dropout}", "--data.max_length=32",
            f"--train.batch_size={8 // nproc if mode != 'none' else 8}", "--train.max_steps=4", "--train.log_every=1",
            "--checkpoint.every_steps=2", "--optim.lr=1e-2", "--schedule.warmup_steps=1", f"--train.device={device}",
            f"--train.distributed={mode}", "--train.progress=false", "--train.tensorboard=false",
            *(["--train.deterministic=true"] if device.startswith("cuda") else []), *extra]
    if mode == "none":
        cmd = [sys.executable, "-m", "t5electra.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "t5electra.cli", *args]
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # what deterministic cuBLAS needs
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    rows = {r["step"]: r for r in read_metrics(run) if r.get("split") == "train"} if proc.returncode == 0 else {}
    return {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
            "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def compare(got: dict, ref: dict, steps: range, keys: tuple[str, ...]) -> dict:
    diffs = {f"{s}/{k}": abs(got["rows"][s][k] - ref["rows"][s][k])
             for s in steps for k in keys if s in got["rows"] and s in ref["rows"]}
    ok = got["rc"] == 0 and len(diffs) == len(steps) * len(keys) and max(diffs.values()) <= TOL
    return {"ok": ok, "max_abs_diff": max(diffs.values(), default=None)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.dist_check")
    p.add_argument("--device", default="cuda", help="cuda (NCCL) or cpu (gloo)")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (1 per GPU; 8 must divide by it)")
    p.add_argument("--out", type=Path, default=Path("dist-check"))
    p.add_argument("--objectives", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    root = a.out / "work"
    make_data(root)
    report: dict = {"device": a.device, "nproc": a.nproc, "tolerance": TOL, "checks": {}}
    for objective in a.objectives.split(","):
        keys = MODELS[objective][3]
        runs = {mode: pretrain(root, root / f"{objective}-{mode}", objective, a.device, a.nproc, mode)
                for mode in ("none", "ddp", "fsdp")}
        step2 = root / f"{objective}-fsdp" / "checkpoints" / "step-00000002"
        runs["fsdp->1"] = pretrain(root, root / f"{objective}-resumed", objective, a.device, a.nproc, "none",
                                   f"--checkpoint.resume={step2}")
        checks = {mode: compare(runs[mode], runs["none"], range(1, 5), keys) for mode in ("ddp", "fsdp")}
        checks["fsdp->1"] = compare(runs["fsdp->1"], runs["none"], range(3, 5), keys)
        first, last = (runs["none"]["rows"].get(s, {}).get("loss") for s in (1, 4))
        checks["learns"] = {"ok": first is not None and last is not None and last < first}
        report["checks"][objective] = {"checks": checks, "runs": runs}
        print(f"dist_check: {objective}: " + ", ".join(f"{k} {'ok' if v['ok'] else 'FAILED'}"
                                                       for k, v in checks.items()), flush=True)
        (a.out / "dist_check.json").write_text(json.dumps(report, indent=1, default=str))
    ok = all(c["ok"] for o in report["checks"].values() for c in o["checks"].values())
    for o in report["checks"].values():
        for mode, run in o["runs"].items():
            if run["rc"]:
                print(f"dist_check: {mode} exited {run['rc']}:\n{run['stderr_tail']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
