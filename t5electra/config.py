"""Shared machinery for typed configuration dataclasses.

Model configs (``T5Config`` in models/t5.py, ``ElectraConfig`` in models/electra.py) subclass
:class:`ModelConfig`: they use Hugging Face's field names so that a ``config.json`` written by
transformers reads straight in, and ours loads in transformers. Keys of a config.json that we do
not model (``architectures``, ``transformers_version``, ``task_specific_params``...) are kept in
``extra`` and written back unchanged. Keyword overrides (``from_pretrained(dir, dropout_rate=0.0)``)
must name real fields: a typo is an error that suggests the closest name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .core.atomic import write_text_atomic
from .core.typed_config import option, suggest
from .errors import CheckpointNotFoundError, ConfigError, ModelTypeError

C = TypeVar("C", bound="ModelConfig")


@dataclasses.dataclass(kw_only=True)
class ModelConfig:
    """Base of model configs: JSON in/out, overrides with checked keys, named presets."""

    model_type: ClassVar[str] = ""
    # Presets by name: {"t5-small": {field: value, ...}}; filled by each subclass.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    extra: dict[str, Any] = option({}, "config.json keys we do not model, written back unchanged", repr=False,
                                   compare=False)

    # -- construction -------------------------------------------------------------------------
    def __post_init__(self) -> None:
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
        names = set(cls.field_names())
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names and k != "model_type"}
        try:
            cfg = cls(**known)
        except TypeError as e:  # pragma: no cover - defensive
            raise ConfigError(f"{source}: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        cfg.extra = {**extra, **(cfg.extra or {})}
        return cfg

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
        """A copy with some fields changed; an unknown field name is a ConfigError."""
        names = self.field_names()
        for k in overrides:
            if k not in names:
                raise ConfigError(f"{type(self).__name__} has no field {k!r}{suggest(k, names)}")
        new = dataclasses.replace(self, **overrides)
        new.extra = dict(self.extra)
        return new

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
