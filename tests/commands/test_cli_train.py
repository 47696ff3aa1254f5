"""`t5electra pretrain` and `t5electra finetune` end to end on tiny configs: ELECTRA pretraining
killed with SIGKILL and resumed gives the losses of an uninterrupted run; its discriminator
fine-tunes from the CLI on a TSV; the objective / model family picks the recipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t5electra.cli import main
from t5electra.commands.finetune import model_family
from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer
from t5electra.train.logging import read_metrics
from toy_corpus import toy_lines

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the cat sat on a mat while the dog ran after a red ball in the green park near the old house "
         "and children played games under tall trees until the sun went down over quiet hills").split()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    lines = toy_lines(WORDS, 300)
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    ElectraTokenizer.train([str(root / "corpus.txt")], vocab_size=120, output_dir=root / "tok", min_frequency=1)
    for split, n in (("train", 48), ("dev", 16)):
        rows = [(" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(6)), i % 2) for i in range(n)]
        (root / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return root


def _pretrain_args(root, run, steps=10):
    return ["pretrain", "--objective", "electra-rtd", f"--train.output_dir={run}",
            f"--data.train_files={root / 'corpus.txt'}", f"--data.tokenizer={root / 'tok'}",
            "--model.preset=electra-tiny", "--data.max_length=32", "--train.batch_size=8",
            f"--train.max_steps={steps}", "--train.log_every=1", "--checkpoint.every_steps=2",
            "--optim.lr=1e-2", "--schedule.warmup_steps=2", "--train.device=cpu", "--train.progress=false",
            "--train.tensorboard=false", "--checkpoint.resume=auto"]


def test_pretrain_sigkill_resume_then_finetune(data, tmp_path, capsys):
    # the uninterrupted reference, in this process
    ref = tmp_path / "ref"
    assert main(_pretrain_args(data, ref)) == 0
    assert "pretrained (electra-rtd)" in capsys.readouterr().out
    expected = {r["step"]: r["loss"] for r in read_metrics(ref) if r["split"] == "train"}

    # the same run as a separate process, killed with SIGKILL once step 5 is logged
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "t5electra.cli", *_pretrain_args(data, run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").is_file() and any(r["step"] >= 5 for r in read_metrics(run)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = max(r["step"] for r in read_metrics(run))
    assert done < 10
    # resumed in this process (one torch thread, as the reference): every loss is the reference's
    assert main(_pretrain_args(data, run)) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [x["step"] for x in lines].count(1) == 1  # resumed from a checkpoint, not restarted
    got = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    assert sorted(got) == list(range(1, 11))
    assert got == expected

    # fine-tune the pretrained discriminator from the CLI on a TSV (the run's model/ is enough)
    ft = tmp_path / "ft"
    assert model_family(str(run / "model"), "t5") == "electra"
    rc = main(["finetune", f"--model.init_from={run / 'model'}", "--electra.head=classification",
               f"--data.train_files={data / 'train.tsv'}", f"--data.validation_files={data / 'dev.tsv'}",
               f"--train.output_dir={ft}", "--data.max_length=16", "--train.batch_size=8", "--train.max_steps=4",
               "--eval.every_steps=2", "--checkpoint.every_steps=0", "--train.device=cpu", "--train.progress=false",
               "--train.tensorboard=false"])
    out = capsys.readouterr().out
    assert rc == 0 and "fine-tuned (electra)" in out
    results = json.loads((ft / "results.json").read_text())
    assert results["head"] == "classification" and 0 <= results["validation"]["accuracy"] <= 100
    assert results["majority_baseline"]["validation"]["accuracy"] == 50.0
    assert (ft / "model" / "vocab.txt").is_file() and (ft / "config.yaml").is_file()
    # every evaluation is a checkpoint that competes for the best one
    assert (ft / "checkpoints" / "step-00000002").is_dir() and (ft / "checkpoints" / "step-00000004").is_dir()
    assert results["best_checkpoint"]["step"] in (2, 4)


def test_objective_and_family_pick_the_recipe(data, tmp_path, capsys, spiece_model_path):
    # T5 span corruption through the same subcommand
    tok = T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes())
    tok.save_pretrained(tmp_path / "t5tok")
    run = tmp_path / "t5"
    assert main(["pretrain", "--objective", "t5-span-corruption", f"--train.output_dir={run}",
                 f"--data.train_files={data / 'corpus.txt'}", f"--data.tokenizer={tmp_path / 't5tok'}",
                 "--model.preset=t5-v1_1-tiny", "--data.max_length=32", "--train.batch_size=4",
                 "--train.max_steps=2", "--train.device=cpu", "--train.progress=false",
                 "--train.tensorboard=false"]) == 0
    assert "pretrained (t5-span-corruption)" in capsys.readouterr().out
    assert json.loads((run / "model" / "config.json").read_text())["model_type"] == "t5"
    assert model_family(str(run / "model"), "electra") == "t5"
    assert model_family(None, "electra") == "electra"

    # model.family=electra alone means replaced-token detection; mlm via the flag
    run = tmp_path / "mlm"
    assert main(["pretrain", "--objective", "mlm", *_pretrain_args(data, run, 1)[3:]]) == 0
    assert not (run / "model" / "discriminator").exists() and (run / "model" / "generator").is_dir()
    assert "objective: mlm" in (run / "config.yaml").read_text()

    # an ELECTRA preset alone says the family (it ran the T5 recipe and failed on the tokenizer's type)
    import argparse

    from t5electra.commands.pretrain import resolve_objective
    ns = argparse.Namespace(config=None, objective=None, overrides=["--model.preset=electra-tiny"])
    assert resolve_objective(ns) == "electra-rtd"
    ns.overrides = ["--model.preset=t5-tiny"]
    assert resolve_objective(ns) == "t5-span-corruption"

    # bad input: one line on stderr, exit status 1, no traceback
    assert main(["pretrain", "--objective", "electra-rtd", "--data.train_files=", f"--train.output_dir={tmp_path}/x",
                 f"--data.tokenizer={data / 'tok'}"]) == 1
    assert "t5electra pretrain: error: data.train_files is empty" in capsys.readouterr().err
    assert main(["finetune", f"--model.init_from={tmp_path / 'nothing'}", "--data.task=sentiment"]) == 1
    assert "t5electra finetune: error:" in capsys.readouterr().err
    assert main(["finetune", "--data.task=sentiment", "--optim.layerwise_lr_dcay=0.8"]) == 1
    assert "did you mean 'layerwise_lr_decay'" in capsys.readouterr().err
