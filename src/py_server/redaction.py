"""Keep secrets and oversized client input out of text the proxy writes: logs, errors, `/health`.

One `Redactor` masks known secret values (and the HTTP Basic encoding of a login) wherever they
appear. The logging filter uses it, and so does `OneCClient` for text that comes from 1C (an
error page can echo the request's `Authorization` header), so both follow the same rules.

    redactor = Redactor(["s3cret"], basic_logins=[("mcp", "s3cret")])
    redactor.redact("Authorization: Basic bWNwOnMzY3JldA==")   # -> "Authorization: Basic ***"
    clip("x" * 10_000)                                           # -> 200 characters, ending in "…"
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

MASK = "***"
# Shorter values are too likely to be ordinary text ("1", "ok") to be masked everywhere.
MIN_SECRET_LENGTH = 3
CLIP_LIMIT = 200


def basic_auth_token(username: str, password: str) -> str:
    """The base64 part of `Authorization: Basic ...` for this login."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


class Redactor:
    """Replaces every known secret with `***`. Longest first, so a secret inside another is covered."""

    def __init__(self, secrets: Iterable[str] = (), *, basic_logins: Iterable[tuple[str, str]] = ()) -> None:
        values = set(secrets)
        for username, password in basic_logins:
            if password:
                values.update((password, basic_auth_token(username, password), f"{username}:{password}"))
        self._secrets = sorted((s for s in values if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def clip(text: str, limit: int = CLIP_LIMIT) -> str:
    """`text`, cut to `limit` characters with "…" when longer (a name or value a client sent)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
