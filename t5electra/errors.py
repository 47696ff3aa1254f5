"""Exceptions raised by t5electra. Each says what went wrong and where (file, key, value).

They subclass the builtin a caller would naturally catch (``FileNotFoundError``,
``ValueError``) so generic handlers keep working.
"""

from __future__ import annotations


class T5ElectraError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(T5ElectraError, ValueError):
    """A configuration value or key is invalid (names the key, the value and the source)."""


class OtherDataError(ConfigError):
    """A data cursor saved on other data (other token shards: the corpus or the tokenizer changed)."""


class ModelTypeError(ConfigError):
    """A checkpoint of one model family was given to a class of another (e.g. T5 into ELECTRA)."""


class CheckpointError(T5ElectraError, OSError):
    """A checkpoint directory cannot be read or written."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The directory, its config.json, or its weight files do not exist."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle file (pytorch_model.bin) needs code execution to load; we refuse it."""


class WeightsMismatchError(T5ElectraError, ValueError):
    """Tensors are missing, unexpected, or of the wrong shape for the model."""


class InvalidInputError(T5ElectraError, ValueError):
    """Inputs to a model, a tokenizer or generate() are invalid (ids outside the vocab, lengths, ...)."""


class MissingTokenError(ConfigError):
    """A special token the caller needs (e.g. [MASK], [PAD]) is not in the tokenizer's vocabulary."""


class DataError(T5ElectraError, ValueError):
    """A data file or dataset is missing, malformed, or lacks a needed column/field (names file, line, key)."""


class TrainingError(T5ElectraError, RuntimeError):
    """Training cannot continue (non-finite loss, ...); the message names the step and the last good checkpoint."""


class MissingExtraError(T5ElectraError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it
    (``pip install 't5electra[data]'``). An ImportError too, for code that draws only if it can."""
