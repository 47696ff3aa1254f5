"""T5: the whole encoder-decoder in one file.

Paper: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer" (https://arxiv.org/abs/1910.10683). Reference code: mesh-tensorflow / t5x and
transformers' ``models/t5/modeling_t5.py``, with which this file is parity-tested
(tests/models/test_t5_reference.py). What T5 does differently from the textbook Transformer:

- pre-norm residual blocks with RMSNorm (no mean, no bias, fp32 statistics), a final norm per stack;
- attention scores are NOT scaled by 1/sqrt(d_kv) (the init of q absorbs it);
- no absolute positions: a learned relative position bias, computed in the first layer of each
  stack and added in every layer of that stack; cross-attention has none;
- v1.0 (``t5-small``...): ReLU FFN, lm_head tied to the input embedding, decoder output multiplied
  by d_model**-0.5 before it; v1.1: gated-GELU FFN, separate lm_head, no rescaling. The choice
  follows ``feed_forward_proj`` and ``tie_word_embeddings`` in config.json, as in transformers.
- mT5 (``model_type`` ``mt5``, Xue et al. 2021, https://arxiv.org/abs/2010.11934) is v1.1 with a
  250k multilingual vocabulary: the same network. umT5 (``umt5``, Chung et al. 2023,
  https://arxiv.org/abs/2304.09151) gives every layer's self-attention its own relative position
  bias (``T5Config.per_layer_position_bias``) instead of sharing layer 0's.

Speed: q/k/v are one fused projection (``qkv``), cross-attention k/v another (``kv``), the gated
FFN's two input matrices one (``wi``); attention runs through PyTorch's SDPA with the position
bias + mask as one additive float mask, built once per stack. checkpoint/t5.py maps these names
to transformers' (concatenating on load, splitting on save).

Generation protocol (used by t5electra/generation/seq2seq.py; all in ``T5ForConditionalGeneration``)::

    enc = model.encode(input_ids, attention_mask=None)        # (N, S, D) final-normed encoder output
    cache = model.new_decoder_cache(enc, attention_mask, max_length)
        # cross-attention K/V computed once per layer; self-attention K/V preallocated for
        # max_length positions; the relative bias + causal mask precomputed for them
    logits = model.decode_step(decoder_input_ids, cache)     # (N, t) -> (N, t, V) float32
        # runs the decoder on t new tokens at positions cache.length .. cache.length + t - 1
        # (causal among them, attending to everything cached), appends their K/V, advances length
    cache.reorder(index)                                       # (N',) LongTensor, in place
        # keep / duplicate rows (beam search); N' may differ from N. Encoder K/V are not copied
        # while the rows stay grouped by input (rows of input b are b*g .. b*g+g-1): the g beams
        # of an input share its K/V.

``model.generate(...)`` runs t5electra.generation.seq2seq.generate on this protocol. The speed code
lives in t5electra/inference/: ``decode_step`` runs the blocks with ``linear=decode_linear`` (nn/linear.py's
hook: the fastest matmul for a step's few rows), at inference the same ops in one flat loop
(decoder_step.py); ``optimize_for_inference(weights="fp32" | "bf16" | "int8")`` prepares the weights.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.keymap import KeyMap
from ..checkpoint.t5 import t5_keymap
from ..config import ModelConfig
from ..core.generation_config import GenerationConfigAttribute
from ..core.typed_config import option
from ..errors import ConfigError, InvalidInputError
from ..generation import seq2seq
from ..generation.scores import compute_transition_scores
from ..inference.cache import T5DecoderCache, check_position_bias_size
from ..inference.decoding import PackedLinears, decode_linear  # noqa: F401 (t5.PackedLinears)
from ..inference import decoder_step
from ..inference.int8 import ScreenedArgmax
from ..inference.weights import drop_stale_copies, optimize_for_inference
from ..core.outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput
from ..modeling import ModuleView, PreTrainedModel, resized_rows
from ..nn.activations import ACTIVATIONS
from ..nn.attention import IMPLEMENTATIONS, CrossAttention, SelfAttention, mask_to_bias
from ..nn.attention_capture import capture_attention, self_weights, t5_cross_weights
from ..nn.dropout import Dropout
from ..nn.linear import fast_linear
from ..nn.mlp import FeedForward
from ..nn.norm import RMSNorm
from ..nn.recompute import maybe_recompute
from ..nn.position import RelativePositionBias

logger = logging.getLogger("t5electra")


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
# config.json model_type values T5Config reads (and writes back) -> transformers' class-name prefix
MODEL_TYPES = {"t5": "T5", "mt5": "MT5", "umt5": "UMT5"}


@dataclasses.dataclass(kw_only=True)
class T5Config(ModelConfig):
    """T5 hyper-parameters, with the field names and defaults of transformers' ``T5Config``."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # filled below the class
    attribute_map: ClassVar[dict[str, str]] = {"hidden_size": "d_model", "num_attention_heads": "num_heads",
                                               "num_hidden_layers": "num_layers", "head_dim": "d_kv"}

    model_type: str = option("t5", "config.json's model_type: 't5', 'mt5' (the same network; transformers' MT5 "
                                   "classes) or 'umt5' (a relative position bias in every layer; UMT5 classes)")

    vocab_size: int = option(32128, "rows of the embedding (SentencePiece pieces + 100 sentinels, padded: 32128 for "
                                    "t5-small)")
    d_model: int = option(512, "width of the residual stream")
    d_kv: int = option(64, "width of one attention head (num_heads * d_kv need not equal d_model)")
    d_ff: int = option(2048, "inner width of the feed-forward block")
    num_layers: int = option(6, "encoder blocks")
    num_decoder_layers: int | None = option(None, "decoder blocks; None means as many as num_layers")
    num_heads: int = option(8, "attention heads")
    relative_attention_num_buckets: int = option(32, "buckets of the relative position bias (half per direction in "
                                                     "the encoder)")
    relative_attention_max_distance: int = option(128, "distance beyond which all positions share the last bucket")
    dropout_rate: float = option(0.1, "dropout on embeddings, sublayer outputs, attention probabilities and FFN "
                                      "hidden")
    layer_norm_epsilon: float = option(1e-6, "epsilon of RMSNorm")
    initializer_factor: float = option(1.0, "multiplies every init std (mesh-tf init); 1.0 for real training")
    feed_forward_proj: str = option("relu", "FFN activation: '<act>' or 'gated-<act>' ('relu' for v1.0, 'gated-gelu' "
                                            "for v1.1)")
    is_encoder_decoder: bool = option(True, "kept for transformers' config.json; always True for the seq2seq classes")
    use_cache: bool = option(True, "kept for transformers' config.json; our decoding always uses the cache")
    pad_token_id: int | None = option(0, "padding id; also what -100 labels become in the shifted decoder input")
    eos_token_id: int | list[int] | None = option(1, "end-of-sequence id")
    decoder_start_token_id: int | None = option(0, "first decoder input (T5 starts with pad)")
    tie_word_embeddings: bool = option(True, "lm_head shares the input embedding matrix (v1.0) or has its own (v1.1: "
                                             "False)")
    scale_decoder_outputs: bool | None = option(None, "multiply the decoder output by d_model**-0.5 before lm_head; "
                                                      "None: iff tie_word_embeddings. (transformers 5 writes it "
                                                      "explicitly and always sets tie_word_embeddings=True.)")
    classifier_dropout: float = option(0.0, "dropout of classification heads (kept for transformers' config.json)")

    # -- derived ---------------------------------------------------------------------------------
    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def is_gated_act(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def dense_act_fn(self) -> str:
        """The FFN activation's name; 'gated-gelu' means the tanh GELU (as in transformers)."""
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.removeprefix("gated-")

    @property
    def rescale_decoder_output(self) -> bool:
        if self.scale_decoder_outputs is not None:
            return bool(self.scale_decoder_outputs)
        # transformers' MT5 (5.x) never rescales and writes no scale_decoder_outputs (mT5 is untied anyway)
        return self.tie_word_embeddings and self.model_type != "mt5"

    @property
    def per_layer_position_bias(self) -> bool:
        """umT5: each layer's self-attention has its own relative position bias (T5, mT5: layer 0's is shared)."""
        return self.model_type == "umt5"

    # -- checks ----------------------------------------------------------------------------------
    def validate(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type={self.model_type!r} is not one of {', '.join(MODEL_TYPES)}")
        act = self.feed_forward_proj
        parts = act.split("-") if isinstance(act, str) else [None]
        ok = (len(parts) == 1 and parts[0] in ACTIVATIONS) or (
            len(parts) == 2 and parts[0] == "gated" and parts[1] in ACTIVATIONS)
        if not ok:
            names = ", ".join(ACTIVATIONS)
            raise ConfigError(
                f"feed_forward_proj={act!r} is not supported: use '<act>' or 'gated-<act>' with <act> one of "
                f"{names} (T5 v1.0 uses 'relu', v1.1 'gated-gelu')")
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name}={v!r} must be a positive integer")
        if self.num_decoder_layers is not None and self.num_decoder_layers <= 0:
            raise ConfigError(f"num_decoder_layers={self.num_decoder_layers!r} must be positive (or None)")
        nb, md = self.relative_attention_num_buckets, self.relative_attention_max_distance
        if nb < 4 or md <= nb // 2:
            raise ConfigError(f"relative_attention_num_buckets={nb} must be >= 4 and "
                              f"relative_attention_max_distance={md} larger than half of it")
        for name in ("dropout_rate", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be in [0, 1)")
        if self.layer_norm_epsilon <= 0:
            raise ConfigError(f"layer_norm_epsilon={self.layer_norm_epsilon!r} must be positive")
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        for name, ids in (("pad_token_id", [self.pad_token_id]), ("decoder_start_token_id",
                                                                  [self.decoder_start_token_id]), ("eos_token_id", eos)):
            for i in ids:
                if i is not None and not 0 <= i < self.vocab_size:
                    raise ConfigError(f"{name}={i!r} is outside the vocabulary [0, {self.vocab_size})")

    # -- config.json -----------------------------------------------------------------------------
    @classmethod
    def compatible_model_types(cls) -> tuple[str, ...]:
        return tuple(MODEL_TYPES)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "T5Config":
        cfg = super().from_dict(d, source)
        for derived in ("dense_act_fn", "is_gated_act"):  # transformers writes these; we recompute them
            cfg.extra.pop(derived, None)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        # Explicit values, so that every transformers version reads the same model.
        d["num_decoder_layers"] = self.decoder_layers
        d["scale_decoder_outputs"] = self.rescale_decoder_output
        return d


_V1_0 = dict(feed_forward_proj="relu", tie_word_embeddings=True, d_kv=64)
_V1_1 = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, d_kv=64)
T5Config.presets.update({
    # published shapes (google-t5/t5-*, google/t5-v1_1-*)
    "t5-small": dict(_V1_0, d_model=512, d_ff=2048, num_layers=6, num_heads=8),
    "t5-base": dict(_V1_0, d_model=768, d_ff=3072, num_layers=12, num_heads=12),
    "t5-large": dict(_V1_0, d_model=1024, d_ff=4096, num_layers=24, num_heads=16),
    "t5-v1_1-small": dict(_V1_1, d_model=512, d_ff=1024, num_layers=8, num_heads=6),
    "t5-v1_1-base": dict(_V1_1, d_model=768, d_ff=2048, num_layers=12, num_heads=12),
    "t5-v1_1-large": dict(_V1_1, d_model=1024, d_ff=2816, num_layers=24, num_heads=16),
    # google/mt5-*: v1.1 with a 250k vocabulary; google/umt5-*: the same shapes, 256k, per-layer bias
    "mt5-small": dict(_V1_1, model_type="mt5", vocab_size=250112, d_model=512, d_ff=1024, num_layers=8, num_heads=6),
    "mt5-base": dict(_V1_1, model_type="mt5", vocab_size=250112, d_model=768, d_ff=2048, num_layers=12, num_heads=12),
    "umt5-small": dict(_V1_1, model_type="umt5", vocab_size=256384, d_model=512, d_ff=1024, num_layers=8,
                       num_heads=6),
    "umt5-base": dict(_V1_1, model_type="umt5", vocab_size=256384, d_model=768, d_ff=2048, num_layers=12,
                      num_heads=12),
    # tiny random models for tests and demos
    "t5-tiny": dict(_V1_0, vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    "t5-v1_1-tiny": dict(_V1_1, vocab_size=256, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4),
})


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------
def _position_bias(config: T5Config, is_decoder: bool) -> RelativePositionBias:
    return RelativePositionBias(config.num_heads, bidirectional=not is_decoder,
                                num_buckets=config.relative_attention_num_buckets,
                                max_distance=config.relative_attention_max_distance)


class T5Block(nn.Module):
    """Pre-norm residual block: self-attention, [cross-attention,] feed-forward."""

    # True: keep only the input in forward, recompute the rest in backward (nn/recompute.py)
    checkpoint_activations: bool = False

    def __init__(self, config: T5Config, *, is_decoder: bool):
        super().__init__()
        d, eps, p = config.d_model, config.layer_norm_epsilon, config.dropout_rate
        self.is_decoder = is_decoder
        self.self_attn_norm = RMSNorm(d, eps)
        self.self_attn = SelfAttention(d, config.num_heads, config.d_kv, scale=1.0, dropout=p)  # unscaled
        if is_decoder:
            self.cross_attn_norm = RMSNorm(d, eps)
            self.cross_attn = CrossAttention(d, config.num_heads, config.d_kv, scale=1.0, dropout=p)
        self.ff_norm = RMSNorm(d, eps)
        self.ff = FeedForward(d, config.d_ff, config.dense_act_fn, gated=config.is_gated_act, dropout=p)
        self.dropout = Dropout(p)
        if config.per_layer_position_bias:  # umT5: this layer's own (T5Stack.self_attention_bias reads it)
            self.relative_attention_bias = _position_bias(config, is_decoder)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, memory: torch.Tensor | None = None,
                memory_bias: torch.Tensor | None = None, *, kv_cache=None, start: int = 0,
                memory_kv=None, linear=None) -> torch.Tensor:
        return maybe_recompute(self, self._forward, x, bias, memory, memory_bias, kv_cache=kv_cache, start=start,
                               memory_kv=memory_kv, linear=linear)

    def _forward(self, x: torch.Tensor, bias: torch.Tensor, memory: torch.Tensor | None = None,
                 memory_bias: torch.Tensor | None = None, *, kv_cache=None, start: int = 0,
                 memory_kv=None, linear=None) -> torch.Tensor:
        # x (B, T, D); bias (B|1, H, T, K): relative positions + masks (shared by all layers but in umT5).
        # linear(x, weight): how the projections are computed when decoding (nn/linear.py)
        x = x + self.dropout(self.self_attn(self.self_attn_norm(x), bias, kv_cache=kv_cache, start=start,
                                            linear=linear))
        if self.is_decoder:
            x = x + self.dropout(self.cross_attn(self.cross_attn_norm(x), memory, memory_bias, memory_kv=memory_kv,
                                                 linear=linear))
        return x + self.dropout(self.ff(self.ff_norm(x), linear=linear))


class T5Stack(nn.Module):
    """Encoder or decoder: relative position bias (HF: layer 0's; umT5: one per block), blocks, final norm.

    Takes embeddings, not ids: the embedding matrix belongs to the model (shared by both stacks).
    """

    def __init__(self, config: T5Config, *, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        n_layers = config.decoder_layers if is_decoder else config.num_layers
        self.relative_attention_bias = None if config.per_layer_position_bias else _position_bias(config, is_decoder)
        self.blocks = nn.ModuleList(T5Block(config, is_decoder=is_decoder) for _ in range(n_layers))
        self.final_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def self_attention_bias(self, q_len: int, k_len: int, attention_mask: torch.Tensor | None = None,
                            q_offset: int = 0) -> torch.Tensor:
        """Relative position bias + causal mask (decoder) + padding mask -> (L, B|1, H, q_len, k_len), one
        per layer: T5 / mT5 share one (expanded, not copied), umT5 layers have their own."""
        if self.relative_attention_bias is not None:
            bias = self.relative_attention_bias(q_len, k_len, q_offset)[None]  # (1, 1, H, q, k)
        else:
            bias = torch.stack([b.relative_attention_bias(q_len, k_len, q_offset) for b in self.blocks])  # (L,1,H,q,k)
        allowed = None
        if self.is_decoder:
            q_pos = torch.arange(q_offset, q_offset + q_len, device=bias.device)
            allowed = (torch.arange(k_len, device=bias.device)[None, :] <= q_pos[:, None])[None, None]  # (1,1,q,k)
        if attention_mask is not None:
            keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, k)
            allowed = keep if allowed is None else allowed & keep
        # contiguous once here rather than a copy inside every layer's attention kernel
        bias = bias.contiguous() if allowed is None else bias + mask_to_bias(allowed, bias.dtype)
        return bias.expand(len(self.blocks), *bias.shape[1:])

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                states: list | None = None) -> torch.Tensor:
        # x (B, T, D) embeddings; memory (B, S, D) encoder output (decoder only). ``states``: gets
        # each block's input and the final output, as transformers' hidden_states (num_layers + 1)
        bias = self.self_attention_bias(x.shape[1], x.shape[1], attention_mask)
        memory_bias = None if memory_mask is None else mask_to_bias(memory_mask.bool()[:, None, None, :], x.dtype)
        x = self.dropout(x)
        for block, layer_bias in zip(self.blocks, bias):
            if states is not None:
                states.append(x)
            x = block(x, layer_bias, memory, memory_bias)
        x = self.dropout(self.final_norm(x))
        if states is not None:
            states.append(x)
        return x

    def step_linears(self) -> list[nn.Module]:
        """The projections a decoding step runs (cross-attention k/v run once per input, not per step)."""
        return [m for b in self.blocks for m in (b.self_attn.qkv, b.self_attn.o, b.cross_attn.q, b.cross_attn.o,
                                                 b.ff.wi, b.ff.wo)]

    def decode(self, x: torch.Tensor, cache: "T5DecoderCache", linear=None) -> torch.Tensor:
        """The decoder on t new positions with a KV cache; x (N, t, D) -> (N, t, D). ``linear(x, weight)``
        computes the projections (default :func:`decode_linear`); at inference: decoder_step.py."""
        linear = linear or decode_linear
        if (layers := decoder_step.plan(self, T5Block, x, linear, cache)) is not None:
            return decoder_step.decode(self, layers, x, cache, linear)
        start, end = cache.length, cache.length + x.shape[1]
        bias = cache.position_bias[..., start:end, :end]  # (L, 1, H, t, end)
        # The modules' own forward where the fast path does not apply: dropout active, or layers
        # replaced by other modules (e.g. torch.ao dynamic int8 Linear, whose weight is a method).
        plain = (self.training and self.dropout.p > 0) or not all(
            isinstance(m, nn.Linear) for m in self.step_linears())
        x = cache.to_slots(self.dropout(x))  # the cache's rows are slots (inference/cache.py)
        for i, block in enumerate(self.blocks):
            kv_cache = (cache.self_kv[i, 0], cache.self_kv[i, 1])
            memory_kv = (cache.cross_kv[i, 0], cache.cross_kv[i, 1])
            x = block(x, bias[i], memory_bias=cache.cross_bias, kv_cache=kv_cache, start=start, memory_kv=memory_kv,
                      linear=None if plain else linear)
        cache.length = end
        return cache.from_slots(self.dropout(self.final_norm(x)))


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
def shift_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels (teacher forcing): prepend the start token, drop the last label,
    and replace the ignore index -100 by pad."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[..., 1:] = labels[..., :-1]
    return shifted.masked_fill_(shifted == -100, pad_token_id)


