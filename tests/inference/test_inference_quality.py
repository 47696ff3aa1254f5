"""benchmarks/inference_quality.py's helpers: variant parsing, the temporary default ``keep``
(evaluate_checkpoint's models), and the token agreement measure."""

from __future__ import annotations

import pytest
import torch

from benchmarks.inference_quality import default_keep, parse_variant, token_agreement
from t5electra.inference import weights as W


def test_parse_variant():
    assert parse_variant("int8") == ("int8", None)  # the default keep
    assert parse_variant("int8:") == ("int8", ())  # nothing kept
    assert parse_variant(r"int8:\.wo$,lm_head") == ("int8", (r"\.wo$", "lm_head"))


def test_default_keep_applies_inside_and_restores_after_an_error():
    before = dict(W.DEFAULT_KEEP)
    with pytest.raises(RuntimeError):
        with default_keep(r"int8:\.wo$") as weights:
            assert weights == "int8" and W.DEFAULT_KEEP["int8"] == (r"\.wo$",)
            raise RuntimeError("evaluation failed")
    assert W.DEFAULT_KEEP == before


def test_token_agreement_counts_up_to_the_reference_eos():
    ref = torch.tensor([[5, 6, 1, 0], [7, 8, 9, 1]])     # EOS = 1: rows count 3 and 4 tokens
    other = torch.tensor([[5, 9, 1, 4], [7, 8, 9, 1]])   # one of the 7 differs; after EOS is ignored
    assert token_agreement(ref, other, 1) == pytest.approx(6 / 7)
    assert token_agreement(ref, ref, 1) == 1.0
