"""A recipe warns about options only another recipe reads."""

from __future__ import annotations

import argparse
import warnings

import pytest

from t5electra.commands import finetune, pretrain


def _ns(*overrides):
    return argparse.Namespace(config=None, objective=None, overrides=list(overrides))


def test_t5_pretraining_warns_about_other_recipes_keys():
    with pytest.warns(UserWarning, match=r"T5 pretraining .* does not read data.mask_prob \(read by ELECTRA "
                                         r"pretraining.*electra.head \(read by ELECTRA fine-tuning"):
        pretrain.resolve_config(_ns("--electra.head=qa", "--data.mask_prob=0.3"))
    with pytest.warns(UserWarning, match="data.task"):
        pretrain.resolve_config(_ns("--data.task=sentiment"))


def test_no_warning_for_keys_the_recipe_reads():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pretrain.resolve_config(_ns("--data.noise_density=0.2"))
        pretrain.resolve_config(_ns("--model.preset=electra-tiny", "--data.mask_prob=0.2"))
        finetune.resolve_config(_ns("--model.preset=electra-tiny", "--electra.head=qa", "--data.task=sentiment"))
    with pytest.warns(UserWarning, match="ELECTRA fine-tuning .* does not read data.noise_density"):
        finetune.resolve_config(_ns("--model.preset=electra-tiny", "--data.noise_density=0.3"))


def test_help_says_recipe_defaults_differ(capsys):
    from t5electra.cli import main

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = capsys.readouterr().out
    assert "defaults listed below are the engine's" in out and "t5electra config --for finetune" in out
