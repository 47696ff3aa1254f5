"""The generation tests' model pairs: our tiny random T5s and transformers' with the same weights."""

from __future__ import annotations

import warnings

import pytest

from tiny_t5 import tiny_pair


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """(version, seed) -> (ours, transformers'), identical weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {(v, s): tiny_pair(v, s, tmp_path_factory.mktemp(f"t5-{v}-{s}"))
                for v in ("v1.0", "v1.1") for s in range(3)}
