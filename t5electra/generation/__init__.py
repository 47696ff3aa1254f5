"""Decoding algorithms over small model interfaces (no model class imported here):
``seq2seq`` (greedy / beam / sampling for encoder-decoders), ``fill_mask`` (ELECTRA's generator
fills [MASK]s, the discriminator flags replaced tokens) and ``sampling`` (top-k / top-p)."""
