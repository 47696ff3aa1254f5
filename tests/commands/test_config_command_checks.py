"""`t5electra config` refuses what pretrain / finetune refuse, and takes pretrain's --objective."""

from __future__ import annotations

import pytest
import yaml

from t5electra.cli import main


@pytest.mark.parametrize("args, message", [
    (["--model.preset=electra-smal"], "did you mean 'electra-small'"),
    (["--model.overrides={num_layer: 2}"], "did you mean 'num_layers'"),
    (["--model.preset=electra-tiny", "--model.overrides={d_model: 2}"], "d_model"),
    (["--model.family=bert"], "model.family='bert' is not one of"),
    (["--data.objective=mlm", "--model.family=t5"], "model.family='t5'"),
    (["--data.objective=span"], "data.objective='span' is not one of"),
    (["--model.preset=electra-tiny", "--model.overrides.num_attention_heads=0"], "num_attention_heads"),
])
def test_config_refuses_what_the_recipe_refuses(args, message, capsys):
    assert main(["config", *args]) == 1
    assert message in capsys.readouterr().err


def test_config_takes_objective(capsys):
    assert main(["config", "--objective", "electra-rtd"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["data"]["objective"] == "electra-rtd" and out["model"]["family"] == "electra"
    assert main(["config", "--model.preset=t5-tiny", "--model.overrides.num_layers=1"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["overrides"] == {"num_layers": 1}
