"""ELECTRA, the whole model family in one file: config, encoder, pretraining heads, task heads.

ELECTRA (Clark et al. 2020, https://arxiv.org/abs/2003.10555) pretrains a BERT-style encoder by
*replaced-token detection*: a small masked-language-model **generator** fills masked positions
with plausible tokens, and the **discriminator** learns to tell, for every token, whether it is the
original or a replacement. The discriminator is the model you fine-tune; the generator is a
byproduct. Neither writes text left to right. (The joint pretrainer lives in electra_rtd.py.)

Architecturally both are the BERT encoder (https://arxiv.org/abs/1810.04805): learned absolute
positions, token-type embeddings, post-LayerNorm blocks, GELU, plus an ``embeddings_project``
dense layer when ``embedding_size`` differs from ``hidden_size`` (ELECTRA-Small: 128 -> 256). A
BERT checkpoint is therefore an ELECTRA encoder without projection, and loads here.

Reference for parity: transformers/models/electra/modeling_electra.py (v5.24). State-dict keys
are translated by t5electra/checkpoint/electra.py; the one structural difference is that query,
key and value are a single fused projection.

Shapes in comments: B batch, T sequence length, E embedding_size, H hidden_size, N heads,
D head size (H / N), V vocab_size, L num_labels.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.electra import electra_keymap, normalize_prefix
from ..checkpoint.keymap import KeyMap
from ..config import ModelConfig
from ..core.typed_config import option
from ..errors import ConfigError, InvalidInputError
from ..generation.fill_mask import fill_mask_generate
from ..inference.chunking import chunk_rows, encode_in_chunks
from ..inference.weights import optimize_for_inference
from ..core.outputs import (BaseModelOutput, ElectraForPreTrainingOutput, MaskedLMOutput,
                            QuestionAnsweringModelOutput, SequenceClassifierOutput, TokenClassifierOutput)
from ..modeling import LoadReport, PreTrainedModel, resized_rows
from ..nn.activations import ACTIVATIONS  # transformers' hidden_act names: "gelu" is the exact (erf) GELU
from ..nn.attention import SelfAttention
from ..nn.attention_capture import capture_attention, self_weights
from ..nn.dropout import Dropout
from ..nn.linear import project, project_act
from ..nn.recompute import maybe_recompute

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

logger = logging.getLogger("t5electra")

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
CLASSIFIER_POOLING = ("first", "mean")

# BERT's defaults where they differ from ELECTRA's (transformers' BertConfig), applied to a
# model_type "bert" config.json that leaves a field out.
BERT_DEFAULTS = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}


@dataclasses.dataclass(kw_only=True)
class ElectraConfig(ModelConfig):
    """Hyper-parameters of an ELECTRA (or BERT) encoder and its heads; transformers' field names.

    Defaults are transformers' (those of ELECTRA-Small's discriminator). A config.json with
    ``model_type: "bert"`` also loads: its ``embedding_size`` is its ``hidden_size``.
    """

    model_type: ClassVar[str] = "electra"

    # -- the encoder --
    vocab_size: int = option(30522, "token ids: rows of the word-embedding matrix")
    embedding_size: int = option(128, "width of the embeddings; projected to hidden_size when different")
    hidden_size: int = option(256, "width of the encoder's residual stream")
    num_hidden_layers: int = option(12, "transformer blocks")
    num_attention_heads: int = option(4, "heads per block; must divide hidden_size")
    intermediate_size: int = option(1024, "inner width of the feed-forward network (4 x hidden_size)")
    hidden_act: str = option("gelu", "FFN and discriminator-head activation, a key of ACTIVATIONS")
    hidden_dropout_prob: float = option(0.1, "dropout on the embeddings and on each residual branch")
    attention_probs_dropout_prob: float = option(0.1, "dropout on the attention probabilities")
    max_position_embeddings: int = option(512, "longest sequence the learned position table covers")
    type_vocab_size: int = option(2, "token types (segments A / B)")
    initializer_range: float = option(0.02, "std of the normal init of every weight matrix and embedding")
    layer_norm_eps: float = option(1e-12, "epsilon of every LayerNorm")
    pad_token_id: int | None = option(0, "[PAD]: its embedding row starts at zero and gets no gradient")
    position_embedding_type: str = option("absolute", 'only learned "absolute" positions (BERT\'s relative ones: no)')
    # -- transformers' sequence summary: used only by its multiple-choice head; kept so that
    #    config.json round-trips. Our sequence classifier always reads the first ([CLS]) token.
    summary_type: str = option("first", "round-trip only")
    summary_use_proj: bool = option(True, "round-trip only")
    summary_activation: str | None = option("gelu", "round-trip only")
    summary_last_dropout: float = option(0.1, "round-trip only")
    # -- task heads --
    classifier_dropout: float | None = option(None, "dropout in the classification heads; None: hidden_dropout_prob")
    classifier_pooling: str = option("first", "what the sequence-classification head reads: 'first' (the [CLS] vector, "
                                              "as transformers does) or 'mean' (the average over the real tokens: the "
                                              "pooling sentence-transformers trains, e.g. all-MiniLM-L6-v2, and one a "
                                              "briefly pretrained encoder can use at once); transformers' "
                                              "ElectraForSequenceClassification knows only 'first'")
    num_labels: int | None = option(None, "outputs of the task heads (1 = regression); default len(id2label), else 2")
    id2label: dict[int, str] | None = option(None, "label names by index; default LABEL_0, LABEL_1, ...")
    label2id: dict[str, int] | None = option(None, "inverse of id2label; default derived from it")
    problem_type: str | None = option(None, "sequence-classification loss: 'regression', 'single_label_classification' "
                                            "or 'multi_label_classification'; None infers it like transformers "
                                            "(num_labels, label dtype)")

    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    # transformers' attributes of an encoder config (config.json's values, kept in ``extra``)
    is_encoder_decoder = property(lambda self: False, doc="False: an encoder")
    is_decoder = property(lambda self: bool(self.extra.get("is_decoder", False)),
                          doc="False (ElectraModel refuses true: no causal variant here)")
    tie_word_embeddings = property(lambda self: ties_generator(self),
                                   lambda self, value: self.extra.__setitem__("tie_word_embeddings", bool(value)),
                                   doc="the generator's output layer is the word-embedding matrix (default True; "
                                   "set before a model is built from the config)")

    # -- construction -------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}  # JSON keys are strings
            if self.num_labels is None:
                self.num_labels = len(self.id2label)
        if self.num_labels is None:
            self.num_labels = 2
        if self.id2label is None:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if self.label2id is None:
            self.label2id = {v: k for k, v in self.id2label.items()}
        super().__post_init__()

    def validate(self) -> None:
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name}={v!r} must be a positive integer")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v < 1.0:
                raise ConfigError(f"{name}={v!r} must be in [0, 1) (a dropout probability)")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps={self.layer_norm_eps!r} must be positive (e.g. 1e-12)")
        if self.initializer_range < 0:
            raise ConfigError(f"initializer_range={self.initializer_range!r} must be >= 0 (e.g. 0.02)")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id={self.pad_token_id!r} is outside the vocabulary [0, {self.vocab_size})")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size={self.hidden_size} is not a multiple of "
                              f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}")
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"position_embedding_type={self.position_embedding_type!r} is not supported: "
                              f"only learned 'absolute' positions (as in ELECTRA and most BERTs)")
        if self.classifier_pooling not in CLASSIFIER_POOLING:
            raise ConfigError(f"classifier_pooling={self.classifier_pooling!r} is not one of {CLASSIFIER_POOLING}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type={self.problem_type!r} is not one of {PROBLEM_TYPES}")
        if self.num_labels < 1 or len(self.id2label) != self.num_labels:
            raise ConfigError(f"num_labels={self.num_labels} but id2label has {len(self.id2label)} entries")

    @classmethod
    def compatible_model_types(cls) -> tuple[str, ...]:
        return ("bert",)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "ElectraConfig":
        if d.get("model_type") == "bert":
            # A BERT is an ELECTRA encoder whose embeddings are as wide as its hidden states.
            d = {**BERT_DEFAULTS, **d}
            d.setdefault("embedding_size", d["hidden_size"])
        return super().from_dict(d, source)

    def replace(self, **overrides: Any) -> "ElectraConfig":
        if "num_labels" in overrides and "id2label" not in overrides:
            if overrides["num_labels"] != self.num_labels:
                # A new label count (e.g. fine-tuning a checkpoint) means new default label names; the
                # checkpoint's own count keeps its names (transformers' num_labels setter does the same).
                overrides = {**overrides, "id2label": None, "label2id": None}
        elif overrides.get("id2label") is not None and "num_labels" not in overrides:
            # New label names: their count is the label count, as in transformers
            overrides = {**overrides, "num_labels": None, "label2id": overrides.get("label2id")}
        return super().replace(**overrides)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("num_labels")  # transformers derives it from id2label and does not write it
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return d

    def generator_config(self, size_multiplier: float = 0.25) -> "ElectraConfig":
        """The generator that goes with this discriminator, by the official rule
        (google-research/electra, configure_pretraining.py / pretrain_helpers.get_generator_config):
        hidden x multiplier, heads = max(1, hidden // 64), FFN 4 x hidden, same depth, and the
        same embedding_size (the embeddings are shared)."""
        hidden = round(self.hidden_size * size_multiplier)
        return self.replace(hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                            intermediate_size=4 * hidden)


ElectraConfig.presets = {
    # Discriminators with the released shapes (google/electra-{small,base,large}-discriminator).
    "electra-small": dict(embedding_size=128, hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
                          intermediate_size=1024),
    "electra-base": dict(embedding_size=768, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072),
    "electra-large": dict(embedding_size=1024, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096),
    # Their generators, by the official rule (ElectraConfig.generator_config) with the paper's size
    # multipliers (appendix, Table 6): Small 1/4, Base 1/3, Large 1/4. Base and Large match the
    # released google/electra-{base,large}-generator. Known discrepancy: the *released*
    # google/electra-small-generator is full size (hidden 256, 4 heads, FFN 1024), not the 1/4
    # (hidden 64, 1 head) that the rule and the paper give; this preset follows the rule. The
    # released checkpoint still loads: its config.json carries its own shapes.
    "electra-small-generator": dict(embedding_size=128, hidden_size=64, num_hidden_layers=12,
                                    num_attention_heads=1, intermediate_size=256),
    "electra-base-generator": dict(embedding_size=768, hidden_size=256, num_hidden_layers=12,
                                   num_attention_heads=4, intermediate_size=1024),
    "electra-large-generator": dict(embedding_size=1024, hidden_size=256, num_hidden_layers=24,
                                    num_attention_heads=4, intermediate_size=1024),
    # Tiny models for tests and smoke runs: with the embedding projection (16 -> 32) and without.
    "electra-tiny": dict(vocab_size=512, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=128),
    "electra-tiny-generator": dict(vocab_size=512, embedding_size=16, hidden_size=8, num_hidden_layers=2,
                                   num_attention_heads=1, intermediate_size=32, max_position_embeddings=128),
    "electra-tiny-noproj": dict(vocab_size=512, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64, max_position_embeddings=128),
}


# --------------------------------------------------------------------------------------------
# The encoder (outputs: core/outputs.py, transformers' names and fields)
# --------------------------------------------------------------------------------------------

class ElectraEmbeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout; all of width E.
    Shared between generator and discriminator during ELECTRA pretraining."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        E = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        T = input_ids.shape[1]
        x = self.word_embeddings(input_ids)  # (B, T, E)
        x = x + self.position_embeddings.weight[:T]  # positions 0..T-1: (T, E), broadcast over B
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # all type 0, as transformers defaults
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class ElectraSelfAttention(SelfAttention):
    """BERT's multi-head self-attention on the shared block (nn/attention.py, the one T5 uses):
    one fused QKV projection with biases and PyTorch's SDPA kernel, softmax(q k^T / sqrt(D) + mask) v.
    Training with dropout on CPU: the same formula with nn/dropout.py's mask. Called as
    ``attention(x, mask)``, mask (B, 1, 1, T) bool, True where the key may be attended to."""

    def __init__(self, config: ElectraConfig):
        H, N = config.hidden_size, config.num_attention_heads
        super().__init__(H, N, H // N, dropout=config.attention_probs_dropout_prob, bias=True)

    @property
    def out(self) -> nn.Linear:
        """The output projection (``o`` in the shared block; transformers: attention.output.dense)."""
        return self.o


class ElectraLayer(nn.Module):
    """One post-LayerNorm block (as BERT): x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    # True: keep only the input in forward, recompute the rest in backward (nn/recompute.py)
    checkpoint_activations: bool = False

    def __init__(self, config: ElectraConfig):
        super().__init__()
        H = config.hidden_size
        self.attention = ElectraSelfAttention(config)
        self.attention_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(H, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, H)
        self.ffn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return maybe_recompute(self, self._forward, x, mask)

    def _forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))  # (B, T, H)
        # project / project_act: fp32 on oneDNN where that is the faster GEMM, GELU inside it at inference (nn/linear.py)
        return self.ffn_norm(x + self.dropout(project(self.ffn_out, project_act(self.ffn_in, x, self.act))))


