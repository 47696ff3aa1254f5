"""Training FLOPs counted from the model config and the token counts of a run.

The rule (as in Kaplan et al. 2020, Table 1, and Hoffmann et al. 2022, Appendix F): count every
matrix multiplication, 2 FLOPs per multiply-add, and nothing else (norms, softmax, activations,
dropout and embedding lookups are < 2% at these sizes and are left out). A training step costs
3x the forward pass (the backward pass computes gradients for activations and for weights:
2x the forward). So a transformer layer costs, per token, 2 x its weight count (the familiar
``6 * N_nonembedding * tokens`` for training) plus the attention term ``4 * T_kv * d_attn``
(``Q K^T`` and ``softmax(.) V``, each ``2 * T_kv * d_attn`` per query token), plus the output
layers (``2 * d * V`` per predicted token).

T5 (encoder S input tokens, decoder T target tokens, d = d_model, a = num_heads * d_kv,
f = d_ff, g = 2 for a gated FFN else 1, L_e / L_d layers, V = vocab_size), one example forward:

    encoder  S * L_e * (8da + 4Sa + 2(g+1)df)
    decoder  L_d * (T * (8da + 4Ta  +  4da + 4Sa  +  2(g+1)df)  +  S * 4da)
                       self-attn       cross-attn (q, o; scores)   cross-attn k, v on the S encoder tokens
    lm_head  T * 2dV

The decoder's causal self-attention is counted over the full T x T matrix (the kernel computes it).

ELECTRA encoder (T tokens, H = hidden_size, I = intermediate_size, E = embedding_size, L layers):

    body     T * (2EH if E != H) + T * L * (8H^2 + 4TH + 4HI)
    RTD head T * (2H^2 + 2H)                      discriminator: dense H->H, then H->1
    MLM head M * (2HE + 2EV)                      generator: dense H->E, tied output E->V, at the M masked positions

One ELECTRA RTD step per sequence: ``3 * (generator body + MLM head) + 4MV (Gumbel-max sampling
of the M masked positions: temperature, noise, add, argmax; no backward) + 3 * (discriminator body
+ RTD head)``. The MLM-only baseline: ``3 * (body + MLM head)`` of its (discriminator-sized) model.
``M = mask_prob * (T - 2)`` real tokens ([CLS] and [SEP] are never masked), capped like
:func:`t5electra.data.masking.mask_tokens` at ``int((mask_prob + 0.005) * T)``.

Every batch of the pretraining recipes has a fixed shape (packed rows), so the counts are exact
for pretraining; fine-tuning batches are padded to their longest example, so
:func:`finetune_flops` is an upper bound (every example at the maximum length).
"""

from __future__ import annotations

from typing import Any

from ..data.objectives import compute_input_and_target_lengths
from ..errors import ConfigError
from ..models.electra import ElectraConfig
from ..models.t5 import T5Config
from ..train.config import RunConfig

TRAIN_FACTOR = 3          # forward + backward (2x forward)
SAMPLE_FLOPS_PER_LOGIT = 4  # Gumbel-max: divide by the temperature, add the noise (its log-log counted once), argmax


# --------------------------------------------------------------------------------------------
# T5
# --------------------------------------------------------------------------------------------
def t5_forward_flops(config: T5Config, inputs_length: int, targets_length: int) -> dict[str, int]:
    """Forward FLOPs of one example by part (``encoder``, ``decoder``, ``lm_head``) and ``total``."""
    d, a, f = config.d_model, config.num_heads * config.d_kv, config.d_ff
    g = 2 if config.is_gated_act else 1
    layers_e = config.num_layers
    layers_d = config.num_decoder_layers if config.num_decoder_layers is not None else config.num_layers
    S, T = inputs_length, targets_length
    ffn = 2 * (g + 1) * d * f
    encoder = S * layers_e * (8 * d * a + 4 * S * a + ffn)
    decoder = layers_d * (T * (8 * d * a + 4 * T * a + 4 * d * a + 4 * S * a + ffn) + S * 4 * d * a)
    lm_head = T * 2 * d * config.vocab_size
    return {"encoder": encoder, "decoder": decoder, "lm_head": lm_head, "total": encoder + decoder + lm_head}


def t5_train_flops(config: T5Config, *, inputs_length: int, targets_length: int, batch_size: int, steps: int) -> int:
    """FLOPs of ``steps`` training steps of ``batch_size`` examples of these lengths."""
    return TRAIN_FACTOR * batch_size * steps * t5_forward_flops(config, inputs_length, targets_length)["total"]


