"""Reading the TOML settings files (the policy file, the bases file), with one-line errors.

    text = read_text(path, fail)                          # UTF-8, a BOM accepted
    document = parse_toml(text, fail, empty="...", non_ascii_hint="...")
    patterns = pattern_list("tools_deny", value, fail)    # a list of globs; one string is one pattern
    raise fail(f"unknown key {key!r}{did_you_mean(key, KEYS)}")

`fail(message)` makes the ConfigError that names the file (and the table) the message is about.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .redaction import clip

__all__ = ["boolean", "describe", "did_you_mean", "group_key", "parse_toml", "pattern_list", "read_text", "shown"]

Fail = Callable[[str], ConfigError]

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


def read_text(path: Path, fail: Fail) -> str:
    """The file's text: UTF-8, a BOM accepted."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read it ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 (byte {exc.start}); save it as UTF-8") from exc


def parse_toml(text: str, fail: Fail, *, empty: str, non_ascii_hint: str) -> dict[str, Any]:
    """The TOML document; `empty` says what an empty file needs, `non_ascii_hint` how to write a
    table name beyond ASCII (the usual cause of a key error in a Russian file)."""
    if not text.strip():
        raise fail(f"the file is empty; {empty}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = f"; {non_ascii_hint}" if "key" in str(exc) and not text.isascii() else ""
        raise fail(f"not valid TOML: {exc}{hint}") from exc


def boolean(key: str, value: object, fail: Fail) -> bool:
    if not isinstance(value, bool):
        raise fail(f"{key} must be true or false, not {shown(value)}")
    return value


def pattern_list(key: str, value: object, fail: Fail) -> list[str]:
    """A list of glob patterns; a single string is one pattern."""
    if isinstance(value, str):
        # An environment-style list would become one pattern that matches nothing: say so.
        if "," in value:
            items = ", ".join(json.dumps(item.strip(), ensure_ascii=False) for item in value.split(","))
            raise fail(f"{key} is one string with commas; write a list: {key} = [{items}]")
        value = [value]
    if not isinstance(value, list):
        raise fail(f"{key} must be a list of glob patterns, not {describe(value)}")
    for index, pattern in enumerate(value):
        if not isinstance(pattern, str) or not pattern:
            raise fail(f"{key}[{index}] must be a glob pattern (a non-empty string), not {shown(pattern)}")
    return value