class ElectraPreTrainedModel(PreTrainedModel):
    """What every ELECTRA class shares: config class, init, key map, input checks."""

    config_class = ElectraConfig
    # where the encoder sits in the state dict ("electra." under a head, "" in ElectraModel) and
    # the head's own weights (the same names in transformers' checkpoints)
    encoder_prefix: ClassVar[str] = "electra."
    input_embeddings_path: ClassVar[str] = "electra.embeddings.word_embeddings"
    hf_head_keys: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def _extras(enc: BaseModelOutput) -> dict[str, Any]:
        """What ``output_hidden_states`` / ``output_attentions`` add to a head's output (None unless asked)."""
        return {"hidden_states": enc.hidden_states, "attentions": enc.attentions}

    def _init_std(self, layer: nn.Module) -> float:
        return self.config.initializer_range

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' BERT/ELECTRA init: N(0, initializer_range) weights, zero biases, the
        padding row zero, LayerNorm = identity."""
        std = self._init_std(module)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @classmethod
    def hf_keymap(cls, config: ElectraConfig) -> KeyMap:
        generator = issubclass(cls, ElectraForMaskedLM)
        head_keys = cls.hf_head_keys
        if generator and not ties_generator(config):
            head_keys += ("generator_lm_head.weight",)  # an output layer of its own
        return electra_keymap(cls.encoder_prefix, head_keys, config.embedding_size != config.hidden_size,
                              tied_generator=generator and ties_generator(config))

    def load_hf_state_dict(self, hf_sd: dict[str, torch.Tensor], sources: dict[str, str] | None = None,
                           **options: Any) -> LoadReport:
        # Encoder weights may sit under "electra.", "bert." or at the root of the file.
        hf_sd, sources = normalize_prefix(hf_sd, sources or {}, self.encoder_prefix)
        return super().load_hf_state_dict(hf_sd, sources, **options)

    def optimize_for_inference(self, weights: str = "fp32", **options: Any) -> "ElectraPreTrainedModel":
        """bf16 / int8 weights with the kernels fastest on this CPU, or "fp32" (the modules unchanged:
        exact); inference/weights.py, docs/inference.md. ``options``: ``keep``. Returns self."""
        return optimize_for_inference(self, weights, **options)

    @property
    def check_inputs(self) -> bool:
        """The encoder's input check flag (see ``ElectraModel.check_inputs``)."""
        return self.electra.check_inputs

    @check_inputs.setter
    def check_inputs(self, value: bool) -> None:
        self.electra.check_inputs = bool(value)

    def _shape_hint(self) -> str:
        c = self.config
        return (f"vocab_size={c.vocab_size}, embedding_size={c.embedding_size}, hidden_size={c.hidden_size}, "
                f"num_hidden_layers={c.num_hidden_layers}, num_attention_heads={c.num_attention_heads}, "
                f"num_labels={c.num_labels}")


