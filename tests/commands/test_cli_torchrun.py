"""The `t5electra` command under torchrun (2 gloo processes, tests/multiproc.py): pretrain and finetune
say what they wrote, and warn, once, not once per process; the commands that run in one process refuse a torchrun
launch with one line instead of running whole in every process and writing their outputs twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from multiproc import launch
from t5electra.cli import main
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.tokenizers import T5Tokenizer

# test_cli_train.py's corpus, WordPiece tokenizer and sentiment TSVs
from test_cli_train import _pretrain_args, data  # noqa: F401 (fixture)


def test_pretrain_and_finetune_report_once(data, tmp_path, capfd):  # noqa: F811
    run = tmp_path / "electra"
    assert launch(main, _pretrain_args(data, run, steps=2), 2) == [0, 0]
    out = capfd.readouterr().out
    assert out.count(f"pretrained (electra-rtd): {run / 'model'}") == 1, out

    tuned = tmp_path / "tuned"
    assert launch(main, ["finetune", f"--model.init_from={run / 'model'}", f"--train.output_dir={tuned}",
                         f"--data.train_files={data / 'train.tsv'}", f"--data.validation_files={data / 'dev.tsv'}",
                         "--data.max_length=32", "--train.batch_size=4", "--train.max_steps=2",
                         "--eval.every_steps=2", "--checkpoint.every_steps=2", "--train.device=cpu",
                         "--train.progress=false", "--train.tensorboard=false"], 2) == [0, 0]
    out, err = capfd.readouterr()
    # every rank loads the same checkpoint: its load report is said once (was: once per process)
    assert err.count("ElectraForSequenceClassification: newly initialised (train before use)") == 1, err
    assert out.count(f"fine-tuned (electra): {tuned / 'model'}") == 1, out
    results = json.loads((tuned / "results.json").read_text())
    assert out.count('"best_checkpoint"') == 1 and json.loads(out[:out.rindex("}") + 1]) == results


def test_one_process_commands_refuse_torchrun(tmp_path, capfd, spiece_model_path):
    model_dir = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config.from_preset("t5-tiny")).save_pretrained(model_dir)
    T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes()).save_pretrained(model_dir)
    out = tmp_path / "generated.jsonl"
    # before: both processes generated and wrote --out (exit 0, the work done twice); convert alike
    for argv, command in ((["generate", str(model_dir), "the cat", "--out", str(out)], "generate"),
                          (["convert", str(model_dir), str(tmp_path / "hf")], "convert")):
        assert launch(main, argv, 2) == [1, 1]
        err = capfd.readouterr().err
        assert err.count(f"t5electra {command}: error: {command} runs in one process, and torchrun started 2 "
                         f"(WORLD_SIZE=2)") == 1, err
        assert "without torchrun" in err
    assert not out.exists() and not (tmp_path / "hf").exists()
    # one process (WORLD_SIZE=1, as `torchrun --nproc_per_node 1`) runs as without torchrun
    assert launch(main, ["generate", str(model_dir), "the cat", "--out", str(out), "--max-new-tokens", "2"], 1) == [0]
    assert len(out.read_text().splitlines()) == 1


def test_python_m_t5electra_is_the_command():
    """`torchrun ... -m t5electra pretrain` (and `python -m t5electra`) run the command, as `-m
    t5electra.cli` does (was: "No module named t5electra.__main__" from every process)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "t5electra", "--help"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: t5electra") and "pretrain" in done.stdout
    done = subprocess.run([sys.executable, "-m", "t5electra", "generate", "--batch-size", "0", "x"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("t5electra generate: error: --batch-size=0"), done.stderr
