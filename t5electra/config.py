"""Shared machinery for typed configuration dataclasses.

Model configs (``T5Config`` in models/t5.py, ``ElectraConfig`` in models/electra.py) subclass
:class:`ModelConfig`: they use Hugging Face's field names so that a ``config.json`` written by
transformers reads straight in, and ours loads in transformers. Keys of a config.json that we do
not model (``architectures``, ``transformers_version``, ``task_specific_params``...) are kept in
``extra`` and written back unchanged. Keyword overrides (``from_pretrained(dir, dropout_rate=0.0)``)
must name real fields (or transformers' settable attributes: ``output_attentions=True``): a typo is an
error that suggests the closest name.

A config.json key that is neither a field nor one transformers writes (:data:`HF_KEYS`) is a
misspelling until shown otherwise: close to a field that the file lacks (``dropout_rat``), it is an
error naming both; otherwise a warning names it. Values are checked against the field's type;
numbers written as strings (``"1e-6"``) are read as numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
import warnings
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .core.atomic import write_text_atomic
from .core.typed_config import conform, option, suggest
from .errors import CheckpointNotFoundError, ConfigError, ModelTypeError

C = TypeVar("C", bound="ModelConfig")


# Keys transformers writes into a config.json (PretrainedConfig's attributes and generation defaults,
# in 4.x and 5.x) and keys of the T5 / ELECTRA / BERT configs that we do not model: kept in
# ``extra`` and written back, without a warning (scalable_attention: published umT5 configs, unused).
HF_KEYS = frozenset("""
    _name_or_path _attn_implementation_autoset add_cross_attention architectures bad_words_ids
    begin_suppress_tokens bos_token_id chunk_size_feed_forward classifier_dropout cross_attention_hidden_size
    decoder_start_token_id dense_act_fn diversity_penalty do_sample dtype early_stopping
    encoder_no_repeat_ngram_size eos_token_id exponential_decay_length_penalty finetuning_task
    forced_bos_token_id forced_eos_token_id gradient_checkpointing id2label is_decoder is_encoder_decoder
    is_gated_act label2id length_penalty max_length min_length model_type n_positions no_repeat_ngram_size
    num_beam_groups num_beams num_labels num_return_sequences output_attentions output_hidden_states
    output_past output_scores pad_token_id position_embedding_type prefix problem_type pruned_heads
    remove_invalid_values repetition_penalty return_dict return_dict_in_generate sep_token_id
    suppress_tokens task_specific_params temperature tf_legacy_loss tie_encoder_decoder tie_word_embeddings
    tokenizer_class top_k top_p torch_dtype torchscript transformers_version typical_p use_bfloat16
    use_cache use_return_dict summary_activation summary_last_dropout summary_proj_to_labels summary_type
    summary_use_proj initializer_range initializer_factor scalable_attention
