"""A small WordPiece vocabulary for the tokenizer tests (tests/conftest.py's small_dir holds it)."""

SMALL_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "f", "hello", "world",
               "extra", "##ordinary"]
