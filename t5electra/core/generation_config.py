"""``model.generation_config``: the decoding defaults a checkpoint carries in ``generation_config.json``
(transformers writes it; ``save_pretrained`` writes ours back), read by ``generate`` for every option
the call does not give. Only the options ``generate`` has are kept; others that would change the
output are named in a warning (read from a file) or refused (given in code)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .atomic import write_text_atomic

logger = logging.getLogger("t5electra")

FILE = "generation_config.json"
# generate's options that a generation_config.json may set (t5electra.generation.seq2seq.generate)
KEYS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "max_time", "num_beams", "length_penalty",
        "early_stopping", "do_sample", "temperature", "top_k", "top_p", "num_return_sequences",
        "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "forced_bos_token_id",
        "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens", "eos_token_id", "pad_token_id",
        "decoder_start_token_id", "use_cache", "return_dict_in_generate", "output_scores", "output_logits")
CALL_KEYS = KEYS  # (the call-level flags were once allowed in a generation_config= argument only)
# bookkeeping in transformers' files and objects; bos_token_id only starts decoder-only prompts
_IGNORED = ("transformers_version", "_from_model_config", "bos_token_id")
# transformers options generate does not have, at values that change nothing (its defaults; None, False
# and empty ones too), and options that never change the output here (caching, compilation, an assistant
# model's, which generate does not take): skipped without a word
_NEUTRAL = {"typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "diversity_penalty": 0.0, "num_beam_groups": 1,
            "encoder_repetition_penalty": 1.0, "encoder_no_repeat_ngram_size": 0}
_NO_EFFECT = ("cache_implementation", "cache_config", "compile_config", "disable_compile", "max_cache_len",
              "prefill_chunk_size", "continuous_batching_config", "low_memory", "num_assistant_tokens",
              "num_assistant_tokens_schedule", "assistant_confidence_threshold", "assistant_lookbehind",
              "target_lookbehind", "prompt_lookup_num_tokens", "max_matching_ngram_size", "is_assistant",
              "assistant_early_exit", "assistant_ensemble_weight")


def not_applied(raw: dict[str, Any]) -> list[str]:
    """The options of ``raw`` (a generation config's dict) that generate does not have and that would
    change its output: not bookkeeping, not a value that changes nothing (_NEUTRAL, None, False, empty)."""
    def neutral(k, v):
        return (k in _IGNORED or k in _NO_EFFECT or v is None or v is False or v in ([], {}, "")
                or (k in _NEUTRAL and v == _NEUTRAL[k]))
    return sorted(k for k, v in raw.items() if k not in KEYS and not neutral(k, v))


def with_defaults(kwargs: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of one generate call with ``defaults`` for the options it leaves out or at None, option
    by option, as transformers merges them. Lengths too: then max_new_tokens wins over max_length (and
    min_new_tokens over min_length) wherever each came from (transformers' _prepare_generated_length)."""
    return {**defaults, **{k: v for k, v in kwargs.items() if v is not None or k not in defaults}}


def options_from(config: Any) -> dict[str, Any]:
    """The options set in a ``generation_config=`` argument: our GenerationConfig, transformers' (its
    ``to_dict()``) or a dict. An option generate does not have raises a ConfigError naming it."""
    if isinstance(config, GenerationConfig):
        return config.to_dict()
    if isinstance(config, dict):
        raw = config
    elif callable(getattr(config, "to_dict", None)):
        raw = config.to_dict()
    else:
        raise ConfigError(f"generation_config must be a GenerationConfig (ours or transformers') or a dict, "
                          f"got {type(config).__name__}")
    unsupported = not_applied(raw)
    if unsupported:
        raise ConfigError(f"generation_config sets option(s) generate does not support: {', '.join(unsupported)}; "
                          f"generate's options: {', '.join(KEYS)}")
    return {k: v for k, v in raw.items() if v is not None and k in KEYS}


# transformers' GenerationConfig._get_default_generation_params(), for the options generate has: what
# its Seq2SeqTrainer writes into model.generation_config (where unset) after generating
DEFAULT_PARAMS = dict(max_length=20, min_length=0, do_sample=False, use_cache=True, early_stopping=False, num_beams=1,
                      temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0, length_penalty=1.0,
                      no_repeat_ngram_size=0, bad_words_ids=None, num_return_sequences=1, output_scores=False,
                      return_dict_in_generate=False, forced_bos_token_id=None, forced_eos_token_id=None,
                      suppress_tokens=None, begin_suppress_tokens=None)


class GenerationConfig:
    """Attribute access as transformers' GenerationConfig (``model.generation_config.num_beams = 4``);
    an option never set reads None, and ``generate`` then uses its own default.

    ``_from_model_config`` has transformers' meaning: True for a model's config made without a
    generation_config.json (the model's own token ids are then the only defaults), False for one
    read from the file or made here; bookkeeping only (transformers' Seq2SeqTrainer reads and clears it)."""

    def __init__(self, _from_model_config: bool = False, **values: Any):
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_from_model_config", bool(_from_model_config))
        for k, v in values.items():
            setattr(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_from_model_config":
            object.__setattr__(self, name, bool(value))
            return
        if name not in KEYS:
            raise ConfigError(f"generation_config has no option {name!r}; generate's options: {', '.join(KEYS)}")
        if value is None:
            self._values.pop(name, None)
        else:
            self._values[name] = value

    def __getattr__(self, name: str) -> Any:
        if name in KEYS:
            return self._values.get(name)
        raise AttributeError(name)

    @staticmethod
    def _get_default_generation_params() -> dict[str, Any]:
        """transformers' defaults of the options generate has (transformers' method of this name)."""
        return dict(DEFAULT_PARAMS)

    def update(self, defaults_only: bool = False, allow_custom_entries: bool = False, **kwargs: Any) -> dict[str, Any]:
        """transformers' ``update``: set the options given (``defaults_only``: only those unset here) and
        return the ones this config does not have (options generate lacks are not stored)."""
        unused = {k: v for k, v in kwargs.items() if k not in KEYS}
        if allow_custom_entries and unused:
            raise ConfigError(f"generation_config cannot hold {', '.join(sorted(unused))}: generate's options are "
                              f"{', '.join(KEYS)}")
        for k, v in kwargs.items():
            if k in KEYS and (not defaults_only or getattr(self, k) is None):
                setattr(self, k, v)
        return unused

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"GenerationConfig({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def defaults_for(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` of one ``model.generate`` call with this config's values for the options it does
        not name; a ``generation_config`` among them comes first, and this config fills what both leave
        out. An option the call names wins even as None, as in transformers (``max_new_tokens=None,
        max_length=9`` cancels a config's max_new_tokens: 9 tokens, not the config's count)."""
        given = kwargs.get("generation_config")
        named = {k: v for k, v in kwargs.items() if k != "generation_config"}
        defaults = with_defaults(options_from(given), self._values) if given is not None else self._values
        return {**defaults, **named}

    @classmethod
    def from_dir(cls, directory: Path) -> "GenerationConfig":
        path = Path(directory) / FILE
        if not path.is_file():
            return cls(_from_model_config=True)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a JSON object ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: not a JSON object")
        unused = not_applied(raw)
        if unused:  # a warning, not an error: one option should not make a whole checkpoint unusable
            warnings.warn(f"{path}: {', '.join(f'{k}={raw[k]!r}' for k in unused)}: option(s) t5electra's generate "
                          f"does not implement, NOT applied (generate decodes as if they were unset; transformers "
                          f"would apply them)", UserWarning, stacklevel=2)
        return cls(_from_model_config=raw.get("_from_model_config") is True,
                   **{k: raw[k] for k in KEYS if raw.get(k) is not None})

    def save(self, directory: Path, token_ids: dict[str, Any] | None = None) -> None:
        """Write generation_config.json when an option is set (beyond the model's own ``token_ids``);
        with the model's ``token_ids`` (decoder start, EOS, pad) in it too, which transformers reads
        from this file alone (without them its ``generate`` fails: "decoder_start_token_id or
        bos_token_id has to be defined"). Otherwise an earlier save's file there is removed."""
        if any((token_ids or {}).get(k) != v for k, v in self._values.items()):
            values = {**{k: v for k, v in (token_ids or {}).items() if v is not None}, **self._values}
            if self._from_model_config:
                values["_from_model_config"] = True  # as transformers writes it
            write_text_atomic(Path(directory) / FILE, json.dumps(values, indent=2, sort_keys=True) + "\n")
        else:  # an earlier save's file would give the reloaded model options this one does not have
            (Path(directory) / FILE).unlink(missing_ok=True)


# what generate reads from the model's config when a generation config leaves it out
TOKEN_IDS = ("decoder_start_token_id", "eos_token_id", "pad_token_id")


def as_generation_config(value: Any) -> GenerationConfig:
    """Our GenerationConfig for ``value``: ours as it is; transformers' or a dict converted (an option
    generate does not have, at a value that would change the output, raises a ConfigError naming it)."""
    if isinstance(value, GenerationConfig):
        return value
    if isinstance(value, dict) or callable(getattr(value, "to_dict", None)):
        return GenerationConfig(**options_from(value))
    raise ConfigError(f"model.generation_config must be a GenerationConfig (ours or transformers') or a dict, "
                      f"got {type(value).__name__}")


class GenerationConfigAttribute:
    """``model.generation_config`` of a model that generates. What is assigned (our GenerationConfig,
    transformers' or a dict) becomes ours (as_generation_config: transformers' is copied, later changes
    to that object do not reach the model), with the model config's decoder start, EOS and pad ids where
    it leaves them out, as transformers' ``GenerationConfig.from_model_config`` fills them (T5: 0, 1, 0)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, model: Any, owner: type | None = None) -> Any:
        if model is None:
            return self
        try:
            return model.__dict__[self.slot]
        except KeyError:
            raise AttributeError(self.slot[1:]) from None

    def __set__(self, model: Any, value: Any) -> None:
        config = as_generation_config(value)
        for k in TOKEN_IDS:
            if getattr(config, k) is None and getattr(model.config, k, None) is not None:
                setattr(config, k, getattr(model.config, k))
        model.__dict__[self.slot] = config
