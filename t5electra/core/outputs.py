"""The model output types, one set for both families, named and shaped as transformers'
(``transformers/modeling_outputs.py``) so code written against transformers reads ours.

Shapes: B batch, S source (encoder) length, T target / token length, D or H hidden size,
V vocabulary, L labels.
"""

from __future__ import annotations

import dataclasses

import torch


class ModelOutput:
    """Dataclass-style output: attribute access (``out.logits``) and tuple-style indexing over the
    fields that are not None (``out[0]``), like transformers' ModelOutput."""

    def to_tuple(self) -> tuple:
        return tuple(v for v in (getattr(self, f.name) for f in dataclasses.fields(self)) if v is not None)

    def __getitem__(self, i):
        if isinstance(i, str):
            return getattr(self, i)
        return self.to_tuple()[i]

    def __iter__(self):
        return iter(self.to_tuple())


# -- encoders and encoder-decoders (T5, ELECTRA) ------------------------------------------------
@dataclasses.dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor  # (B, S, D) encoder output (ELECTRA: (B, T, H))
    hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True: embeddings + each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer


@dataclasses.dataclass
class Seq2SeqModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor  # (B, T, D) decoder output
    encoder_last_hidden_state: torch.Tensor  # (B, S, D)
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, S, S) per layer
    decoder_attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, T, T) per layer
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, T, S) per layer


@dataclasses.dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: torch.Tensor | None  # () mean cross-entropy over labels != -100
    logits: torch.Tensor  # (B, T, V)
    encoder_last_hidden_state: torch.Tensor  # (B, S, D); pass the output back as encoder_outputs=
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, S, S) per layer
    decoder_attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, T, T) per layer
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, T, S) per layer


# -- ELECTRA heads ---------------------------------------------------------------------------------
@dataclasses.dataclass
class ElectraForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None  # BCE over the attended positions
    logits: torch.Tensor | None = None  # (B, T): > 0 means "replaced"
    hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True: embeddings + each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer


@dataclasses.dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None  # cross-entropy over labels != -100
    logits: torch.Tensor | None = None  # (B, T, V)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True: embeddings + each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer


@dataclasses.dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True: embeddings + each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer


@dataclasses.dataclass
class TokenClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, L)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True: embeddings + each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer


@dataclasses.dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None  # mean of the start and end cross-entropies
    start_logits: torch.Tensor | None = None  # (B, T)
    end_logits: torch.Tensor | None = None  # (B, T)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True: embeddings + each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer


# -- generate(return_dict_in_generate=True) ------------------------------------------------------------
@dataclasses.dataclass
class GenerateEncoderDecoderOutput(ModelOutput):
    """Greedy search and sampling (transformers' class of that name): N = B * num_return_sequences."""

    sequences: torch.Tensor  # (N, T) start token, generated tokens, padding
    scores: tuple[torch.Tensor, ...] | None = None  # output_scores: per step (N, V), after the processors
    logits: tuple[torch.Tensor, ...] | None = None  # output_logits: per step (N, V), the raw logits


@dataclasses.dataclass
class GenerateBeamEncoderDecoderOutput(ModelOutput):
    """Beam search (transformers' class of that name): N = B * num_return_sequences."""

    sequences: torch.Tensor  # (N, T)
    sequences_scores: torch.Tensor | None = None  # output_scores: (N,) sum of log-probs / new_length ** length_penalty
    scores: tuple[torch.Tensor, ...] | None = None  # output_scores: per step (B * num_beams, V) processed log-probs
    logits: tuple[torch.Tensor, ...] | None = None  # output_logits: per step (B * num_beams, V)
    beam_indices: torch.Tensor | None = None  # (N, T - 1): the beam row each token was appended to (-1: none)