def _encoder_hidden(encoder_outputs: Any) -> torch.Tensor:
    """Accept an output object of ours, a tuple (transformers style) or a tensor."""
    if isinstance(encoder_outputs, torch.Tensor):
        return encoder_outputs
    for name in ("encoder_last_hidden_state", "last_hidden_state"):
        if getattr(encoder_outputs, name, None) is not None:
            return getattr(encoder_outputs, name)
    if isinstance(encoder_outputs, (tuple, list)) and encoder_outputs and isinstance(encoder_outputs[0], torch.Tensor):
        return encoder_outputs[0]
    raise InvalidInputError(f"encoder_outputs must be a tensor (N, S, D), a tuple starting with one, or a model "
                            f"output with encoder_last_hidden_state; got {type(encoder_outputs).__name__}")


class T5PreTrainedModel(PreTrainedModel):
    """What all T5 classes share: config class, mesh-tf init, key map, input checks."""

    # fp16: the feed-forward output projections stay fp32 (v1.1's activations overflow fp16 there)
    _keep_in_fp32_modules: ClassVar[tuple[str, ...]] = ("wo",)

    config_class = T5Config
    config: T5Config
    _has_decoder: ClassVar[bool] = True
    _has_lm_head: ClassVar[bool] = False
    input_embeddings_path: ClassVar[str] = "shared"  # both stacks' input embedding (no other copy of it)
    # Check that ids are inside the vocabulary (one host sync per call). A training loop whose data
    # is known to fit (tokenizer size checked against vocab_size) may set this to False on GPU so
    # the CPU can queue the next step without waiting.
    check_inputs: bool = True
    # Greedy steps on CPU with an fp32 output layer pick their token through an int8 copy of it and
    # a proven bound on its error (inference/int8.py: ScreenedArgmax; the same tokens), built on the
    # first greedy step and again after the weights change (T5-small: 16 MB, ~0.1 s once; greedy
    # batch 1 ~1.2-1.4x faster). False: always the full fp32 product. optimize_for_inference sets it
    # (False where the output layer gets bf16 / int8 weights).
    screen_greedy_argmax: bool = True

    @classmethod
    def hf_keymap(cls, config: T5Config) -> KeyMap:
        return t5_keymap(config, decoder=cls._has_decoder, lm_head=cls._has_lm_head)

    def hf_config_dict(self) -> dict[str, Any]:
        """config.json; an mT5 / umT5 names transformers' class of its family (MT5ForConditionalGeneration...)."""
        d = super().hf_config_dict()
        d["architectures"] = [MODEL_TYPES[self.config.model_type] + type(self).__name__.removeprefix("T5")]
        return d

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Mesh-TensorFlow init, as transformers' T5PreTrainedModel._init_weights (stds x initializer_factor).

        The fused qkv / kv / wi matrices get each part's std. The untied lm_head gets d_model**-0.5
        (not 1.0), so a fresh model's loss is about ln(vocab_size)."""
        c = self.config
        f, d, inner = c.initializer_factor, c.d_model, c.num_heads * c.d_kv
        nn.init.normal_(self.shared.weight, std=self._init_std(self.shared))
        for m in self.modules():
            if isinstance(m, RMSNorm):
                m.weight.fill_(f * 1.0)
            elif isinstance(m, RelativePositionBias):
                nn.init.normal_(m.weight, std=f * d**-0.5)
            elif isinstance(m, SelfAttention):
                nn.init.normal_(m.qkv.weight[:inner], std=f * (d * c.d_kv) ** -0.5)  # q
                nn.init.normal_(m.qkv.weight[inner:], std=f * d**-0.5)  # k, v
                nn.init.normal_(m.o.weight, std=f * inner**-0.5)
            elif isinstance(m, CrossAttention):
                nn.init.normal_(m.q.weight, std=f * (d * c.d_kv) ** -0.5)
                nn.init.normal_(m.kv.weight, std=f * d**-0.5)
                nn.init.normal_(m.o.weight, std=f * inner**-0.5)
            elif isinstance(m, FeedForward):
                nn.init.normal_(m.wi.weight, std=f * d**-0.5)
                nn.init.normal_(m.wo.weight, std=f * c.d_ff**-0.5)
        if getattr(self, "lm_head", None) is not None:
            nn.init.normal_(self.lm_head.weight, std=self._init_std(self.lm_head))

    def _init_std(self, layer: nn.Module) -> float:  # the shared embedding: f x 1; the lm_head: f x d_model**-0.5
        return self.config.initializer_factor * (1.0 if isinstance(layer, nn.Embedding) else self.config.d_model**-0.5)

    def optimize_for_inference(self, weights: str = "fp32", **options: Any) -> "T5PreTrainedModel":
        """Fast CPU inference, kernels chosen for this CPU (inference/weights.py, docs/inference.md):
        "fp32" exact (column-major + packed decoder weights), "bf16" / "int8" approximate.
        ``options``: ``keep`` (layers left in fp32), ``pack_weights``. Returns self."""
        return optimize_for_inference(self, weights, **options)

    def get_output_embeddings(self) -> nn.Module | None:
        if not self._has_lm_head:
            return None
        # tied (v1.0, and transformers 5's files): the logits use shared's weight (v1.0 rescales the
        # decoder output first, in forward, as transformers)
        return self.lm_head if self.lm_head is not None else self._tied_linear(self.shared.weight)

    def _resize_output(self, new_num_tokens: int) -> None:
        if self._has_lm_head and isinstance(self.lm_head, nn.Linear):
            self.lm_head = resized_rows(self.lm_head, new_num_tokens)

    def _set_output(self, layer: nn.Linear) -> None:
        if self.lm_head is None:  # untied from now on; v1.0's rescaling of the decoder output stays
            self.config.scale_decoder_outputs = self.config.rescale_decoder_output
            self.config.tie_word_embeddings = False
        self.lm_head = layer

    def encoder_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                        output_hidden_states: bool = False, output_attentions: bool = False) -> BaseModelOutput:
        """input_ids (B, S), attention_mask (B, S) of 1 (token) / 0 (padding) -> last_hidden_state (B, S, D);
        ``output_hidden_states``: also ``hidden_states`` (num_layers + 1, as transformers');
        ``output_attentions``: also ``attentions`` (num_layers of (B, H, S, S))."""
        self._check_inputs(input_ids=input_ids)
        self._check_mask("attention_mask", attention_mask, input_ids.shape)
        states = [] if output_hidden_states else None
        with self._attention_capture(output_attentions, decoder=False) as captured:
            last = self.encoder(self.shared(input_ids), attention_mask, states=states)
        return BaseModelOutput(last_hidden_state=last, hidden_states=None if states is None else tuple(states),
                               attentions=_attentions(captured, last.dtype).get("encoder_attentions"))

    def _attention_capture(self, output_attentions: bool, decoder: bool = True):
        """``output_attentions``: hooks that record each attention layer's weights softmax(q k^T +
        bias), (B, H, T, S) before dropout, during the forward run inside (nn/attention_capture.py:
        the fused SDPA kernels never materialise them)."""
        if not output_attentions:
            return capture_attention({})
        modules = {"encoder": [(b.self_attn, self_weights) for b in self.encoder.blocks]}
        if decoder:
            modules["decoder"] = [(b.self_attn, self_weights) for b in self.decoder.blocks]
            modules["cross"] = [(b.cross_attn, t5_cross_weights) for b in self.decoder.blocks]
        return capture_attention(modules)

    def get_encoder(self) -> ModuleView:
        """transformers' ``get_encoder()``: an nn.Module over the input embedding and the encoder (the
        model's parameters: ``.parameters()``, ``.eval()``, ``.requires_grad_(False)`` act on them);
        ``model.get_encoder()(input_ids=..., attention_mask=...)`` gives ``encoder_forward``'s
        BaseModelOutput, which ``encoder_outputs=`` takes (``model.encoder`` starts from embeddings)."""
        return ModuleView(self.encoder_forward, embed_tokens=self.shared, encoder=self.encoder)

    def set_attn_implementation(self, implementation: str) -> None:
        """'sdpa' (default: torch's fused kernels) or 'eager' (the plain formula); same results."""
        if implementation not in IMPLEMENTATIONS:
            raise ConfigError(f"attn implementation {implementation!r} is not one of {IMPLEMENTATIONS}")
        for m in self.modules():
            if isinstance(m, (SelfAttention, CrossAttention)):
                m.implementation = implementation

    def _check_inputs(self, **named: torch.Tensor | None) -> None:
        """Ids must be integers in [0, vocab_size) (labels may also be -100). One min/max per
        tensor and a single host sync: an out-of-range id would otherwise fail deep inside
        torch (or as an unreadable device-side assert on GPU)."""
        v = self.config.vocab_size
        stats, names = [], []
        for name, t in named.items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
                raise InvalidInputError(f"{name} must be an integer tensor, got "
                                        f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
            if t.ndim != 2 or t.numel() == 0:
                raise InvalidInputError(f"{name} must be (batch, length) with length > 0, got shape {tuple(t.shape)}")
            if not self.check_inputs:
                continue
            if name == "labels":
                t = t.masked_fill(t == -100, 0)
            stats.append(torch.stack(torch.aminmax(t)))
            names.append(name)
        if not stats:
            return
        for name, (lo, hi) in zip(names, torch.stack(stats).tolist()):
            if lo < 0 or hi >= v:
                bad = lo if lo < 0 else hi
                extra = " (or -100 to ignore)" if name == "labels" else ""
                raise InvalidInputError(f"{name} contains id {bad}, outside the vocabulary [0, {v}){extra} "
                                        f"of this {type(self).__name__} (config.vocab_size={v})")

    @staticmethod
    def _check_mask(name: str, mask: torch.Tensor | None, ids_shape: torch.Size) -> None:
        if mask is not None and tuple(mask.shape) != tuple(ids_shape):
            raise InvalidInputError(f"{name} has shape {tuple(mask.shape)}, expected {tuple(ids_shape)} like the ids")


class T5EncoderModel(T5PreTrainedModel):
    """The encoder alone (embeddings, blocks, final norm): for sentence embeddings or classifiers."""

    _has_decoder = False

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, is_decoder=False)
        self._init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                output_hidden_states: bool = False, output_attentions: bool = False) -> BaseModelOutput:
        """input_ids (B, S), attention_mask (B, S) -> last_hidden_state (B, S, D): ``encoder_forward``."""
        return self.encoder_forward(input_ids, attention_mask, output_hidden_states=output_hidden_states,
                                    output_attentions=output_attentions)


