"""The typed-config core every settings class is built on (model configs, the run config, the
server config, the RTD pretraining config):

- :func:`option`: a dataclass field with its one-line help (``metadata["help"]``), the one style
  of field documentation, shown by ``--help`` and ``t5electra config --list``;
- :func:`coerce`: a value converted to a field's annotation, or a ConfigError naming where it came
  from (command-line strings are parsed: ``"3e-4"``, ``"true"``, ``"a,b"``, ``"none"``);
- :func:`conform`: the same for a config.json value (JSON types; numeric strings read as numbers,
  no other string parsing; each member of a union tried in turn);
- :func:`check_keys` and :func:`suggest`: unknown keys refused with a "did you mean".
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from typing import Any, Union

import yaml

from ..errors import ConfigError


def suggest(name: str, choices) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text (``metadata['help']``); mutable defaults are copied."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~", ""}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str, parse_strings: bool = True) -> Any:
    """``value`` converted to annotation ``tp``; ConfigError naming ``where`` otherwise.

    With ``parse_strings`` (command-line values) a string is read as the type asks: ``"3e-4"`` ->
    float, ``"true"`` -> bool, ``"a,b"`` or ``"[a, b]"`` -> list, ``"none"`` -> None for Optional.
    Without it (YAML values) only what is unambiguous: a numeric string for a number (YAML reads
    ``1e4`` as a string), one string for a list of strings (``[that string]``).
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (parse_strings and isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        return coerce(value, args[0], where, parse_strings)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str) and parse_strings:
            s = value.strip()
            if s.startswith("["):
                value = _yaml_value(s, where)
            else:
                value = [v.strip() for v in s.split(",")] if s else []
        elif isinstance(value, str):  # YAML "train_files: corpus.txt": a list of that one
            value = [value]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]", parse_strings) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, str) and parse_strings:
            value = _yaml_value(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping like {{key: value}}, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        # the command line's spellings, also quoted in YAML (fused: 'false'), as numbers in quotes are read
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):  # YAML reads "1e4" (no dot) as a string: read it as the command line does
            text = value.strip().replace("_", "")
            try:
                return int(text)  # exact: 12345678901234567890 is not rounded through a float
            except ValueError:
                pass
            try:
                f = float(text)  # "1e4"
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "3e-4" (no dot) as a string: accept it everywhere
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")  # pragma: no cover


def _yaml_value(s: str, where: str) -> Any:
    try:
        return yaml.safe_load(s)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: cannot parse {s!r} ({str(e).splitlines()[0]})") from None



def conform(value: Any, tp: Any, where: str) -> Any:
    """``value`` as annotation ``tp`` asks (numeric strings read as numbers, integral floats as ints);
    ConfigError naming ``where`` when it cannot be."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return conform(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}={value!r}: expected {_type_name(tp)}")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r}: expected a list")
        return [conform(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r}: expected a mapping")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}={value!r}: expected true or false")
    if tp in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{where}={value!r}: expected {'an integer' if tp is int else 'a number'}")
        if tp is float:
            if not math.isfinite(number):
                raise ConfigError(f"{where}={value!r}: expected a finite number")
            return float(number)
        if isinstance(number, float) and not number.is_integer():
            raise ConfigError(f"{where}={value!r}: expected an integer")
        return int(number)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}={value!r}: expected a string")
    return value

def check_keys(keys: Iterable[str], names: Iterable[str], source: str, what: str) -> None:
    """ConfigError for the first of ``keys`` that is not one of ``names`` (with a suggestion)."""
    names = list(names)
    for key in keys:
        if key not in names:
            raise ConfigError(f"{source}: unknown {what} {key!r}{suggest(key, names)}")


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` of the dataclass ``cls``."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)
