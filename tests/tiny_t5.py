"""Random tiny T5s for the generation tests: spread_tiny_t5, and tiny_pair (ours and transformers' with the same weights)."""

from __future__ import annotations

import torch

from t5electra.models.t5 import T5Config, T5ForConditionalGeneration

VOCAB = 128  # the vocabulary of tiny_pair's models (the generation tests' pairs)


def spread_tiny_t5(version: str, seed: int, vocab_size: int, model_type: str = "t5") -> T5ForConditionalGeneration:
    """v1.0: ReLU, tied; v1.1: gated-GELU, untied (``model_type`` mt5 / umt5 for those). Initialised 3x wider than mesh-tf (else a random
    model repeats one token), with the decoder's final norm scaled down so that next-token
    distributions are not one-hot (beam search matters)."""
    torch.manual_seed(seed)
    v11 = version == "v1.1"
    cfg = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu" if v11 else "relu", tie_word_embeddings=not v11,
                   initializer_factor=3.0, model_type=model_type)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.decoder.final_norm.weight.mul_(0.04 if v11 else 0.15)
    return model


def assert_same_seq2seq_outputs(ours, hf, inputs, tol: dict, encoder: bool = True) -> None:
    """Our T5 and a transformers T5 on the same ``inputs`` (ids, mask, labels, decoder mask): the
    same logits and loss (and encoder output) within ``tol``."""
    ids, mask, labels, dec_mask = inputs
    with torch.no_grad():
        a = ours(ids, mask, decoder_attention_mask=dec_mask, labels=labels)
        b = hf(input_ids=ids, attention_mask=mask, decoder_attention_mask=dec_mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, **tol)
    torch.testing.assert_close(a.loss, b.loss, **tol)
    if encoder:
        torch.testing.assert_close(a.encoder_last_hidden_state, b.encoder_last_hidden_state, **tol)


def tiny_pair(version: str, seed: int, tmp_dir):
    """A random tiny T5 (spread_tiny_t5) and the same weights in transformers."""
    import transformers

    ours = spread_tiny_t5(version, seed, VOCAB)
    ours.save_pretrained(tmp_dir)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_dir).eval()
    return ours, hf