def span_corruption_lengths(inputs_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(encoder, decoder) lengths of span-corruption batches, as the pretraining recipe builds them."""
    return inputs_length, compute_input_and_target_lengths(inputs_length, noise_density, mean_noise_span_length)[1]


# --------------------------------------------------------------------------------------------
# ELECTRA
# --------------------------------------------------------------------------------------------
def electra_body_flops(config: ElectraConfig, seq_len: int) -> int:
    """Forward FLOPs of the encoder (embedding projection + layers) on one sequence."""
    H, I, E, T = config.hidden_size, config.intermediate_size, config.embedding_size, seq_len
    project = T * 2 * E * H if E != H else 0
    return project + T * config.num_hidden_layers * (8 * H * H + 4 * T * H + 4 * H * I)


def mlm_head_flops(config: ElectraConfig, positions: int) -> int:
    """Forward FLOPs of the masked-LM head (dense H->E, tied output E->V) at ``positions`` tokens."""
    H, E = config.hidden_size, config.embedding_size
    return positions * (2 * H * E + 2 * E * config.vocab_size)


def rtd_head_flops(config: ElectraConfig, seq_len: int) -> int:
    """Forward FLOPs of the discriminator head (dense H->H, then H->1) on every token."""
    H = config.hidden_size
    return seq_len * (2 * H * H + 2 * H)


def masked_positions(seq_len: int, mask_prob: float) -> int:
    """Masked tokens per full ``[CLS] ... [SEP]`` row, as data/masking.mask_tokens chooses them:
    ``round(mask_prob * seq_len)`` ([CLS]/[SEP] counted in the length, though never masked), capped by
    max_predictions' default and by the maskable tokens."""
    return min(round(mask_prob * seq_len), int((mask_prob + 0.005) * seq_len), seq_len - 2)


def electra_step_flops(discriminator: ElectraConfig, generator: ElectraConfig | None, *, seq_len: int,
                       mask_prob: float = 0.15) -> dict[str, int]:
    """Training FLOPs of one sequence, by part. ``generator=None``: the MLM-only baseline, one
    masked LM of the ``discriminator`` config."""
    M = masked_positions(seq_len, mask_prob)
    if generator is None:
        mlm = TRAIN_FACTOR * (electra_body_flops(discriminator, seq_len) + mlm_head_flops(discriminator, M))
        return {"mlm": mlm, "total": mlm}
    gen = TRAIN_FACTOR * (electra_body_flops(generator, seq_len) + mlm_head_flops(generator, M))
    sample = SAMPLE_FLOPS_PER_LOGIT * M * generator.vocab_size
    disc = TRAIN_FACTOR * (electra_body_flops(discriminator, seq_len) + rtd_head_flops(discriminator, seq_len))
    return {"generator": gen, "sampling": sample, "discriminator": disc, "total": gen + sample + disc}


def electra_train_flops(discriminator: ElectraConfig, generator: ElectraConfig | None, *, seq_len: int,
                        batch_size: int, steps: int, mask_prob: float = 0.15) -> int:
    return batch_size * steps * electra_step_flops(discriminator, generator, seq_len=seq_len,
                                                   mask_prob=mask_prob)["total"]


# --------------------------------------------------------------------------------------------
# From a run config
# --------------------------------------------------------------------------------------------
def _global_batch(cfg: RunConfig, world_size: int) -> int:
    return cfg.train.batch_size * cfg.train.grad_accum_steps * world_size


def pretrain_flops(cfg: RunConfig, model_config: Any, *, generator: ElectraConfig | None = None,
                   steps: int | None = None, world_size: int = 1) -> int:
    """Pretraining FLOPs of the run ``cfg`` (``steps``: default ``train.max_steps``) on ``model_config``
    (a :class:`T5Config`, or the discriminator's :class:`ElectraConfig` with its ``generator`` for RTD)."""
    steps = cfg.train.max_steps if steps is None else steps
    batch = _global_batch(cfg, world_size)
    objective = cfg.data.objective
    if objective == "t5-span-corruption":
        if not isinstance(model_config, T5Config):
            raise ConfigError(f"data.objective={objective!r} needs a T5Config, got {type(model_config).__name__}")
        S, T = span_corruption_lengths(cfg.data.max_length, cfg.data.noise_density, cfg.data.mean_noise_span_length)
        return t5_train_flops(model_config, inputs_length=S, targets_length=T, batch_size=batch, steps=steps)
    if objective in ("electra-rtd", "mlm"):
        if not isinstance(model_config, ElectraConfig):
            raise ConfigError(f"data.objective={objective!r} needs an ElectraConfig, got {type(model_config).__name__}")
        if objective == "electra-rtd" and generator is None:
            raise ConfigError("data.objective='electra-rtd': give the generator's config to count its FLOPs")
        return electra_train_flops(model_config, generator if objective == "electra-rtd" else None,
                                   seq_len=cfg.data.max_length, batch_size=batch, steps=steps,
                                   mask_prob=cfg.data.mask_prob)
    raise ConfigError(f"data.objective={objective!r}: no FLOPs rule (t5-span-corruption, electra-rtd, mlm)")


def finetune_flops(cfg: RunConfig, model_config: Any, *, targets_length: int | None = None,
                   world_size: int = 1) -> int:
    """Upper bound on fine-tuning FLOPs: every example padded to ``data.max_length`` (and, for T5,
    ``targets_length``, default ``data.target_length`` or ``data.max_length``)."""
    batch, steps, S = _global_batch(cfg, world_size), cfg.train.max_steps, cfg.data.max_length
    if isinstance(model_config, T5Config):
        T = targets_length or cfg.data.target_length or S
        return t5_train_flops(model_config, inputs_length=S, targets_length=T, batch_size=batch, steps=steps)
    if isinstance(model_config, ElectraConfig):
        H = model_config.hidden_size  # classification head: dense H->H and H->num_labels on [CLS]
        head = 2 * H * H + 2 * H * model_config.num_labels
        return TRAIN_FACTOR * batch * steps * (electra_body_flops(model_config, S) + head)
    raise ConfigError(f"no FLOPs rule for {type(model_config).__name__}")


def format_flops(n: float) -> str:
    """``1.23e15`` -> ``'1.23 PFLOP'``."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}FLOP"
    return f"{n:.3g} FLOP"
