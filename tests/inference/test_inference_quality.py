"""benchmarks/inference_quality.py's helpers: variant parsing, the temporary default ``keep``
(evaluate_checkpoint's models), the token agreement measure and where outputs part."""

from __future__ import annotations

import pytest
import torch

from benchmarks.inference_quality import (default_keep, divergence_summary, first_divergences, parse_variant,
                                          token_agreement)
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


def test_first_divergence_and_the_reference_margin_there():
    ref = torch.tensor([[5, 6, 1, 0], [7, 8, 9, 1], [4, 1, 0, 0]])   # EOS = 1
    other = torch.tensor([[5, 9, 1, 4], [7, 8, 9, 1], [4, 2, 6, 1]])  # rows 0 and 2 part (at 1 and 1)
    assert first_divergences(ref, other, 1) == [(0, 1), (2, 1)]
    assert first_divergences(ref, other[:, :1], 1) == [(0, 1), (1, 1), (2, 1)]  # shorter rows part where they end
    margins = torch.tensor([[3.0, 0.01, 2.0, 9.0], [1.0, 1.0, 1.0, 1.0], [2.0, 0.5, 9.0, 9.0]])
    s = divergence_summary(margins, ref, other, 1)
    assert s["rows_diverging"] == 2
    assert s["median_margin_at_divergence"] == pytest.approx(0.01)  # torch's median: the lower middle value
    assert s["share_of_divergences_at_margin_below_0.05"] == 0.5
    # positions up to each EOS: 3 + 4 + 2 = 9, one of them below 0.05
    assert s["share_of_all_positions_at_margin_below_0.05"] == pytest.approx(1 / 9, abs=1e-3)
    assert divergence_summary(margins, ref, ref, 1)["rows_diverging"] == 0
