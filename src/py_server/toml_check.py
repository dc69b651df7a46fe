"""Words for one-line errors about TOML settings files (the policy file, the bases file).

raise ConfigError(f"... unknown key {key!r}{did_you_mean(key, KEYS)}")
raise ConfigError(f"... must be a list, not {describe(value)} (got {shown(value)})")
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from datetime import date, datetime, time

from .redaction import clip

__all__ = ["describe", "did_you_mean", "group_key", "shown"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def group_key(name: str) -> str:
    """How TOML writes the group's table name: `interns`, or `"Domain Users"` when it needs quotes."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def did_you_mean(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: object) -> str:
    """A TOML value's type, in TOML's words."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return type(value).__name__


def shown(value: object) -> str:
    """A scalar as the admin wrote it (clipped, on one line), a compound value by its type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return clip(json.dumps(value, ensure_ascii=False), 60)
    return describe(value)
