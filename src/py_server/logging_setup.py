"""Logging to stderr only (stdout is the stdio wire), with secrets masked in every record.

configure_logging("DEBUG", secrets=[settings.onec_password.get_secret_value()])
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from .redaction import Redactor, basic_auth_token

__all__ = ["LOG_FORMAT", "SecretMaskingFilter", "basic_auth_token", "configure_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Libraries whose INFO lines are per-request noise; they speak at DEBUG only when we do.
_CHATTY = ("httpx", "httpcore", "mcp", "sse_starlette", "uvicorn.access")


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
        return True


def configure_logging(level: str, *, secrets: Iterable[str] = ()) -> None:
    """Send every log record to stderr in UTF-8, whatever the console's code page."""
    stream = sys.stderr
    if hasattr(stream, "reconfigure"):
        stream.reconfigure(encoding="utf-8", errors="backslashreplace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(SecretMaskingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
