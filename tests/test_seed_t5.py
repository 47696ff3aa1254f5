"""The seed document's T5 snippet (examples/seed_t5.py) runs on t5electra and prints what the
same snippet prints with transformers, on the same local checkpoint directory."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t5electra import T5Config, T5ForConditionalGeneration, T5Tokenizer
from t5electra.errors import CheckpointNotFoundError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seed_t5.py"


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, spiece_model_path):
    """A random tiny T5 with a real SentencePiece vocabulary (sentencepiece's test model)."""
    src = tmp_path_factory.mktemp("spiece")
    (src / "spiece.model").write_bytes(spiece_model_path.read_bytes())
    tok = T5Tokenizer.from_pretrained(src)
    d = tmp_path_factory.mktemp("seed-t5")
    tok.save_pretrained(d)
    torch.manual_seed(3)
    cfg = T5Config.from_preset("t5-tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(d)
    return d


def _run(script: str, model_dir: Path) -> str:
    r = subprocess.run([sys.executable, "-c", script, str(model_dir)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_seed_snippet_prints_what_transformers_prints(t5_dir):
    ours = EXAMPLE.read_text(encoding="utf-8")
    theirs = ours.replace("from t5electra import", "from transformers import")
    assert theirs != ours
    out_ours = _run(ours, t5_dir)
    out_theirs = _run(theirs, t5_dir)
    assert out_ours.strip(), "the snippet printed nothing"
    assert out_ours == out_theirs


def test_seed_snippet_without_a_local_dir_says_so():
    r = subprocess.run([sys.executable, str(EXAMPLE), "/nonexistent/t5-small"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0
    assert "/nonexistent/t5-small" in r.stderr and "CheckpointNotFoundError" in r.stderr
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)
