"""Fixtures of the inference tests."""

from __future__ import annotations

import pytest

from t5electra.inference import decoder_step


@pytest.fixture
def count_flat(monkeypatch):
    """How many decoder steps ran (``steps``), how many of them in the flat loop (``flat``), and a
    switch that sends every step through the modules (``off``)."""
    calls = {"flat": 0, "steps": 0, "off": False}
    plan, decode = decoder_step.plan, decoder_step.decode

    def counted_plan(*args):
        calls["steps"] += 1  # every T5Stack.decode call asks
        return None if calls["off"] else plan(*args)

    def counted_decode(*args):
        calls["flat"] += 1
        return decode(*args)

    monkeypatch.setattr(decoder_step, "plan", counted_plan)
    monkeypatch.setattr(decoder_step, "decode", counted_decode)
    return calls


@pytest.fixture
def flat(count_flat):
    """:func:`count_flat` by its other name (tests/inference/test_decoder_step_api.py)."""
    return count_flat
