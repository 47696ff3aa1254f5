"""A run killed (SIGKILL: no cleanup) while it writes its final RUN/model: nothing that looks finished
is left, and the rerun (checkpoint.resume=auto, as the quickstart runs its stages) writes it whole.

The quickstart takes RUN/model/config.json (pretraining: model/discriminator/config.json) and
RUN/results.json (fine-tuning) for a finished stage. RUN/model was written file by file (weights,
config.json, then the tokenizer) and fine-tuned ELECTRA wrote results.json before the model, so a
kill at the wrong moment made a rerun skip the stage and fail on a model without its tokenizer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch

from t5electra.models.electra import ElectraConfig, ElectraForPreTraining
from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer
from toy_corpus import toy_lines, write_train_valid
from train_device import DEVICE_ARGS

# SIGKILL the recipe when it saves the tokenizer into the run's final model: its weights and
# config.json are written by then.
DRIVER = """
import os, signal, sys
from pathlib import Path
import t5electra.tokenizer_base as tb
run = Path(sys.argv[2]).resolve()
real = tb._TokenizerBase.save_pretrained
def save(self, d):
    d = Path(d).resolve()
    if d.parent == run and (d.name == "model" or d.name.startswith(".model.")):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, d)
tb._TokenizerBase.save_pretrained = save
from importlib import import_module
sys.exit(import_module("t5electra.recipes." + sys.argv[1]).main(sys.argv[3:]))
"""
WORDS = "the cat sat on a mat while the dog ran after a red ball in the green park near the old house".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory, spiece_model_path):
    root = tmp_path_factory.mktemp("killed")
    write_train_valid(root, WORDS, 200, 180)
    lines = toy_lines(WORDS, 200)
    T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes()).save_pretrained(root / "t5tok")
    etok = ElectraTokenizer.train([str(root / "train.txt")], vocab_size=80, output_dir=root / "etok", min_frequency=1)
    torch.manual_seed(0)
    cfg = ElectraConfig.from_preset("electra-tiny", vocab_size=len(etok), pad_token_id=etok.pad_token_id)
    ElectraForPreTraining(cfg).save_pretrained(root / "disc")
    etok.save_pretrained(root / "disc")
    (root / "task").mkdir()
    for split in ("train", "dev", "test"):
        (root / "task" / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(
            f"{line}\t{'pos' if i % 2 else 'neg'}\n" for i, line in enumerate(lines[:40])))
    return root


def _args(recipe, root, run):
    common = [f"--train.output_dir={run}", "--data.max_length=32", "--train.batch_size=4", "--train.max_steps=2",
              "--train.log_every=1", "--checkpoint.every_steps=0", "--eval.every_steps=0", "--eval.max_batches=1",
              *DEVICE_ARGS, "--train.progress=false", "--train.tensorboard=false", "--checkpoint.resume=auto"]
    if recipe == "finetune_electra":
        return common + [f"--model.init_from={root / 'disc'}", "--electra.head=classification",
                         *(f"--data.{s}_files={root / 'task' / f'{name}.tsv'}"
                           for s, name in (("train", "train"), ("validation", "dev"), ("test", "test")))]
    pretraining = [f"--data.train_files={root / 'train.txt'}", f"--data.validation_files={root / 'valid.txt'}"]
    if recipe == "pretrain_t5":
        return common + pretraining + [f"--data.tokenizer={root / 't5tok'}", "--model.preset=t5-v1_1-tiny"]
    return common + pretraining + [f"--data.tokenizer={root / 'etok'}", "--model.preset=electra-tiny"]


# the file the quickstart takes for the finished stage (recipes/quickstart.py lane_stages)
DONE = {"pretrain_t5": "model/config.json", "pretrain_electra": "model/discriminator/config.json",
        "finetune_electra": "results.json"}


@pytest.mark.parametrize("recipe", sorted(DONE))
def test_a_run_killed_while_saving_its_final_model_is_not_taken_for_finished(recipe, data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", DRIVER, recipe, str(run), *_args(recipe, data, run)]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run / DONE[recipe]).exists()  # the stage would be skipped, with a model lacking its tokenizer
    assert not (run / "model").exists()

    again = subprocess.run([sys.executable, "-m", f"t5electra.recipes.{recipe}", *_args(recipe, data, run)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / DONE[recipe]).is_file()
    model = run / "model" / ("discriminator" if recipe == "pretrain_electra" else "")
    assert (model / "tokenizer_config.json").is_file() and (model / "model.safetensors").is_file()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".model")) == []  # the killed save's debris
    if recipe == "finetune_electra":
        assert "accuracy" in json.loads((run / "results.json").read_text())["test"]
