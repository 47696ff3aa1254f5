"""The ELECTRA pretraining recipe end to end on a tiny model: RTD and MLM losses go down, the metrics
`t5electra plot` draws are logged, the outputs load as generator/discriminator checkpoints (and in
ElectraPipeline), and resuming from a checkpoint reproduces the uninterrupted losses exactly."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from t5electra.errors import ConfigError
from t5electra.pipelines import ElectraPipeline
from t5electra.models.electra import ElectraForMaskedLM, ElectraForPreTraining, ElectraForSequenceClassification
from t5electra.recipes.pretrain_electra import default_config, main, train
from t5electra.tokenizers import ElectraTokenizer
from t5electra.train.config import load_config
from t5electra.train.logging import read_metrics
from train_device import DEVICE_ARGS
from toy_corpus import write_train_valid

WORDS = ("the cat sat on a mat while the dog ran after a red ball in the green park near the old house "
         "and children played games under tall trees until the sun went down over quiet hills").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("electrapre")
    write_train_valid(root, WORDS, 300, 260)
    ElectraTokenizer.train([str(root / "train.txt")], vocab_size=120, output_dir=root / "tokenizer", min_frequency=1)
    return root


def _args(root, run, steps=8, *extra):
    return [f"--train.output_dir={run}", f"--data.train_files={root / 'train.txt'}",
            f"--data.validation_files={root / 'valid.txt'}", f"--data.tokenizer={root / 'tokenizer'}",
            "--model.preset=electra-tiny", "--data.max_length=32", "--train.batch_size=8",
            f"--train.max_steps={steps}", "--train.log_every=1", "--checkpoint.every_steps=4",
            "--eval.every_steps=4", "--eval.max_batches=2", "--optim.lr=1e-2", "--schedule.warmup_steps=1",
            *DEVICE_ARGS, "--train.progress=false", "--train.tensorboard=false",
            "--checkpoint.resume=auto", *extra]


def _config(args):
    return load_config(None, args, base=default_config())


def test_rtd_learns_saves_and_resumes_exactly(corpus, tmp_path):
    run = tmp_path / "run"
    train(_config(_args(corpus, run)))
    records = read_metrics(run)
    train_lines = {r["step"]: r for r in records if r["split"] == "train"}
    evals = [r for r in records if r["split"] == "eval"]
    assert sorted(train_lines) == list(range(1, 9))
    first, last = train_lines[1], train_lines[8]
    vocab = len(ElectraTokenizer.from_pretrained(corpus / "tokenizer"))
    assert first["gen_loss"] == pytest.approx(math.log(vocab), rel=0.1)  # fresh generator: about ln(vocab)
    assert first["loss"] == pytest.approx(first["gen_loss"] + 50 * first["disc_loss"], rel=1e-5)
    assert last["loss"] < first["loss"] - 3 and last["gen_loss"] < first["gen_loss"]
    for key in ("gen_acc", "disc_acc", "disc_precision", "disc_recall", "disc_auc", "lr", "tokens_per_s"):
        assert key in last, key
    assert [r["step"] for r in evals] == [4, 8] and {"loss", "disc_auc", "gen_acc"} <= set(evals[0])
    # warmup of 1 step, then linear decay to 0 at step 8
    assert train_lines[1]["lr"] == 0.0 and train_lines[2]["lr"] == pytest.approx(1e-2)
    assert train_lines[8]["lr"] == pytest.approx(1e-2 / 7)
    assert "electra.png" in {p.name for p in (run / "plots").iterdir()}

    # outputs: generator/ + discriminator/ + tokenizer, each a complete HF model directory
    final = run / "model"
    disc = ElectraForPreTraining.from_pretrained(final / "discriminator")
    gen = ElectraForMaskedLM.from_pretrained(final / "generator")
    assert disc.config.hidden_size == 32 and gen.config.hidden_size == 8  # electra-tiny-generator's width
    assert torch.equal(disc.electra.embeddings.word_embeddings.weight, gen.electra.embeddings.word_embeddings.weight)
    pipe = ElectraPipeline.from_pretrained(final)
    assert pipe.detect("the cat sat on a mat")  # runs end to end
    clf = ElectraForSequenceClassification.from_pretrained(final / "discriminator", num_labels=2)
    assert clf.load_report.newly_initialized  # a fresh head on the pretrained encoder
    ElectraTokenizer.from_pretrained(final / "discriminator")
    assert (run / "checkpoints" / "step-00000004" / "discriminator" / "vocab.txt").is_file()

    # resume from step 4: the same losses and metrics for steps 5..8, to the last bit
    shutil.rmtree(run / "checkpoints" / "step-00000008")
    (run / "checkpoints" / "latest").write_text("step-00000004\n")
    train(_config(_args(corpus, run)))
    again = {r["step"]: r for r in read_metrics(run) if r["split"] == "train"}
    for s in range(5, 9):
        assert again[s]["loss"] == train_lines[s]["loss"], s
        assert again[s]["gen_acc"] == train_lines[s]["gen_acc"], s
    resumed = ElectraForPreTraining.from_pretrained(run / "model" / "discriminator")
    for (name, a), b in zip(disc.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_mlm_baseline_and_generator_size(corpus, tmp_path):
    run = tmp_path / "mlm"
    train(_config(_args(corpus, run, 6, "--data.objective=mlm", "--eval.every_steps=0")))
    lines = [r for r in read_metrics(run) if r["split"] == "train"]
    assert "disc_loss" not in lines[0] and lines[-1]["gen_loss"] < lines[0]["gen_loss"]
    assert not (run / "model" / "discriminator").exists()
    mlm = ElectraForMaskedLM.from_pretrained(run / "model" / "generator")
    assert mlm.config.hidden_size == 32  # the baseline is discriminator-sized, as in the official code
    assert json.loads((run / "model" / "pretraining_config.json").read_text())["electra_objective"] is False
    # RUN/model of an MLM run is usable as the README's flow uses it (was: "no config.json" for both)
    from t5electra.commands.convert import source_dir
    from t5electra.recipes.finetune_electra import model_dir

    assert source_dir(run) == source_dir(run / "model") == run / "model" / "generator"
    assert model_dir(str(run / "model")) == run / "model" / "generator"

    run2 = tmp_path / "half"
    train(_config(_args(corpus, run2, 1, "--electra.generator_size=0.5", "--electra.disc_weight=10",
                        "--eval.every_steps=0", "--data.validation_files=")))
    assert ElectraForMaskedLM.from_pretrained(run2 / "model" / "generator").config.hidden_size == 16
    first = read_metrics(run2)[0]
    assert first["loss"] == pytest.approx(first["gen_loss"] + 10 * first["disc_loss"], rel=1e-5)


def test_bad_setups_fail_before_training(corpus, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"tokenizer has \d+ tokens but the model's vocab_size is 64"):
        train(_config(_args(corpus, tmp_path / "a", 2, "--model.overrides={vocab_size: 64}")))
    assert main(_args(corpus, tmp_path / "b", 2, "--data.train_files=" + str(tmp_path / "none.txt"))) == 1
    assert "pretrain_electra: error:" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n")
    assert main(_args(corpus, tmp_path / "c", 2, "--data.train_files=" + str(tmp_path / "empty.txt"))) == 1
    assert "empty corpus" in capsys.readouterr().err
    assert main(_args(corpus, tmp_path / "d", 2, "--data.objective=t5-span-corruption")) == 1
    assert "'electra-rtd' or 'mlm'" in capsys.readouterr().err
    assert main(_args(corpus, tmp_path / "e", 2, "--electra.disc_wieght=1")) == 1
    assert "did you mean 'disc_weight'" in capsys.readouterr().err
    assert not (tmp_path / "a" / "checkpoints").exists()
    # one model (a discriminator, or transformers' ELECTRA/BERT directory) has no generator to go on with:
    # said, with what to do (it was "no pretraining_config.json (not written by ElectraPretrainer)")
    from t5electra.models.electra import ElectraConfig, ElectraForPreTraining

    ElectraForPreTraining(ElectraConfig.from_preset("electra-tiny", vocab_size=120)).save_pretrained(tmp_path / "one")
    with pytest.raises(ConfigError, match=r"one model \(config.json\), not an ELECTRA pretraining output.*t5electra finetune"):
        train(_config(_args(corpus, tmp_path / "f", 2, f"--model.init_from={tmp_path / 'one'}",
                            "--model.preset=null")))


def test_default_recipe_is_electra_small_pretraining():
    """docs/reference.md, ELECTRA pretraining: AdamW lr 5e-4, weight decay 0.01, eps 1e-6, 128 tokens,
    linear warmup (10k of 1M steps) then decay, generator loss + 50 x discriminator loss."""
    cfg = default_config("electra-rtd")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.eps) == ("adamw", 5e-4, 0.01, 1e-6)
    assert (cfg.data.max_length, cfg.schedule.name, cfg.schedule.warmup_ratio) == (128, "linear", 0.01)
    assert cfg.electra.disc_weight == 50.0


def test_generator_follows_a_narrowed_discriminator():
    """model.overrides that narrow the discriminator: the generator keeps the preset's ratio of it
    (it kept the preset's absolute widths: hidden 64 over a 32-wide discriminator)."""
    from t5electra.models.electra import ElectraConfig
    from t5electra.recipes.pretrain_electra import default_config, generator_config
    from t5electra.train.config import load_config

    narrow = load_config(None, ["--model.preset=electra-small", "--model.overrides={hidden_size: 32, embedding_size: 16, "
                                "intermediate_size: 64, num_attention_heads: 2}"], base=default_config())
    disc = ElectraConfig.from_preset("electra-small", **narrow.model.overrides)
    assert generator_config(narrow, disc).hidden_size == 8  # electra-small's generator is 1/4 of it
    plain = load_config(None, ["--model.preset=electra-small"], base=default_config())
    assert generator_config(plain, ElectraConfig.from_preset("electra-small")).hidden_size == 64  # unchanged
