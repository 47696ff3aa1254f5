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
KEYS = ("max_length", "max_new_tokens", "min_new_tokens", "num_beams", "length_penalty", "early_stopping",
        "do_sample", "temperature", "top_k", "top_p", "num_return_sequences", "repetition_penalty",
        "no_repeat_ngram_size", "eos_token_id", "pad_token_id", "decoder_start_token_id")
_LENGTHS = ("max_length", "max_new_tokens")


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
        """``kwargs`` of one generate call with this config's values for the options it lacks (a
        length given in the call replaces both lengths of the config, as in transformers)."""
        values = dict(self._values)
        if any(kwargs.get(k) is not None for k in _LENGTHS):
            for k in _LENGTHS:
                values.pop(k, None)
        return {**values, **{k: v for k, v in kwargs.items() if v is not None or k not in values}}

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
        unused = sorted(k for k in raw if k not in KEYS and k not in ("transformers_version", "_from_model_config"))
        if unused:
            logger.info("%s: options generate does not have, not used: %s", path, unused)
        return cls(**{k: raw[k] for k in KEYS if raw.get(k) is not None})

    def save(self, directory: Path) -> None:
        if self._values:
            write_text_atomic(Path(directory) / FILE, json.dumps(self._values, indent=2, sort_keys=True) + "\n")
