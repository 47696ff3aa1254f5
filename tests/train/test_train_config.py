"""Run config: YAML + typed --section.key=value overrides, clear errors, saved YAML, diffs."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from t5electra.errors import ConfigError
from t5electra.train.config import RunConfig, SECTIONS, describe, diff_configs, load_config, parse_overrides


def test_defaults_then_yaml_then_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("optim:\n  lr: 3e-4\n  weight_decay: 0.01\ntrain:\n  max_steps: 50\n"
                 "data:\n  train_files: [a.txt, b.txt]\n")
    cfg = load_config(p, ["--optim.lr=1e-3", "--train.precision=bf16", "--schedule.name=cosine",
                          "--data.validation_files=c.txt,d.txt", "--eval.max_batches=none",
                          "--checkpoint.keep_best=false", "--model.overrides={num_layers: 2, d_model: 64}",
                          "--optim.betas=[0.9, 0.98]", "--train.grad_accum_steps", "4"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)   # override beats YAML
    assert cfg.optim.weight_decay == 0.01                                 # YAML beats default
    assert cfg.train.max_steps == 50 and cfg.train.precision == "bf16"
    assert cfg.data.train_files == ["a.txt", "b.txt"]
    assert cfg.data.validation_files == ["c.txt", "d.txt"]
    assert cfg.eval.max_batches is None and cfg.checkpoint.keep_best is False
    assert cfg.model.overrides == {"num_layers": 2, "d_model": 64}
    assert cfg.optim.betas == [0.9, 0.98] and cfg.train.grad_accum_steps == 4
    assert cfg.schedule.name == "cosine"


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # PyYAML reads "3e-4" as a string (YAML 1.1); the float field must still get 0.0003
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 3e-4\n")
    assert load_config(p).optim.lr == pytest.approx(3e-4)


def test_yaml_quoted_booleans_read_as_the_command_line_reads_them(tmp_path):
    """`fused: 'false'` was refused as "expected true or false, got 'false'" while --optim.fused=false
    (the same text) was accepted; other strings are still refused."""
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  fused: 'false'\ncheckpoint:\n  keep_best: \"No\"\n")
    cfg = load_config(p)
    assert cfg.optim.fused is False and cfg.checkpoint.keep_best is False
    p.write_text("optim:\n  fused: 'maybe'\n")
    with pytest.raises(ConfigError, match=r"optim.fused: expected true or false, got 'maybe'"):
        load_config(p)


def test_unknown_section_and_key_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config section 'optm'.*did you mean 'optim'"):
        load_config(None, ["--optm.lr=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'weight_decy' in section 'optim'.*did you mean 'weight_decay'"):
        load_config(None, ["--optim.weight_decy=1"])
    # the key exists in another section: point there
    with pytest.raises(ConfigError, match=r"unknown key 'warmup_steps'.*did you mean 'schedule.warmup_steps'"):
        load_config(None, ["--optim.warmup_steps=10"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  max_step: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown key 'max_step'.*did you mean 'max_steps'"):
        load_config(p)


@pytest.mark.parametrize("override, message", [
    ("--train.max_steps=ten", r"train.max_steps: expected an integer, got 'ten'"),
    ("--train.max_steps=1.5", r"expected an integer"),
    ("--optim.lr=fast", r"optim.lr: expected a number"),
    ("--checkpoint.keep_best=maybe", r"expected true or false"),
    ("--model.overrides=[1, 2]", r"expected a mapping"),
    ("--train.precision=fp16", r"fp16 overflows"),
    ("--optim.name=adamww", r"did you mean 'adamw'"),
    ("--train.max_steps=0", r"train.max_steps must be >= 1"),
    ("optim.lr", r"expected --section.key=value"),
    ("--optim.lr=-1", r"optim.lr=-1.0: must be a learning rate > 0"),
    ("--optim.lr=0", r"optim.lr=0.0: must be a learning rate > 0"),
    ("--optim.lr=nan", r"optim.lr=nan: expected a finite number"),
    ("--optim.lr=inf", r"optim.lr=inf: expected a finite number"),
    ("--optim.betas=[2,3]", r"optim.betas=\[2.0, 3.0\]: expected two coefficients in \[0, 1\)"),
    ("--optim.betas=[0.9]", r"optim.betas=\[0.9\]: expected two coefficients"),
    ("--optim.weight_decay=-0.1", r"optim.weight_decay=-0.1: must be >= 0"),
    # 0/0 for every weight whose gradient was 0 so far: NaN weights after a step with a finite loss
    ("--optim.eps=0", r"optim.eps=0 with optim.name='adamw': Adam divides by sqrt\(v\) \+ eps.*use optim.eps > 0"),
    ("--data.noise_density=2", r"data.noise_density=2.0: must be a fraction in \(0, 1\)"),
    ("--data.noise_density=-0.5", r"data.noise_density=-0.5: must be a fraction in \(0, 1\)"),
    ("--data.mean_noise_span_length=0", r"data.mean_noise_span_length=0.0: must be a span length >= 1"),
    ("--data.mask_prob=1", r"data.mask_prob=1.0: must be a fraction in \(0, 1\)"),
    ("--data.max_length=1", r"data.max_length=1: must be at least 2 tokens"),
    ("--schedule.warmup_steps=-3", r"schedule.warmup_steps=-3: must be >= 0"),
    ("--train.output_dir=", r"train.output_dir is empty"),
    # beta2_t = 1 - t^0.8 < 0 from step 2: negative second moments, NaN weights
    ("--optim.adafactor_decay_rate=0.8", r"optim.adafactor_decay_rate=0.8: must be <= 0 \(T5: -0.8"),
    ("--optim.adafactor_beta1=1", r"optim.adafactor_beta1=1.0: must be in \[0, 1\)"),
])
def test_bad_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_adam_eps_zero_is_refused_where_adam_reads_it():
    with pytest.raises(ConfigError, match="optim.eps=0 with optim.name='adamw_scaled'"):
        load_config(None, ["--optim.name=adamw_scaled", "--optim.eps=0"])
    assert load_config(None, ["--optim.name=adafactor", "--optim.eps=0"]).optim.eps == 0  # Adafactor has its own


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)


def test_saved_yaml_reloads_identically(tmp_path):
    cfg = load_config(None, ["--optim.lr=2e-4", "--model.preset=t5-small", "--data.train_files=x,y",
                             "--optim.layerwise_lr_decay=0.8"])
    path = cfg.save_yaml(tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 2e-4
    again = load_config(path)
    assert again == cfg and diff_configs(again, cfg) == []


def test_diff_names_fields_and_ignores_resume_safe_ones():
    a = load_config(None, ["--optim.lr=1e-3", "--train.log_every=5"])
    b = load_config(None, ["--optim.lr=2e-3", "--train.log_every=50", "--train.seed=3"])
    assert diff_configs(a, b) == [("optim.lr", 1e-3, 2e-3), ("train.seed", 0, 3)]
    assert ("train.log_every", 5, 50) in diff_configs(a, b, ignore=())


def test_greater_is_better_follows_the_metric():
    from t5electra.train.config import metric_direction, resolve_greater_is_better

    lower = ["loss", "gen_loss", "perplexity", "mse", "sst2/loss"]
    higher = ["accuracy", "gen_acc", "disc_auc", "f1", "macro_f1", "em", "exact_match", "bleu", "chrf", "rouge1",
              "rougeL", "rougeLsum", "pearson", "spearman", "mcc", "sequence_accuracy", "cola/mcc", "average", "auto"]
    assert [metric_direction(m) for m in lower] == [False] * len(lower)
    assert [metric_direction(m) for m in higher] == [True] * len(higher)
    assert metric_direction("replaced_fraction") is None
    assert resolve_greater_is_better("accuracy", None) is True and resolve_greater_is_better("loss", None) is False
    assert load_config(None, ["--eval.metric=accuracy"]).eval.greater_is_better is None  # inferred where used
    assert resolve_greater_is_better("replaced_fraction", True) is True  # a metric of your own: as you say
    with pytest.raises(ConfigError, match=r"eval.greater_is_better=true contradicts eval.metric='loss': lower is "
                                          r"better.*leave eval.greater_is_better unset"):
        load_config(None, ["--eval.metric=loss", "--eval.greater_is_better=true"])
    with pytest.raises(ConfigError, match=r"eval.greater_is_better=false contradicts eval.metric='accuracy'"):
        load_config(None, ["--eval.metric=accuracy", "--eval.greater_is_better=false"])
    with pytest.raises(ConfigError, match=r"eval.metric='acuracy': not a metric whose direction is known \(did you "
                                          r"mean 'accuracy'\?\).*eval.greater_is_better=true"):
        load_config(None, ["--eval.metric=acuracy"])
    # the quickstart's and the README's explicit pair still works
    assert load_config(None, ["--eval.metric=accuracy", "--eval.greater_is_better=true"]).eval.greater_is_better


def test_an_option_missing_from_an_older_saved_config_counts_as_its_default():
    now = load_config(None, ["--optim.lr=1e-3"]).to_dict()
    older = {section: dict(values) for section, values in now.items()}
    del older["optim"]["max_grad_norm"]                     # a run saved before the option existed
    assert diff_configs(older, now) == []
    changed = load_config(None, ["--optim.lr=1e-3", "--optim.max_grad_norm=0.5"]).to_dict()
    assert diff_configs(older, changed) == [("optim.max_grad_norm", None, 0.5)]


def test_every_field_is_documented():
    for name, cls in SECTIONS.items():
        assert {f.name for f in dataclasses.fields(RunConfig)} >= {name}
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
    text = describe()
    assert "--optim.lr (Optional[float], default 0.001): peak learning rate" in text
    assert "--data.train_files (list[str], default [])" in text


def test_parse_overrides_forms():
    assert parse_overrides(["--a.b=1", "c.d=x=y", "--e.f", "2"]) == [("a.b", "1"), ("c.d", "x=y"), ("e.f", "2")]


def test_cli_config_command(tmp_path, capsys):
    from t5electra.cli import main

    p = tmp_path / "run.yaml"
    p.write_text("optim: {lr: 1e-3}\n")
    assert main(["config", "--config", str(p), "--optim.weight_decay=0.01", "--train.max_steps", "7"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = RunConfig.from_dict(printed)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.train.max_steps) == (1e-3, 0.01, 7)
    assert main(["config", "--data.text_columns=[评论]", "--data.label_column=情感"]) == 0
    out = capsys.readouterr().out  # Chinese as written, not "\u8BC4\u8BBA" (RUN/config.yaml alike)
    assert "- 评论" in out and "label_column: 情感" in out
    RunConfig.from_dict(yaml.safe_load(out)).save_yaml(tmp_path / "c.yaml")
    assert "- 评论" in (tmp_path / "c.yaml").read_text(encoding="utf-8")
    assert main(["config", "--optm.lr=1"]) == 1
    assert "unknown config section 'optm'" in capsys.readouterr().err
    assert main(["config", "--list"]) == 0
    assert "--schedule.warmup_ratio (float, default 0.0)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # subcommands without a run config still reject unknown flags
        main(["plot", str(tmp_path), "--optim.lr=1"])
    assert "unrecognized arguments: --optim.lr=1" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["pretrain_t5", "pretrain_electra"])
def test_pretraining_refuses_the_fine_tuning_only_target_length(recipe, tmp_path):
    """data.target_length is read by T5 fine-tuning only: pretraining refuses it before any work."""
    import importlib

    module = importlib.import_module(f"t5electra.recipes.{recipe}")
    base = module.default_config() if hasattr(module, "default_config") else None
    cfg = load_config(None, ["--data.target_length=1", f"--train.output_dir={tmp_path / 'run'}"], **(
        {"base": base} if base is not None else {}))
    with pytest.raises(ConfigError, match="data.target_length=1 is for T5 fine-tuning"):
        module.train(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_config_prints_what_the_electra_recipes_would_run(capsys):
    """ELECTRA's recipes start from their own defaults: `config` prints those (it printed the
    engine's: lr 1e-3, no decay, no warmup, where the run saves 5e-4, 0.01, 0.01)."""
    from t5electra.cli import main
    from t5electra.recipes import finetune_electra, pretrain_electra

    for argv, base in ((["--model.family=electra"], pretrain_electra.default_config("electra-rtd")),
                       (["--for", "finetune", "--model.family=electra"], finetune_electra.default_config())):
        assert main(["config", *argv, "--optim.lr=3e-4"]) == 0
        cfg = RunConfig.from_dict(yaml.safe_load(capsys.readouterr().out))
        assert cfg.optim.lr == 3e-4 and cfg.data.objective == base.data.objective
        assert (cfg.optim.weight_decay, cfg.schedule.warmup_ratio) == (base.optim.weight_decay, base.schedule.warmup_ratio)