class T5Model(T5PreTrainedModel):
    """Encoder-decoder without the language-model head: returns the decoder's hidden states."""

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)  # input embedding of both stacks
        self.encoder = T5Stack(config, is_decoder=False)
        self.decoder = T5Stack(config, is_decoder=True)
        self._build_head()
        self._init_weights()

    def _build_head(self) -> None:
        """No head here; T5ForConditionalGeneration adds lm_head."""

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (N, S) -> the final-normed encoder output (N, S, D)."""
        return self.encoder_forward(input_ids, attention_mask).last_hidden_state

    def _decode(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                labels=None, states: tuple[list, list] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder output (B, T, D), encoder output (B, S, D)) for a full forward pass; ``states``
        (encoder's, decoder's) lists get the stacks' hidden states (output_hidden_states)."""
        if encoder_outputs is None:
            if input_ids is None:
                raise InvalidInputError("pass input_ids (or encoder_outputs from an earlier call)")
            self._check_mask("attention_mask", attention_mask, input_ids.shape)
            enc_ids = input_ids
        else:
            enc_ids = None
        if decoder_input_ids is None and labels is None:
            raise InvalidInputError("pass decoder_input_ids or labels (decoder inputs are then labels shifted right)")
        self._check_inputs(input_ids=enc_ids, decoder_input_ids=decoder_input_ids, labels=labels)
        if encoder_outputs is None:
            enc = self.encoder(self.shared(input_ids), attention_mask, states=None if states is None else states[0])
        else:
            enc = _encoder_hidden(encoder_outputs)
        if decoder_input_ids is None:
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        self._check_mask("decoder_attention_mask", decoder_attention_mask, decoder_input_ids.shape)
        dec = self.decoder(self.shared(decoder_input_ids), decoder_attention_mask, enc, attention_mask,
                           states=None if states is None else states[1])
        return dec, enc

    def get_decoder(self) -> ModuleView:
        """transformers' ``get_decoder()``: an nn.Module over the input embedding (shared with the
        encoder) and the decoder; calling it runs ``decoder_forward``."""
        return ModuleView(self.decoder_forward, embed_tokens=self.shared, decoder=self.decoder)

    def decoder_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        encoder_hidden_states: torch.Tensor | None = None,
                        encoder_attention_mask: torch.Tensor | None = None, *,
                        output_hidden_states: bool = False) -> BaseModelOutput:
        """The decoder alone, with the arguments of transformers' decoder stack: input_ids (B, T) (no
        shift: they are the decoder's inputs), attention_mask (B, T), encoder_hidden_states (B, S, D)
        (the encoder's last_hidden_state), encoder_attention_mask (B, S) -> last_hidden_state (B, T, D),
        before the output layer; ``output_hidden_states``: also ``hidden_states`` (num_layers + 1)."""
        if not isinstance(encoder_hidden_states, torch.Tensor) or encoder_hidden_states.dim() != 3:
            raise InvalidInputError("the decoder attends to the encoder: pass encoder_hidden_states (B, S, D), the "
                                    "encoder's last_hidden_state (get_encoder()(input_ids=...).last_hidden_state)")
        self._check_inputs(input_ids=input_ids)
        self._check_mask("attention_mask", attention_mask, input_ids.shape)
        self._check_mask("encoder_attention_mask", encoder_attention_mask, encoder_hidden_states.shape[:2])
        states = [] if output_hidden_states else None
        last = self.decoder(self.shared(input_ids), attention_mask, encoder_hidden_states, encoder_attention_mask,
                            states=states)
        return BaseModelOutput(last_hidden_state=last, hidden_states=None if states is None else tuple(states))

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B, T) -> decoder inputs: [decoder_start, labels[:-1]] with -100 -> pad."""
        return shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                encoder_outputs: Any = None, *, output_hidden_states: bool = False,
                output_attentions: bool = False) -> Seq2SeqModelOutput:
        states = ([], []) if output_hidden_states else None
        with self._attention_capture(output_attentions) as captured:
            dec, enc = self._decode(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                    encoder_outputs, states=states)
        return Seq2SeqModelOutput(last_hidden_state=dec, encoder_last_hidden_state=enc, **_hidden_states(states),
                                  **_attentions(captured, dec.dtype))


def _attentions(captured: dict[str, list[torch.Tensor]], dtype: torch.dtype) -> dict[str, tuple | None]:
    """The output fields of ``output_attentions``, in the model's dtype as transformers' (None for a
    stack that did not run: the encoder when ``encoder_outputs`` is given)."""
    return {f"{stack}_attentions": tuple(w.to(dtype) for w in weights) or None for stack, weights in captured.items()}


def _hidden_states(states: tuple[list, list] | None) -> dict[str, tuple | None]:
    """The output fields of ``output_hidden_states`` (None where not asked, or not run here)."""
    if states is None:
        return {}
    return {"encoder_hidden_states": tuple(states[0]) or None, "decoder_hidden_states": tuple(states[1])}


class T5ForConditionalGeneration(T5Model):
    """T5 with the language-model head: ``model(input_ids, labels=...)`` -> ``.loss``, ``.logits``."""

    _has_lm_head = True
    generation_config = GenerationConfigAttribute()  # converts transformers' and fills the token ids from config

    def _build_head(self) -> None:
        # Tied (v1.0): logits use self.shared.weight directly, so there is no lm_head parameter.
        self.lm_head = None if self.config.tie_word_embeddings else nn.Linear(
            self.config.d_model, self.config.vocab_size, bias=False)

    def _head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the output layer multiplies: v1.0 rescales the decoder output (mesh-tf, before the tied softmax)."""
        return hidden * self.config.d_model**-0.5 if self.config.rescale_decoder_output else hidden

    def lm_logits(self, hidden: torch.Tensor, *, linear=fast_linear) -> torch.Tensor:
        """Decoder output (B, T, D) -> logits (B, T, V); ``decode_step`` passes its faster ``linear``."""
        hidden = self._head_input(hidden)
        if self.lm_head is not None and not isinstance(self.lm_head, nn.Linear):
            return self.lm_head(hidden)  # a replaced module (e.g. torch.ao dynamic int8 Linear)
        weight = self.shared.weight if self.lm_head is None else self.lm_head.weight
        return linear(hidden, weight)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                encoder_outputs: Any = None, *, labels: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> Seq2SeqLMOutput:
        """input_ids (B, S), attention_mask (B, S); decoder_input_ids (B, T) or labels (B, T) with -100 =
        ignore. ``encoder_outputs`` (an earlier output, a tuple or a tensor) skips the encoder.
        ``output_hidden_states``: also ``encoder_hidden_states`` / ``decoder_hidden_states`` (num_layers
        + 1 each, as transformers'; no encoder ones when ``encoder_outputs`` is given).
        ``output_attentions``: also ``encoder_attentions`` / ``decoder_attentions`` / ``cross_attentions``
        (each layer's weights, as transformers' eager attention returns them)."""
        states = ([], []) if output_hidden_states else None
        with self._attention_capture(output_attentions) as captured:
            dec, enc = self._decode(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                    encoder_outputs, labels, states=states)
        logits = self.lm_logits(dec)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise InvalidInputError(f"labels have shape {tuple(labels.shape)}, but the decoder ran on "
                                        f"{tuple(logits.shape[:2])} positions")
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=enc, **_hidden_states(states),
                               **_attentions(captured, dec.dtype))

    # -- generation protocol (see the module docstring) -------------------------------------------
    @torch.no_grad()
    def new_decoder_cache(self, encoder_hidden_states: torch.Tensor,
                          encoder_attention_mask: torch.Tensor | None = None,
                          max_length: int = 512) -> T5DecoderCache:
        drop_stale_copies(self)  # weights edited through .data: every decoding (generate, the server's) starts here
        enc = encoder_hidden_states  # (N, S, D)
        n, s, _ = enc.shape
        self._check_mask("encoder_attention_mask", encoder_attention_mask, (n, s))
        if max_length < 1:
            raise InvalidInputError(f"max_length={max_length} must be at least 1")
        c, blocks = self.config, self.decoder.blocks
        # the self-attention position bias is built whole before the first step, (H, M, M) per layer
        # with its own (mT5/T5: one): a quadratic cost no step check could stop (20,001 tokens: ~10 GB)
        tables = 1 if self.decoder.relative_attention_bias is not None else len(blocks)
        check_position_bias_size(max_length, tables * c.num_heads, enc.element_size())
        self_kv = enc.new_zeros(len(blocks), 2, n, c.num_heads, max_length, c.d_kv)
        cross_kv = torch.stack([torch.stack(b.cross_attn.project_memory(enc)) for b in blocks])  # (L,2,N,H,S,Dh)
        cross_bias = None
        if encoder_attention_mask is not None:
            cross_bias = mask_to_bias(encoder_attention_mask.bool()[:, None, None, :], enc.dtype)
        position_bias = self.decoder.self_attention_bias(max_length, max_length)  # (L, 1, H, M, M)
        return T5DecoderCache(self_kv=self_kv, cross_kv=cross_kv, cross_bias=cross_bias,
                              position_bias=position_bias, source_index=torch.arange(n, device=enc.device))

    @torch.no_grad()
    def decode_step(self, decoder_input_ids: torch.Tensor, cache: T5DecoderCache) -> torch.Tensor:
        linear = getattr(self, "_packed_linears", None) or decode_linear
        return self.lm_logits(self._decode_hidden(decoder_input_ids, cache, linear), linear=linear).float()

    @torch.no_grad()
    def decode_step_argmax(self, decoder_input_ids: torch.Tensor, cache: T5DecoderCache,
                           process: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Greedy search's step: ``process(decode_step(...)[:, -1]).argmax(-1)`` (N,), where ``process``
        only bans tokens (sets -inf). With an fp32 output layer on CPU the full output product is
        skipped (``screen_greedy_argmax``; inference/int8.py: ScreenedArgmax, the same tokens)."""
        linear = getattr(self, "_packed_linears", None) or decode_linear
        hidden = self._decode_hidden(decoder_input_ids, cache, linear)[:, -1:]     # (N, 1, D)
        screen = getattr(self, "_screened_argmax", None)
        if self.lm_head is None or type(self.lm_head) is nn.Linear:  # not an adapter or a quantised module
            weight = self.shared.weight if self.lm_head is None else self.lm_head.weight
            if ((screen is None or not screen.current(weight)) and self.screen_greedy_argmax
                    and ScreenedArgmax.applies(hidden) and ScreenedArgmax.available(weight)):
                screen = self._screened_argmax = ScreenedArgmax(weight)  # first greedy step, or new weights
        else:
            screen = weight = None
        if screen is None or not screen.current(weight) or not ScreenedArgmax.applies(hidden):
            scores = self.lm_logits(hidden, linear=linear)[:, -1].float()           # (N, V)
            return (scores if process is None else process(scores)).argmax(-1)
        return screen(self._head_input(hidden[:, 0]), process)

    def _decode_hidden(self, decoder_input_ids: torch.Tensor, cache: T5DecoderCache, linear) -> torch.Tensor:
        """The decoder's output (N, t, D) for ``t`` new positions; appends them to ``cache``."""
        n, t = decoder_input_ids.shape
        if n != cache.batch_size:
            raise InvalidInputError(f"decoder_input_ids has {n} rows, the cache {cache.batch_size}")
        if cache.length + t > cache.max_length:
            raise InvalidInputError(f"decoding {t} more token(s) after {cache.length} exceeds the cache's "
                                    f"max_length={cache.max_length}")
        self._check_inputs(decoder_input_ids=decoder_input_ids)
        return self.decoder.decode(self.shared(decoder_input_ids), cache, linear)

    def optimize_for_decoding(self, pack_weights: bool = True) -> "T5ForConditionalGeneration":
        """The old name of ``optimize_for_inference("fp32", pack_weights=...)`` (modeling.py): column-major
        decoder and output weights, and oneDNN-packed copies for the steps with 2 or more rows
        (t5electra/inference/decoding.py); the same outputs, faster CPU decoding. Returns the model."""
        return self.optimize_for_inference("fp32", pack_weights=pack_weights)

    def generate(self, *args, **kwargs):
        """Greedy / beam / sampling decoding; see t5electra.generation.seq2seq.generate for the arguments."""
        args, kwargs = seq2seq.call_arguments(args, kwargs)  # generate(ids, GenerationConfig(...)) too
        return seq2seq.generate(self, *args, **self.generation_config.defaults_for(kwargs))

    compute_transition_scores = staticmethod(compute_transition_scores)  # transformers' (generation/scores.py)

    # -- checkpoints -------------------------------------------------------------------------------
    @classmethod
    def config_for_checkpoint(cls, config: T5Config, hf_sd: dict[str, torch.Tensor]) -> T5Config:
        """transformers 5 writes tie_word_embeddings=True even for untied models and then stores a
        distinct lm_head.weight: like transformers, such a file loads untied."""
        lm = hf_sd.get("lm_head.weight")
        emb = hf_sd.get("shared.weight", hf_sd.get("decoder.embed_tokens.weight"))
        if config.tie_word_embeddings and lm is not None and emb is not None and not torch.equal(lm, emb):
            logger.info("lm_head.weight differs from shared.weight: loading with tie_word_embeddings=False")
            return config.replace(tie_word_embeddings=False, scale_decoder_outputs=config.rescale_decoder_output)
        return config


__all__ = ["T5Config", "T5EncoderModel", "T5Model", "T5ForConditionalGeneration", "T5DecoderCache",
           "Seq2SeqLMOutput", "Seq2SeqModelOutput", "BaseModelOutput", "shift_right"]
