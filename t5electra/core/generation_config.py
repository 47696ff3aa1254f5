"""``model.generation_config``: the decoding defaults a checkpoint carries in ``generation_config.json``
(transformers writes it; ``save_pretrained`` writes ours back), read by ``generate`` for every option
the call does not give. Only the options ``generate`` has are kept (others are reported once)."""

from __future__ import annotations

import json
import logging
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
        "decoder_start_token_id")
# and the ones a generation_config= argument may also give (as a transformers GenerationConfig can)
CALL_KEYS = (*KEYS, "use_cache", "return_dict_in_generate", "output_scores", "output_logits")
# bookkeeping in transformers' files and objects; bos_token_id only starts decoder-only prompts
_IGNORED = ("transformers_version", "_from_model_config", "bos_token_id")


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
    values = {k: v for k, v in raw.items() if v is not None and k not in _IGNORED}
    unsupported = sorted(k for k in values if k not in CALL_KEYS)
    if unsupported:
        raise ConfigError(f"generation_config sets option(s) generate does not support: {', '.join(unsupported)}; "
                          f"generate's options: {', '.join(CALL_KEYS)}")
    return values


class GenerationConfig:
    """Attribute access as transformers' GenerationConfig (``model.generation_config.num_beams = 4``);
    an option never set reads None, and ``generate`` then uses its own default."""

    def __init__(self, **values: Any):
        object.__setattr__(self, "_values", {})
        for k, v in values.items():
            setattr(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
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

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"GenerationConfig({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def defaults_for(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` of one generate call with this config's values for the options it lacks (option
        by option: with_defaults); a ``generation_config`` among them comes first, and this config fills
        what both leave out."""
        given = kwargs.get("generation_config")
        if given is not None:
            kwargs = with_defaults({k: v for k, v in kwargs.items() if k != "generation_config"}, options_from(given))
        return with_defaults(kwargs, self._values)

    @classmethod
    def from_dir(cls, directory: Path) -> "GenerationConfig":
        path = Path(directory) / FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a JSON object ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: not a JSON object")
        unused = sorted(k for k in raw if k not in KEYS and k not in _IGNORED)
        if unused:
            logger.info("%s: options generate does not have, not used: %s", path, unused)
        return cls(**{k: raw[k] for k in KEYS if raw.get(k) is not None})

    def save(self, directory: Path, token_ids: dict[str, Any] | None = None) -> None:
        """Write generation_config.json when an option is set; with the model's ``token_ids``
        (decoder start, EOS, pad) in it too, which transformers reads from this file alone (without
        them its ``generate`` fails: "decoder_start_token_id or bos_token_id has to be defined")."""
        if self._values:
            values = {**{k: v for k, v in (token_ids or {}).items() if v is not None}, **self._values}
            write_text_atomic(Path(directory) / FILE, json.dumps(values, indent=2, sort_keys=True) + "\n")
