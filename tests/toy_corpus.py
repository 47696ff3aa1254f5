"""A toy corpus for the pretraining tests: ``n`` lines of 8-16 words cycling through ``words``."""

from __future__ import annotations

from pathlib import Path


def toy_lines(words: list[str], n: int) -> list[str]:
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(8 + i % 9)) for i in range(n)]


def write_train_valid(root: Path, words: list[str], n: int, n_train: int) -> None:
    """``root/train.txt`` (the first ``n_train`` lines) and ``root/valid.txt`` (the rest)."""
    lines = toy_lines(words, n)
    (root / "train.txt").write_text("\n".join(lines[:n_train]) + "\n")
    (root / "valid.txt").write_text("\n".join(lines[n_train:]) + "\n")
