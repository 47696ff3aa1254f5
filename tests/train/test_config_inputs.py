"""How values reach the run config: ~ in paths, mapping overrides, YAML vs command line, seeds,
bad --config files, did-you-mean across sections, path spelling on resume."""

from __future__ import annotations

import os

import pytest

from t5electra.errors import ConfigError
from t5electra.train.config import load_config


def test_tilde_expanded_in_every_path_field(tmp_path):
    home = os.path.expanduser("~")
    cfg = load_config(overrides=["--train.output_dir=~/runs/x", "--data.train_files=~/a.txt,~/b.txt",
                                 "--data.validation_files=~/dev.txt", "--data.tokenizer=~/tok",
                                 "--model.init_from=~/m", "--data.task_dir=~/glue", "--data.test_files=~/t.txt",
                                 "--checkpoint.resume=~/runs/y"])
    assert cfg.train.output_dir == f"{home}/runs/x"
    assert cfg.data.train_files == [f"{home}/a.txt", f"{home}/b.txt"]
    assert cfg.data.validation_files == [f"{home}/dev.txt"] and cfg.data.test_files == [f"{home}/t.txt"]
    assert cfg.data.tokenizer == f"{home}/tok" and cfg.model.init_from == f"{home}/m"
    assert cfg.data.task_dir == f"{home}/glue" and cfg.checkpoint.resume == f"{home}/runs/y"
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  output_dir: ~/r\ndata:\n  train_files: [~/c.txt]\n")
    cfg = load_config(y)
    assert cfg.train.output_dir == f"{home}/r" and cfg.data.train_files == [f"{home}/c.txt"]
    assert load_config(overrides=["--checkpoint.resume=auto"]).checkpoint.resume == "auto"


def test_mapping_overrides_merge_into_the_yaml(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  overrides: {num_layers: 4, d_model: 64}\n")
    cfg = load_config(y, ["--model.overrides={dropout_rate: 0.0, d_model: 32}"])
    assert cfg.model.overrides == {"num_layers": 4, "d_model": 32, "dropout_rate": 0.0}
    cfg = load_config(y, ["--model.overrides.num_layers=2", "--model.overrides.feed_forward_proj=gated-gelu"])
    assert cfg.model.overrides == {"num_layers": 2, "d_model": 64, "feed_forward_proj": "gated-gelu"}
    assert load_config(y, ["--model.overrides={}"]).model.overrides == {}
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(overrides=["--optim.lr.x=1"])


def test_resume_compares_paths_as_the_files_they_name(tmp_path):
    from t5electra.train.config import diff_configs

    a = load_config(overrides=["--data.tokenizer=etok/", "--data.train_files=./corpus.txt"])
    b = load_config(overrides=[f"--data.tokenizer={tmp_path}/etok", f"--data.train_files={tmp_path}/corpus.txt"])
    assert diff_configs(a, load_config(overrides=["--data.tokenizer=etok", "--data.train_files=corpus.txt"])) == []
    assert diff_configs(a, b, workdirs=(tmp_path, "/elsewhere")) == []
    assert [k for k, *_ in diff_configs(a, b, workdirs=("/elsewhere", "/elsewhere"))] == ["data.tokenizer",
                                                                                          "data.train_files"]
    c = load_config(overrides=["--data.tokenizer=other"])
    assert [k for k, *_ in diff_configs(a, c, workdirs=(tmp_path, tmp_path))] == ["data.tokenizer",
                                                                                   "data.train_files"]


@pytest.mark.parametrize("arg, hint", [
    ("--train.lr=1e-4", "optim.lr"), ("--optim.seed=1", "train.seed"), ("--train.metric=f1", "eval.metric"),
    ("--model.lr=1", "optim.lr"), ("--lr=1e-4", "optim.lr"), ("--seed=1", "train.seed"),
    ("--max_steps=10", "train.max_steps"), ("--output_dir=x", "train.output_dir"),
    ("--optim.warmup_steps=3", "schedule.warmup_steps"), ("--optim.layerwise_lr_dcay=0.8", "layerwise_lr_decay"),
    ("--max_step=10", "train.max_steps"),
])
def test_did_you_mean_names_the_key_in_its_section(arg, hint):
    with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
        load_config(overrides=[arg])


def test_integers_are_exact_and_seeds_in_range():
    from t5electra.core.typed_config import coerce

    assert coerce("12345678901234567890", int, "x") == 12345678901234567890
    assert coerce("1e4", int, "x") == 10000 and coerce("1_000", int, "x") == 1000
    assert load_config(overrides=["--train.seed=4294967295"]).train.seed == 2**32 - 1
    for bad in ("-1", "4294967296", "12345678901234567890"):
        with pytest.raises(ConfigError, match=r"train.seed.*\[0, 2\*\*32\)"):
            load_config(overrides=[f"--train.seed={bad}"])


def test_unreadable_config_files_are_config_errors(tmp_path):
    gbk = tmp_path / "gbk.yaml"
    gbk.write_bytes("train:\n  output_dir: runs/中文\n".encode("gbk"))
    with pytest.raises(ConfigError, match="gbk.yaml.*not UTF-8"):
        load_config(gbk)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_yaml_values_read_as_the_command_line_reads_them(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  max_steps: 1e4\n  batch_size: 8.0\ndata:\n  train_files: corpus.txt\n  tokenizer: tok\n")
    cfg = load_config(y)
    assert cfg.train.max_steps == 10000 and cfg.train.batch_size == 8
    assert cfg.data.train_files == ["corpus.txt"]
    y.write_text("train:\n  max_steps: 2.5e0\n")
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(y)
    y.write_text("train:\n  max_steps: lots\n")
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(y)
