"""JSON Lines records written for people and line readers alike.

Chinese stays as written (``ensure_ascii=False``), and every character that JSON leaves raw but a
line reader may split at (U+2028, U+2029, NEL: ``str.splitlines`` does, and so do some editors)
is escaped, so one record is one line for every reader.
"""

from __future__ import annotations

import json
from typing import Any

_RAW_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def json_line(record: Any) -> str:
    """``record`` as one JSON line, ending in ``\\n``."""
    return json.dumps(record, ensure_ascii=False).translate(_RAW_BREAKS) + "\n"
