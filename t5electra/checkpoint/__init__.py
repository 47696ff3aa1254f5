"""Checkpoints in the Hugging Face layout: file IO (io.py), declarative key maps (keymap.py),
and one key map per model family (t5.py, electra.py)."""
