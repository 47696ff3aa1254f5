"""Which recipe a command resolves to without running it: the family an ELECTRA preset or an
ELECTRA checkpoint names (finetune, pretrain and `t5electra config`)."""

from __future__ import annotations

import argparse
import json

import yaml

from t5electra.cli import main
from t5electra.commands import finetune, pretrain


def _ns(*overrides, objective=None, config=None):
    return argparse.Namespace(config=config, objective=objective, overrides=list(overrides))


def test_electra_preset_picks_the_electra_recipe(capsys):
    family, cfg = finetune.resolve_config(_ns("--model.preset=electra-tiny"))
    assert family == "electra" and cfg.model.family == "electra"
    assert finetune.resolve_config(_ns("--model.preset=t5-tiny"))[0] == "t5"
    assert main(["config", "--for", "finetune", "--model.preset=electra-tiny"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["family"] == "electra"


def test_pretrain_init_from_an_electra_run_is_electra(tmp_path):
    run = tmp_path / "run" / "model"
    (run / "discriminator").mkdir(parents=True)
    (run / "discriminator" / "config.json").write_text(json.dumps({"model_type": "electra"}))
    assert pretrain.resolve_objective(_ns(f"--model.init_from={run}")) == "electra-rtd"
    assert pretrain.resolve_objective(_ns(f"--model.init_from={tmp_path / 'run'}")) == "electra-rtd"
    mlm = tmp_path / "mlm" / "model" / "generator"
    mlm.mkdir(parents=True)
    (mlm / "config.json").write_text(json.dumps({"model_type": "electra"}))
    assert pretrain.resolve_objective(_ns(f"--model.init_from={mlm.parent}")) == "mlm"
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert pretrain.resolve_objective(_ns(f"--model.init_from={t5}")) == "t5-span-corruption"
    # an explicit objective still wins
    assert pretrain.resolve_objective(_ns(f"--model.init_from={run}", "--data.objective=mlm")) == "mlm"