class ElectraModel(ElectraPreTrainedModel):
    """The bare encoder: token ids -> contextual vectors ``last_hidden_state`` (B, T, H)."""

    encoder_prefix: ClassVar[str] = ""
    input_embeddings_path: ClassVar[str] = "embeddings.word_embeddings"
    # Check that ids are inside the vocabularies (one host sync per call), as T5's flag. A training
    # loop whose data is known to fit may set it to False on GPU (on a head model too: it forwards).
    check_inputs: bool = True

    # CPU inference on a batch of more than this many tokens runs a few whole sequences at a time
    # (inference/chunking.py: same result, fewer page faults). Set it on the instance or the class; 0 turns it off.
    inference_chunk_tokens: int = 2048

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        for key in ("is_decoder", "add_cross_attention"):
            if config.extra.get(key):
                raise ConfigError(f"{key}=true: ELECTRA here is a bidirectional encoder only "
                                  f"(no causal / cross-attention variant)")
        self.embeddings = ElectraEmbeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)  # E -> H
        self.layers = nn.ModuleList(ElectraLayer(config) for _ in range(config.num_hidden_layers))
        self.apply(self._init_weights)

    def _check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      token_type_ids: torch.Tensor | None) -> None:
        """Readable errors for inputs that would otherwise fail deep inside torch (or silently);
        the id range check (a host sync) only while ``check_inputs`` is True."""
        c = self.config
        if input_ids.dim() != 2 or input_ids.numel() == 0:
            raise InvalidInputError(f"input_ids must be (batch, seq_len) with batch and seq_len > 0, got shape "
                                    f"{tuple(input_ids.shape)}")
        T = input_ids.shape[1]
        if T > c.max_position_embeddings:
            raise InvalidInputError(
                f"sequence length {T} is longer than max_position_embeddings={c.max_position_embeddings} "
                f"of this model; truncate it (tokenizer(..., truncation=True, max_length={c.max_position_embeddings}))")
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise InvalidInputError(f"{name} has shape {tuple(t.shape)}, input_ids {tuple(input_ids.shape)}")
        if not self.check_inputs or torch.compiler.is_compiling():
            return
        for name, t, size, what in (("input_ids", input_ids, c.vocab_size, "vocab_size"),
                                    ("token_type_ids", token_type_ids, c.type_vocab_size, "type_vocab_size")):
            if t is None:
                continue
            lo, hi = (int(v) for v in torch.aminmax(t))
            if lo < 0 or hi >= size:
                bad = lo if lo < 0 else hi
                hint = " (tokenizer and model vocabularies differ?)" if name == "input_ids" else ""
                raise InvalidInputError(f"{name} contains {bad}, outside [0, {size}) of this model's "
                                        f"{what}={size}{hint}")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, *, output_hidden_states: bool = False,
                output_attentions: bool = False) -> BaseModelOutput:
        """input_ids (B, T); attention_mask (B, T), 1 = token, 0 = padding; token_type_ids (B, T).
        ``output_hidden_states``: also the embeddings' output and every layer's, ``hidden_states``
        (num_layers + 1 tensors (B, T, H)), as transformers. ``output_attentions``: also each
        layer's weights softmax(q k^T / sqrt(d) + mask), ``attentions`` (num_layers of (B, heads, T, T),
        before dropout), recorded by hooks (nn/attention_capture.py: SDPA never materialises them)."""
        self._check_inputs(input_ids, attention_mask, token_type_ids)
        if output_hidden_states or output_attentions:
            states: list[torch.Tensor] | None = [] if output_hidden_states else None
            modules = {"layers": [(layer.attention, self_weights) for layer in self.layers]} if output_attentions else {}
            with capture_attention(modules) as captured:
                last = self._encode(input_ids, attention_mask, token_type_ids, states)
            weights = captured.get("layers")
            return BaseModelOutput(last_hidden_state=last, hidden_states=None if states is None else tuple(states),
                                   attentions=None if weights is None else tuple(w.to(last.dtype) for w in weights))
        rows = chunk_rows(input_ids, self.inference_chunk_tokens)
        if rows is not None:  # inference on a large CPU batch: a few sequences at a time
            return BaseModelOutput(last_hidden_state=encode_in_chunks(self._encode, rows, input_ids, attention_mask,
                                                                      token_type_ids))
        return BaseModelOutput(last_hidden_state=self._encode(input_ids, attention_mask, token_type_ids))

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None, states: list | None = None) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, E)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)  # (B, T, H)
        # Padding keys are excluded from every query's softmax. Padding *queries* still get
        # (meaningless) vectors, as in transformers; heads and losses ignore them.
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        for layer in self.layers:
            if states is not None:
                states.append(x)
            x = layer(x, mask)
        if states is not None:
            states.append(x)
        return x  # (B, T, H)


