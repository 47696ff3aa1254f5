"""The model output types, one set for both families, named and shaped as transformers'
(``transformers/modeling_outputs.py``) so code written against transformers reads ours.

Shapes: B batch, S source (encoder) length, T target / token length, D or H hidden size,
V vocabulary, L labels.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses

import torch


class ModelOutput(collections.OrderedDict):
    """A dataclass that is also an ordered dict of its fields that are not None, as transformers'
    ModelOutput: ``out.logits``, ``out["logits"]``, ``"logits" in out``, ``out.keys()`` / ``items()`` /
    ``values()`` / ``get()``, ``len(out)``, ``dict(out)``, ``{**out}``; iterating gives the keys;
    ``out[0]`` / ``out[1:]`` index the tuple of values (``to_tuple()``). A field that is None is not a
    key (``out["loss"]`` without labels is a KeyError; ``out.loss`` is None). Attribute and item
    assignment stay in step (``out["logits"] = x`` is ``out.logits = x``; a key that is no field, as
    transformers' pipelines add, becomes an attribute too); ``pop`` / ``update`` / ``del`` are refused,
    as in transformers. Keys follow the fields' declared order (transformers' order for each class), so
    tuples match transformers' ``return_dict=False`` outputs."""

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        names = cls.__dict__.get("_fields_in_order")
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(cls))
            type.__setattr__(cls, "_fields_in_order", names)
        return names

    def __post_init__(self) -> None:
        """``Output({"loss": l, "logits": x})`` (or an iterable of (name, value) pairs) fills the fields, as
        transformers' ModelOutput does: accelerate rebuilds outputs so (``type(out)({...})``) when it
        casts them to fp32 in mixed-precision training."""
        names = self._field_names()
        first = getattr(self, names[0])
        if first is None or isinstance(first, torch.Tensor) or any(getattr(self, n) is not None for n in names[1:]):
            return
        if isinstance(first, collections.abc.Mapping):
            pairs = list(first.items())
        elif isinstance(first, (list, tuple)) and first and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) for p in first):
            pairs = list(first)
        else:
            return
        setattr(self, names[0], None)
        for key, value in pairs:
            self[key] = value

    def _sync(self, name: str, value) -> None:
        """The dict side of ``name``: a field that is None is no key; a new key comes last (as in
        transformers, a field first set after construction comes after the others in the tuple), but a
        field set to None and back takes its place again (transformers keeps its key all along)."""
        fields = self._field_names()
        removed = self.__dict__.setdefault("_removed_keys", set())
        if value is None and name in fields:
            if collections.OrderedDict.pop(self, name, None) is not None:
                removed.add(name)
            return
        collections.OrderedDict.__setitem__(self, name, value)
        if name in removed:
            removed.discard(name)
            after = fields[fields.index(name) + 1:]
            for key in [k for k in after if collections.OrderedDict.__contains__(self, k)] + \
                    [k for k in list(collections.OrderedDict.keys(self)) if k not in fields]:
                self.move_to_end(key)

    def __setattr__(self, name: str, value) -> None:
        object.__setattr__(self, name, value)
        if name in self._field_names() or collections.OrderedDict.__contains__(self, name):
            self._sync(name, value)

    def __setitem__(self, key, value) -> None:
        if not isinstance(key, str):
            raise TypeError(f"{type(self).__name__} keys are field names (str), got {key!r}: index by position "
                            f"to read (out[0]), assign by name (out['logits'] = ...)")
        object.__setattr__(self, key, value)
        self._sync(key, value)

    def __getitem__(self, key):
        if isinstance(key, str):
            return collections.OrderedDict.__getitem__(self, key)
        return self.to_tuple()[key]

    def to_tuple(self) -> tuple:
        """The values that are not None, in the fields' order (transformers' ``return_dict=False``)."""
        return tuple(self.values())

    def _refuse(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} does not support removing keys or bulk updates (as transformers' "
                        f"ModelOutput): set a field to None, or assign out[key] = value")

    __delitem__ = pop = popitem = setdefault = update = clear = _refuse

    def __reduce__(self):
        # rebuilt from its fields (the dataclass __init__), then the keys that are no field
        fields = self._field_names()
        extra = iter([(k, v) for k, v in self.items() if k not in fields])
        state = {k: v for k, v in self.__dict__.items() if k not in fields and k != "_removed_keys"}
        return type(self), tuple(getattr(self, f) for f in fields), state or None, None, extra


# -- encoders and encoder-decoders (T5, ELECTRA) ------------------------------------------------
@dataclasses.dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor  # (B, S, D) encoder output (ELECTRA: (B, T, H))
    hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True: embeddings + each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer


# The seq2seq outputs declare their fields in transformers' order (modeling_outputs.py), which is the
# order of return_dict=False / to_tuple(): the decoder's extras, then the encoder's.
@dataclasses.dataclass
class Seq2SeqModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # (B, T, D) decoder output
    cache: None = None  # always None: a full forward keeps no decoder cache (generate keeps its own)
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True
    decoder_attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, T, S) per layer
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, S, D)
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True
    encoder_attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, S, S) per layer

    @property
    def past_key_values(self) -> None:
        """transformers' former name of ``cache``."""
        return self.cache


@dataclasses.dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: torch.Tensor | None = None  # () mean cross-entropy over labels != -100
    logits: torch.Tensor | None = None  # (B, T, V)
    cache: None = None  # always None: a full forward keeps no decoder cache (generate keeps its own)
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True
    decoder_attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, T, T) per layer
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, T, S) per layer
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, S, D); pass the output back as encoder_outputs=
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states=True
    encoder_attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions=True: (B, H, S, S) per layer

    @property
    def past_key_values(self) -> None:
        """transformers' former name of ``cache``."""
        return self.cache


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
