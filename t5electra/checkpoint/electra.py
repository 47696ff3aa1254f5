"""ELECTRA (and BERT) checkpoints in the Hugging Face layout, as declarative key maps.

Our names differ from transformers' only inside the encoder blocks, where query/key/value are one
fused projection (one matmul instead of three)::

    ours                                    transformers (modeling_electra.py / modeling_bert.py)
    layers.{i}.attention.qkv.weight    <-   encoder.layer.{i}.attention.self.{query,key,value}.weight
    layers.{i}.attention.o             <-   encoder.layer.{i}.attention.output.dense
    layers.{i}.attention_norm          <-   encoder.layer.{i}.attention.output.LayerNorm
    layers.{i}.ffn_in                  <-   encoder.layer.{i}.intermediate.dense
    layers.{i}.ffn_out                 <-   encoder.layer.{i}.output.dense
    layers.{i}.ffn_norm                <-   encoder.layer.{i}.output.LayerNorm

Embeddings and heads keep transformers' names. The encoder sits under ``electra.`` in the head
classes and at the root in ``ElectraModel``; BERT checkpoints put it under ``bert.`` or at the root.
:func:`normalize_prefix` moves it to where the loading class wants it, as transformers does with
``base_model_prefix``, so any of these loads into any ELECTRA class.
"""

from __future__ import annotations

import torch

from .keymap import KeyMap, Rule

# The first part of a key that belongs to the encoder body (everything but the heads).
_BODY = ("embeddings.", "embeddings_project.", "encoder.")
# Prefixes an encoder body can carry in a file: ELECTRA heads, BERT heads, bare encoder.
_PREFIXES = ("electra.", "bert.", "")

# HF keys we drop knowingly. They are reported in ``LoadReport.unused``; a class that does have
# one of these heads maps it with a rule first, so only heads of *other* classes end up here
# (e.g. the discriminator head when fine-tuning a discriminator for classification).
IGNORED = (
    r"((electra|bert)\.)?embeddings\.position_ids",  # a buffer old checkpoints saved (arange)
    r"((electra|bert)\.)?pooler\..*",                # BERT's tanh pooler; ELECTRA has none
    r"cls\..*",                                      # BERT's MLM / next-sentence heads
    r"discriminator_predictions\..*",
    r"generator_predictions\..*",
    r"generator_lm_head\..*",
    r"classifier\..*",
    r"qa_outputs\..*",
)

def electra_keymap(prefix: str, head_keys: tuple[str, ...], has_projection: bool,
                   tied_generator: bool = False) -> KeyMap:
    """The key map of one ELECTRA class: its encoder under ``prefix`` ("electra." or "" for the bare
    encoder), its head's weights ``head_keys`` (declared on the class, identical names on both
    sides), ``embeddings_project`` when ``has_projection``; ``tied_generator``: the generator's
    output layer is the word-embedding matrix."""
    p = prefix
    enc = p + "encoder.layer.{i}."
    rules = [Rule(p + f"embeddings.{n}.weight", p + f"embeddings.{n}.weight")
             for n in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")]
    rules.append(Rule(p + "embeddings.LayerNorm.bias", p + "embeddings.LayerNorm.bias"))
    if has_projection:
        rules += [Rule(p + f"embeddings_project.{w}", p + f"embeddings_project.{w}") for w in ("weight", "bias")]
    for w in ("weight", "bias"):
        rules += [
            Rule(p + f"layers.{{i}}.attention.qkv.{w}",
                 tuple(enc + f"attention.self.{n}.{w}" for n in ("query", "key", "value"))),
            Rule(p + f"layers.{{i}}.attention.o.{w}", enc + f"attention.output.dense.{w}"),
            Rule(p + f"layers.{{i}}.attention_norm.{w}", enc + f"attention.output.LayerNorm.{w}"),
            Rule(p + f"layers.{{i}}.ffn_in.{w}", enc + f"intermediate.dense.{w}"),
            Rule(p + f"layers.{{i}}.ffn_out.{w}", enc + f"output.dense.{w}"),
            Rule(p + f"layers.{{i}}.ffn_norm.{w}", enc + f"output.LayerNorm.{w}"),
        ]
    rules += [Rule(k, k) for k in head_keys]
    aliases = {}
    if tied_generator:
        # The generator's output layer IS the word-embedding matrix (tied); transformers 5 does not
        # save it, older versions did: read it only when the embedding itself is absent.
        aliases["generator_lm_head.weight"] = "electra.embeddings.word_embeddings.weight"
    return KeyMap(rules=rules, aliases=aliases, ignore=IGNORED)


def normalize_prefix(hf_sd: dict[str, torch.Tensor], sources: dict[str, str], prefix: str
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Put the encoder body under ``prefix`` ("electra." or ""), wherever the file had it."""
    def rename(key: str) -> str:
        for old in _PREFIXES:
            if key.startswith(old) and key[len(old):].startswith(_BODY):
                return prefix + key[len(old):]
        return key

    out, src = {}, {}
    for k, v in hf_sd.items():
        out[rename(k)] = v
        if k in sources:
            src[rename(k)] = sources[k]
    return out, src