# --------------------------------------------------------------------------------------------
# Pretraining heads: discriminator (replaced-token detection) and generator (masked LM)
# --------------------------------------------------------------------------------------------

class ElectraDiscriminatorPredictions(nn.Module):
    """dense(H -> H) -> hidden_act -> dense(H -> 1): one "was this token replaced?" logit per token."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(h))).squeeze(-1)  # (B, T, H) -> (B, T)


class ElectraForPreTraining(ElectraPreTrainedModel):
    """The discriminator: per-token logit that the token was replaced by the generator.

    ``labels`` (B, T): 1 = replaced, 0 = original. The loss is sigmoid BCE averaged over the
    positions where attention_mask is 1 (all positions without a mask), as in transformers.
    """

    hf_head_keys = ("discriminator_predictions.dense.weight", "discriminator_predictions.dense.bias",
                    "discriminator_predictions.dense_prediction.weight", "discriminator_predictions.dense_prediction.bias")

    newly_initialized_ok = (r"discriminator_predictions\..*",)

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.discriminator_predictions.apply(self._init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> ElectraForPreTrainingOutput:
        enc = self.electra(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions, return_dict=True)
        h = enc.last_hidden_state
        logits = self.discriminator_predictions(h)  # (B, T)
        loss = None
        if labels is not None:
            if attention_mask is not None:
                active = attention_mask.bool()
                loss = F.binary_cross_entropy_with_logits(logits[active], labels[active].float())
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        return ElectraForPreTrainingOutput(loss=loss, logits=logits, **self._extras(enc))


class ElectraGeneratorPredictions(nn.Module):
    """dense(H -> E) -> GELU -> LayerNorm(E); the tied embedding matrix then maps E -> V."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(h)))  # always exact GELU, whatever hidden_act


