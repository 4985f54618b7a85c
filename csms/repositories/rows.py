"""What every repository does with a row: decode a JSON column, read a count."""

from __future__ import annotations

import json
from typing import Any


def json_or(text: str | None, default: Any = None) -> Any:
    """The JSON value stored as ``text``; ``default`` when there is none."""
    return json.loads(text) if text else default


def count(row: dict[str, Any] | None) -> int:
    """The ``n`` of a ``SELECT COUNT(*) AS n`` row."""
    return int(row["n"] if row else 0)