""".split())


@dataclasses.dataclass(kw_only=True)
class ModelConfig:
    """Base of model configs: JSON in/out, overrides with checked keys, named presets."""

    model_type: ClassVar[str] = ""
    # Presets by name: {"t5-small": {field: value, ...}}; filled by each subclass.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # transformers' other names of fields (its config classes' attribute_map): read and set the field
    attribute_map: ClassVar[dict[str, str]] = {}

    extra: dict[str, Any] = option({}, "config.json keys we do not model, written back unchanged", repr=False,
                                   compare=False)

    # -- transformers' attributes ---------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:  # only for names that are not attributes: the aliases
        field = type(self).attribute_map.get(name)
        if field is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self, field)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(type(self).attribute_map.get(name, name), value)

    def _call_flag(self, name: str, default: bool) -> bool:
        value = self.extra.get(name, default)
        return default if value is None else value

    def _set_call_flag(self, name: str, value: bool) -> None:
        if not isinstance(value, bool):
            raise ConfigError(f"{type(self).__name__}.{name} must be True or False, got {value!r}")
        self.extra[name] = value

    # transformers' call defaults (config.json's return_dict / output_hidden_states / output_attentions,
    # kept in ``extra``): a model call that does not give the option takes the config's, as in transformers
    return_dict = property(lambda self: self._call_flag("return_dict", True),
                           lambda self, v: self._set_call_flag("return_dict", v),
                           doc="False: model calls return tuples (default True)")
    output_hidden_states = property(lambda self: self._call_flag("output_hidden_states", False),
                                    lambda self, v: self._set_call_flag("output_hidden_states", v),
                                    doc="True: model calls return the hidden states (default False)")
    output_attentions = property(lambda self: self._call_flag("output_attentions", False),
                                 lambda self, v: self._set_call_flag("output_attentions", v),
                                 doc="True: model calls return the attention weights (default False)")
    use_return_dict = property(lambda self: self.return_dict, doc="transformers' older name of return_dict")

    # -- construction -------------------------------------------------------------------------
    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for name in self.field_names():
            setattr(self, name, conform(getattr(self, name), hints[name], f"{type(self).__name__}.{name}"))
        self.validate()

    def validate(self) -> None:
        """Check field values; subclasses raise ConfigError naming the field and value."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any], source: str = "<dict>") -> C:
        """Build from a config.json dict; unknown keys are kept in ``extra``."""
        mt = d.get("model_type")
        if mt is not None and cls.model_type and mt != cls.model_type and mt not in cls.compatible_model_types():
            raise ModelTypeError(
                f"{source}: model_type {mt!r} cannot be loaded as {cls.__name__} "
                f"(expects {cls.model_type!r})"
            )
        d = cls._dealias(d, source)
        names = set(cls.field_names())
        hints = typing.get_type_hints(cls)
        known = {k: conform(v, hints[k], f"{source}: {k}") for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names and k != "model_type"}
        for key in extra:
            if key in HF_KEYS or key.startswith("_"):
                continue
            close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.8)
            if close and close[0] not in d:
                raise ConfigError(f"{source}: unknown key {key!r} (did you mean {close[0]!r}?): as written it would "
                                  f"be ignored and {close[0]} left at its default; rename the key")
            warnings.warn(f"{source}: key {key!r} is not a {cls.__name__} field and is ignored (kept in "
                          f"config.extra){suggest(key, names)}", stacklevel=3)
        try:
            cfg = cls(**known)
        except TypeError as e:  # pragma: no cover - defensive
            raise ConfigError(f"{source}: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        cfg.extra = {**extra, **(cfg.extra or {})}
        return cfg

    @classmethod
    def _dealias(cls, d: dict[str, Any], source: str) -> dict[str, Any]:
        """``d`` with transformers' other names of fields (``attribute_map``: T5's hidden_size,
        num_attention_heads, num_hidden_layers, head_dim) renamed to the fields; an alias that
        contradicts its field given too is a ConfigError."""
        out = dict(d)
        for alias, field in cls.attribute_map.items():
            if alias not in out:
                continue
            value = out.pop(alias)
            if field in out and out[field] != value:
                raise ConfigError(f"{source}: {alias}={value!r} and {field}={out[field]!r} name the same field "
                                  f"({alias} is transformers' other name of {field}); keep one")
            out[field] = value
        return out

    @classmethod
    def compatible_model_types(cls) -> tuple[str, ...]:
        """Other model_type values this config can read (e.g. 'bert' for ELECTRA)."""
        return ()

    @classmethod
    def from_json_file(cls: type[C], path: str | os.PathLike) -> C:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"no config file at {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object of config fields, found a {type(d).__name__}")
        return cls.from_dict(d, source=str(path))

    @classmethod
    def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
        if name not in cls.presets:
            raise ConfigError(f"unknown {cls.__name__} preset {name!r}{suggest(name, cls.presets)}; "
                              f"known: {', '.join(sorted(cls.presets))}")
        return cls(**cls.presets[name]).replace(**overrides)

    @classmethod
    def from_pretrained(cls: type[C], name_or_dir: str | os.PathLike, **overrides: Any) -> C:
        """A preset name, or a directory holding config.json."""
        if str(name_or_dir) in cls.presets:
            return cls.from_preset(str(name_or_dir), **overrides)
        p = Path(name_or_dir)
        if p.is_dir():
            p = p / "config.json"
        return cls.from_json_file(p).replace(**overrides)

    def replace(self: C, **overrides: Any) -> C:
        """A copy with some fields changed; an unknown field name is a ConfigError. transformers'
        attributes the class exposes as settable properties (``output_attentions``, ``return_dict``,
        ELECTRA's ``tie_word_embeddings``: kept in ``extra``) are set too, as transformers'
        ``from_pretrained(dir, output_attentions=True)`` sets them."""
        overrides = self._dealias(overrides, type(self).__name__)
        names, settable = self.field_names(), self._settable_properties()
        for k in overrides:
            if k not in names and k not in settable:
                raise ConfigError(f"{type(self).__name__} has no field {k!r}{suggest(k, names + settable)}")
        attributes = {k: overrides.pop(k) for k in list(overrides) if k in settable}
        new = dataclasses.replace(self, **overrides)
        new.extra = dict(self.extra)
        for k, v in attributes.items():
            setattr(new, k, v)  # the property's own checks
        return new

    @classmethod
    def _settable_properties(cls) -> list[str]:
        return [n for n in dir(cls) if isinstance(getattr(cls, n, None), property) and getattr(cls, n).fset is not None]

    # -- output -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dict(self.extra)
        d.update({k: getattr(self, k) for k in self.field_names()})
        d["model_type"] = self.model_type
        return d

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "config.json"
        return write_text_atomic(path, self.to_json_string())