def ties_generator(config: ElectraConfig) -> bool:
    """Whether the generator's output layer is the word-embedding matrix (config.json's
    ``tie_word_embeddings``, transformers' default true; kept in ``config.extra``)."""
    return config.extra.get("tie_word_embeddings") is not False


class ElectraForMaskedLM(ElectraPreTrainedModel):
    """The generator: a masked language model that predicts the token at each position.

    Its output layer is the word-embedding matrix itself (tied, plus a bias), so the two can
    never drift apart; checkpoints store only the embedding (transformers 5 does the same).
    A checkpoint with ``tie_word_embeddings: false``, or one that stores a ``generator_lm_head.weight``
    other than its embeddings, has an output layer of its own, as in transformers.
    ``labels`` (B, T): the original ids at the positions to predict, -100 elsewhere.
    """

    hf_head_keys = ("generator_predictions.dense.weight", "generator_predictions.dense.bias",
                    "generator_predictions.LayerNorm.weight", "generator_predictions.LayerNorm.bias", "generator_lm_head.bias")

    newly_initialized_ok = (r"generator_predictions\..*", r"generator_lm_head\.bias")

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.tied = ties_generator(config)
        if self.tied:  # HF: generator_lm_head = Linear(E, V) whose weight is the word-embedding matrix
            self.generator_lm_head = nn.Module()
            self.generator_lm_head.bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)
            self._init_weights(self.generator_lm_head)
            nn.init.zeros_(self.generator_lm_head.bias)
        self.generator_predictions.apply(self._init_weights)

    @classmethod
    def config_for_checkpoint(cls, config: ElectraConfig, hf_sd: dict[str, torch.Tensor]) -> ElectraConfig:
        """A file that stores a generator_lm_head.weight other than its word embeddings loads untied,
        as transformers 5 loads it (it unties them with a warning), even where config.json does not say
        tie_word_embeddings=false (T5ForConditionalGeneration.config_for_checkpoint does the same)."""
        head = hf_sd.get("generator_lm_head.weight")
        emb = next((hf_sd[p + "embeddings.word_embeddings.weight"] for p in ("electra.", "bert.", "")
                    if p + "embeddings.word_embeddings.weight" in hf_sd), None)
        if ties_generator(config) and head is not None and emb is not None and not torch.equal(head, emb):
            logger.info("generator_lm_head.weight differs from the word embeddings: loading with "
                        "tie_word_embeddings=False")
            config = config.replace()
            config.extra["tie_word_embeddings"] = False
        return config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> MaskedLMOutput:
        enc = self.electra(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions, return_dict=True)
        logits = self.lm_logits(enc.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, **self._extras(enc))

    def get_output_embeddings(self) -> nn.Linear:
        if not self.tied:
            return self.generator_lm_head
        return self._tied_linear(self.electra.embeddings.word_embeddings.weight, self.generator_lm_head.bias)

    def _resize_output(self, new_num_tokens: int) -> None:
        if not self.tied:
            self.generator_lm_head = resized_rows(self.generator_lm_head, new_num_tokens)
            return
        old = self.generator_lm_head.bias  # the output layer's weight is the word embedding (tied)
        bias = old.new_zeros(new_num_tokens)
        bias[:min(new_num_tokens, old.shape[0])] = old[:new_num_tokens]
        self.generator_lm_head.bias = nn.Parameter(bias, requires_grad=old.requires_grad)

    def _set_output(self, layer: nn.Linear) -> None:
        if layer.weight is self.electra.embeddings.word_embeddings.weight:  # still tied: a bias of its own
            self.generator_lm_head.bias = layer.bias
            return
        self.generator_lm_head, self.tied = layer, False
        self.config.extra["tie_word_embeddings"] = False  # saved so: transformers loads it untied

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Encoder output (..., H) -> logits (..., V): the generator head (dense, GELU, LayerNorm to
        E), then the output layer tied to the word embeddings, plus its bias. The one copy of it
        (the RTD pretrainer calls it on the masked positions only)."""
        h = self.generator_predictions(hidden)  # (..., E)
        if not self.tied:
            return self.generator_lm_head(h)
        return F.linear(h, self.electra.embeddings.word_embeddings.weight, self.generator_lm_head.bias)  # (..., V)

    def generate(self, *args: Any, **kwargs: Any):
        """Fill every [MASK] in ``input_ids`` with the generator, one mask at a time, most
        confident first (greedy by default; sampling and ``num_return_sequences`` give
        alternatives). Inputs without [MASK] come back unchanged.

        This is what "generate" can honestly mean for ELECTRA: the generator is a masked language
        model, not a left-to-right text generator, so it can fill blanks but not continue a text.
        See t5electra/generation/fill_mask.py for the arguments.
        """
        return fill_mask_generate(self, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Fine-tuning heads (on the discriminator, or on any BERT)
# --------------------------------------------------------------------------------------------

def _classifier_dropout(config: ElectraConfig) -> float:
    return config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout


class ElectraClassificationHead(nn.Module):
    """On the first ([CLS]) vector, or the mean of the real tokens' vectors (``classifier_pooling``):
    dropout -> dense(H -> H) -> GELU -> dropout -> dense(H -> L).
    (transformers' head, GELU where BERT's pooler has tanh; google-research/electra fine-tunes with
    dropout and one dense layer on [CLS] instead: docs/training.md.)"""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(_classifier_dropout(config))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)
        self.pooling = config.classifier_pooling

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pooling == "mean":
            if attention_mask is None:
                pooled = h.mean(1)
            else:
                m = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
                pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:
            pooled = h[:, 0]
        x = self.dropout(pooled)  # (B, H)
        x = self.dropout(F.gelu(self.dense(x)))
        return self.out_proj(x)  # (B, L)


class ElectraForSequenceClassification(ElectraPreTrainedModel):
    """One prediction per sequence (GLUE-style). The loss follows ``config.problem_type``; when it
    is None it is inferred like transformers: num_labels == 1 -> regression (MSE), integer labels ->
    single-label cross-entropy, float labels (B, L) -> multi-label BCE; and written to
    ``config.problem_type``, as transformers does (save_pretrained keeps it: a multi-label model's
    pipeline then applies sigmoid, not softmax)."""

    hf_head_keys = ("classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                    "classifier.out_proj.bias")

    newly_initialized_ok = (r"classifier\..*",)

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.classifier = ElectraClassificationHead(config)
        self.classifier.apply(self._init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> SequenceClassifierOutput:
        enc = self.electra(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions, return_dict=True)
        h = enc.last_hidden_state
        logits = self.classifier(h, attention_mask)  # (B, L)
        loss = None
        if labels is not None:
            L = self.config.num_labels
            problem = self.config.problem_type
            if problem is None:
                if L == 1:
                    problem = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    problem = "single_label_classification"
                else:
                    problem = "multi_label_classification"
                self.config.problem_type = problem  # kept (and saved), as transformers does
            if problem == "regression":
                if L == 1:
                    loss = F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
                else:
                    loss = F.mse_loss(logits, labels.to(logits.dtype))
            elif problem == "single_label_classification":
                loss = F.cross_entropy(logits.view(-1, L), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits, **self._extras(enc))

    def transformers_differs(self) -> str | None:
        if self.config.classifier_pooling != "mean":  # 'first': transformers' head, [CLS]
            return None
        return ("ElectraForSequenceClassification with classifier_pooling='mean' classifies the mean of the token "
                "vectors; transformers' ElectraForSequenceClassification ignores that setting and reads the [CLS] "
                "vector, so it loads the saved directory without an error but predicts differently. Load it with t5electra")


class ElectraForTokenClassification(ElectraPreTrainedModel):
    """One prediction per token (NER, POS): dropout -> dense(H -> L). Labels -100 are ignored."""

    hf_head_keys = ("classifier.weight", "classifier.bias")

    newly_initialized_ok = (r"classifier\..*",)

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.classifier.apply(self._init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> TokenClassifierOutput:
        enc = self.electra(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions, return_dict=True)
        h = enc.last_hidden_state
        logits = self.classifier(self.dropout(h))  # (B, T, L)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits, **self._extras(enc))


class ElectraForQuestionAnswering(ElectraPreTrainedModel):
    """Extractive QA (SQuAD): a start and an end logit per token, dense(H -> 2).

    ``start_positions`` / ``end_positions`` (B,): token indices of the answer span; positions
    outside the sequence are clamped to T and ignored, as in transformers.
    """

    hf_head_keys = ("qa_outputs.weight", "qa_outputs.bias")

    newly_initialized_ok = (r"qa_outputs\..*",)

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ConfigError(f"ElectraForQuestionAnswering predicts a start and an end logit: num_labels must be 2, "
                              f"got {config.num_labels}")
        self.electra = ElectraModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.qa_outputs.apply(self._init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, *, start_positions: torch.Tensor | None = None,
                end_positions: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> QuestionAnsweringModelOutput:
        enc = self.electra(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions, return_dict=True)
        h = enc.last_hidden_state
        start_logits, end_logits = self.qa_outputs(h).unbind(-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            T = start_logits.shape[1]
            start = start_positions.reshape(-1).clamp(0, T)
            end = end_positions.reshape(-1).clamp(0, T)
            loss = (F.cross_entropy(start_logits, start, ignore_index=T)
                    + F.cross_entropy(end_logits, end, ignore_index=T)) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits.contiguous(),
                                            end_logits=end_logits.contiguous(), **self._extras(enc))


__all__ = [
    "ElectraConfig", "ElectraModel", "ElectraForPreTraining", "ElectraForMaskedLM",
    "ElectraForSequenceClassification", "ElectraForTokenClassification", "ElectraForQuestionAnswering",
]
