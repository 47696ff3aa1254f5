"""T5 checkpoints in the Hugging Face layout, as a declarative key map.

Our names (models/t5.py) differ from transformers' (models/t5/modeling_t5.py) in three ways:
blocks have named sublayers instead of ``layer.0/1/2``; the relative position bias belongs to the
stack instead of block 0's self-attention; and projections are fused (concatenated along the
output dimension on load, split on save)::

    ours                                   transformers
    shared.weight                          shared.weight  (aliases: {encoder,decoder}.embed_tokens.weight)
    {s}.relative_attention_bias.weight     {s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight
    {s}.blocks.{i}.relative_attention_bias {s}.block.{i}.layer.0.SelfAttention.relative_attention_bias  (umT5)
    {s}.blocks.{i}.self_attn_norm.weight   {s}.block.{i}.layer.0.layer_norm.weight
    {s}.blocks.{i}.self_attn.qkv.weight    {s}.block.{i}.layer.0.SelfAttention.{q,k,v}.weight
    {s}.blocks.{i}.self_attn.o.weight      {s}.block.{i}.layer.0.SelfAttention.o.weight
    decoder.blocks.{i}.cross_attn_norm     decoder.block.{i}.layer.1.layer_norm
    decoder.blocks.{i}.cross_attn.q        decoder.block.{i}.layer.1.EncDecAttention.q
    decoder.blocks.{i}.cross_attn.kv       decoder.block.{i}.layer.1.EncDecAttention.{k,v}
    decoder.blocks.{i}.cross_attn.o        decoder.block.{i}.layer.1.EncDecAttention.o
    {s}.blocks.{i}.ff_norm                 {s}.block.{i}.layer.{1 enc, 2 dec}.layer_norm
    {s}.blocks.{i}.ff.wi                   ....DenseReluDense.wi, or {wi_0, wi_1} (gated)
    {s}.blocks.{i}.ff.wo                   ....DenseReluDense.wo
    {s}.final_norm.weight                  {s}.final_layer_norm.weight
    lm_head.weight                         lm_head.weight  (untied only; tied: an alias of shared.weight)

mT5 checkpoints use the same names; umT5's have a relative position bias in every block.
"""

from __future__ import annotations

from .keymap import KeyMap, Rule


def _stack_rules(stack: str, *, gated: bool, decoder: bool, per_layer_bias: bool = False) -> list[Rule]:
    ours, hf = f"{stack}.blocks.{{i}}", f"{stack}.block.{{i}}.layer"
    ff = 2 if decoder else 1  # index of the feed-forward sublayer in HF's block.layer list
    rules = [
        Rule(f"{ours}.relative_attention_bias.weight", f"{hf}.0.SelfAttention.relative_attention_bias.weight")
        if per_layer_bias else  # umT5: every block's; T5, mT5: block 0's, shared by the stack
        Rule(f"{stack}.relative_attention_bias.weight",
             f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        Rule(f"{stack}.final_norm.weight", f"{stack}.final_layer_norm.weight"),
        Rule(f"{ours}.self_attn_norm.weight", f"{hf}.0.layer_norm.weight"),
        Rule(f"{ours}.self_attn.qkv.weight", tuple(f"{hf}.0.SelfAttention.{p}.weight" for p in "qkv")),
        Rule(f"{ours}.self_attn.o.weight", f"{hf}.0.SelfAttention.o.weight"),
        Rule(f"{ours}.ff_norm.weight", f"{hf}.{ff}.layer_norm.weight"),
        Rule(f"{ours}.ff.wi.weight", (f"{hf}.{ff}.DenseReluDense.wi_0.weight", f"{hf}.{ff}.DenseReluDense.wi_1.weight")
             if gated else f"{hf}.{ff}.DenseReluDense.wi.weight"),
        Rule(f"{ours}.ff.wo.weight", f"{hf}.{ff}.DenseReluDense.wo.weight"),
    ]
    if decoder:
        rules += [
            Rule(f"{ours}.cross_attn_norm.weight", f"{hf}.1.layer_norm.weight"),
            Rule(f"{ours}.cross_attn.q.weight", f"{hf}.1.EncDecAttention.q.weight"),
            Rule(f"{ours}.cross_attn.kv.weight", (f"{hf}.1.EncDecAttention.k.weight", f"{hf}.1.EncDecAttention.v.weight")),
            Rule(f"{ours}.cross_attn.o.weight", f"{hf}.1.EncDecAttention.o.weight"),
        ]
    return rules


def t5_keymap(config, *, decoder: bool = True, lm_head: bool = True) -> KeyMap:
    """The key map of a T5 class: encoder-only (``decoder=False``), without head, or with lm_head."""
    kw = dict(gated=config.feed_forward_proj.startswith("gated-"), per_layer_bias=config.per_layer_position_bias)
    rules = [Rule("shared.weight", "shared.weight")] + _stack_rules("encoder", decoder=False, **kw)
    aliases = {"encoder.embed_tokens.weight": "shared.weight"}
    # transformers ignores this one on load too: old checkpoints carry an unused cross-attention bias.
    ignore = [r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight"]
    if decoder:
        rules += _stack_rules("decoder", decoder=True, **kw)
        aliases["decoder.embed_tokens.weight"] = "shared.weight"
    else:
        ignore.append(r"decoder\..*")  # T5EncoderModel from a full seq2seq checkpoint
    if lm_head and not config.tie_word_embeddings:
        rules.append(Rule("lm_head.weight", "lm_head.weight"))
    elif lm_head:
        aliases["lm_head.weight"] = "shared.weight"  # a tied copy some writers store
    else:
        ignore.append(r"lm_head\.weight")
    return KeyMap(rules=rules, aliases=aliases, ignore=tuple(ignore))
