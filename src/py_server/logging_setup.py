"""Logging to stderr only (stdout is the stdio wire), with secrets masked in every record and
floods from the network-facing loggers cut to one line a minute. Text lines for people, or one JSON
object per line for a log shipper (`MCP_LOG_FORMAT=json`).

configure_logging("DEBUG", secrets=Redactor([token], basic_logins=[(user, password)]), log_format="json")
logger.info("tools/call %s", name, extra={"request_id": rid, "tool": name, "duration_ms": 12.5})
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from .redaction import Redactor, basic_auth_token

__all__ = [
    "JSON_EXTRA_KEYS",
    "LOG_FORMAT",
    "RATE_LIMITED_LOGGERS",
    "JsonFormatter",
    "RateLimitFilter",
    "SecretMaskingFilter",
    "basic_auth_token",
    "configure_logging",
]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# The `extra={...}` attributes a JSON line carries when a record has them; any other extra stays out,
# so a careless `extra` cannot put a request body or a header into the shipped logs.
JSON_EXTRA_KEYS = ("request_id", "method", "tool", "duration_ms", "outcome", "session", "base", "user")
# Libraries whose INFO lines are per-request noise; they speak at DEBUG only when we do.
_CHATTY = ("httpx", "httpcore", "mcp", "sse_starlette", "uvicorn.access")
# Loggers (and their children) that anyone who can reach the port can make write: rejected requests,
# broken connections, protocol errors. Their repeats are rate-limited so a scanner cannot fill the disk.
RATE_LIMITED_LOGGERS = (
    "py_server.http_security",
    "py_server.http_connections",
    "py_server.identity.oauth",  # an identity provider that is down fails every sign-in
    "uvicorn.error",
    "asyncio",
)
# A kind is (logger, message template, level). Messages that carry their own values (asyncio formats
# its own) make a new kind each time; past this many, forget them all rather than grow without bound.
_MAX_KINDS = 1000


class SecretMaskingFilter(logging.Filter):
    """Replace known secret values (and the Basic-auth encoding of the 1C login) with ***.

    A second line of defence: the code never logs secrets on purpose, this catches a library
    that does (a request dump at DEBUG, an exception that echoes a URL).
    """

    def __init__(self, secrets: Iterable[str] | Redactor) -> None:
        super().__init__()
        self._redactor = secrets if isinstance(secrets, Redactor) else Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redactor:
            return True
        message = record.getMessage()
        masked = self._redactor.redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redactor.redact(record.stack_info)
        for key in JSON_EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None and not isinstance(value, (bool, int, float)):
                # Any other object is shipped as its text, so that text is what gets masked.
                setattr(record, key, self._redactor.redact(value if isinstance(value, str) else str(value)))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: `time` (UTC, ISO 8601 with milliseconds), `level`,
    `logger`, `message`, then `exc_info` (the traceback) and the `JSON_EXTRA_KEYS` a record carries.

    Formats what the filters left: with `SecretMaskingFilter` on the same handler, the message, the
    traceback and the extras are already masked. Cyrillic is written as it is, not as \\u escapes.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = record.stack_info
        for key in JSON_EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        return json.dumps(line, ensure_ascii=False, default=str)


@dataclasses.dataclass
class _Kind:
    passed_at: float
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """Lets through at most one record per `interval` seconds of each kind: same logger, same
    unformatted message, same level. Applies only to `loggers` and their children.

    The next record of a kind that passes after some were dropped says how many, so nothing is
    hidden without a trace: "... (41 similar suppressed in the last 60 s)".
    """

    def __init__(
        self,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        loggers: Iterable[str] = RATE_LIMITED_LOGGERS,
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._loggers = tuple(loggers)
        self._kinds: dict[tuple[str, str, int], _Kind] = {}
        self._lock = threading.Lock()  # handlers call filters outside their own lock, from any thread

    def _applies_to(self, name: str) -> bool:
        return any(name == logger or name.startswith(logger + ".") for logger in self._loggers)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._applies_to(record.name):
            return True
        key = (record.name, str(record.msg), record.levelno)
        now = self._clock()
        with self._lock:
            previous = self._kinds.get(key)
            if previous is not None and now - previous.passed_at < self._interval:
                previous.suppressed += 1
                return False
            if len(self._kinds) >= _MAX_KINDS:
                self._kinds.clear()
            self._kinds[key] = _Kind(passed_at=now)
        if previous is not None and previous.suppressed:
            # Appended to the template, not the formatted text, so the record's args still apply.
            record.msg = (
                f"{record.msg} ({previous.suppressed} similar suppressed in the last {now - previous.passed_at:.0f} s)"
            )
        return True


def configure_logging(
    level: str, *, secrets: Iterable[str] | Redactor = (), log_format: Literal["text", "json"] = "text"
) -> None:
    """Send every log record to stderr in UTF-8, whatever the console's code page.

    Args:
        level: the root level (DEBUG, INFO, WARNING or ERROR).
        secrets: the values to mask (see `main._redactor`, which adds the 1C login's Basic token).
        log_format: `text` (`LOG_FORMAT` lines) or `json` (one `JsonFormatter` object per line).
    """
    stream = sys.stderr
    if hasattr(stream, "reconfigure"):
        stream.reconfigure(encoding="utf-8", errors="backslashreplace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    # Rate limiting first: it keys on the unformatted message, which masking may replace.
    handler.addFilter(RateLimitFilter())
    handler.addFilter(SecretMaskingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
