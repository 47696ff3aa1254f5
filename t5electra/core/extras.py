"""Optional dependencies (the package's extras): imported where they are needed, and named with the
extra that brings them when they are missing, instead of a ModuleNotFoundError traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtraError


def require(module: str, purpose: str, extra: str = "data") -> ModuleType:
    """``import module``, or a MissingExtraError: "<purpose> needs <package>: pip install ..."."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{purpose} needs {module.split('.')[0]}: pip install 't5electra[{extra}]'") from None
