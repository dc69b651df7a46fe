"""The audit log: one JSON line per `tools/call`, `resources/read` and `prompts/get`, saying who asked
for what, how it ended, how big the answer was and how much personal data was masked in it.

    audit = AuditLog.from_settings(settings)       # a NullAudit, doing nothing, when MCP_AUDIT_LOG is unset
    with audit.record(caller, "tools/call", name, masked_arguments) as entry:
        if refused:
            entry.deny("tool is not in MCP_TOOLS_ALLOW")
            raise MCPError(...)                                  # still audited as "denied"
        result = await call(...)
        entry.result(result)                                     # size, isError, masked counts
    # leaving the block writes exactly one line; an exception that escapes it is audited and re-raised

An audit line never costs the request: a write that fails (disk full, no permission, a directory
that does not exist) is reported once to the normal log (logger "py_server.audit") and the request
goes on. Lines are written straight to their own handler, never through a `logging.Logger`, so they
cannot reach the root logger (no duplicate in the normal log; with "-" stderr gets only JSON lines),
and no log level or `logging.disable` can silence an audit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

import pydantic

from .callers import Caller
from .config import Settings
from .masking import MASKED_META_KEY, masked_counts
from .redaction import clip

__all__ = [
    "MASKED_META_KEY",
    "STDERR",
    "AuditLog",
    "AuditRecord",
    "NullAudit",
    "NullRecord",
    "Outcome",
]

logger = logging.getLogger(__name__)

# Where the masking module reports what it masked in a result: {"inn": 3, "phone": 1}. Spelled out here
# rather than imported so that the audit log does not depend on the masker being loaded or enabled.
STDERR = "-"
MEGABYTE = 1024 * 1024
# Arguments longer than this (as JSON text) are cut: a few huge calls must not rotate the trail away.
MAX_ARGUMENTS_CHARS = 4096
Outcome = Literal["ok", "tool_error", "error", "denied", "cancelled"]
# JSON leaves these unescaped, but str.splitlines() and some log viewers break lines at them; escaped,
# one record stays one line for every reader.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class _ReportingHandler(logging.Handler):
    """A handler that remembers why its last line failed instead of printing a traceback to stderr."""

    failure: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        # logging's default prints a traceback for every failed line (and a full disk fails every line);
        # AuditLog reads this after each write and reports the first failure of a run once.
        self.failure = sys.exc_info()[1]


class _StderrHandler(_ReportingHandler, logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time of the write (as logging.lastResort does), so a
    stream swapped later (pytest's capture, a reconfigured console) still gets the lines."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # StreamHandler.setStream and close may assign; the stream is always the current sys.stderr


class _FileHandler(_ReportingHandler, RotatingFileHandler):
    """RotatingFileHandler with three audit-minded changes.

    * A rotation that fails is reported once and not tried again: on Windows a file held open by another
      process (a second proxy on the same path, a `Get-Content -Wait`) cannot be renamed, and retrying on
      every line would shift one backup out per line until none is left. The lines keep going into the
      current file, which then grows past the limit until the proxy restarts.
    * An empty file is never rotated, so a line longer than the limit does not leave empty backups.
    * With no backups kept (MCP_AUDIT_BACKUPS=0) a full file starts afresh; the standard handler would
      reopen and grow it for ever.
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        # delay: the file is opened at the first line, so a bad path fails a write (reported), not start-up.
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.rotation_failure: OSError | None = None

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.rotation_failure is not None or not super().shouldRollover(record):
            return False
        # The base class has just opened the file and sought to its end.
        return self.stream is not None and self.stream.tell() > 0

    def doRollover(self) -> None:
        try:
            super().doRollover()
            if self.backupCount == 0:
                self.stream = self._open_truncated()
        except OSError as exc:
            self.rotation_failure = exc
            logger.error(
                "cannot rotate the audit log %s: %s; it now grows past MCP_AUDIT_MAX_MB until the proxy restarts "
                "(close whatever holds the file open, or give each proxy its own MCP_AUDIT_LOG)",
                self.baseFilename,
                exc.strerror or exc,
            )

    def _open_truncated(self) -> TextIO:
        # Left open: the handler keeps it as its stream and closes it at the next rotation or at close().
        return open(self.baseFilename, "w", encoding=self.encoding, errors=self.errors)


class AuditLog:
    """Where audit lines go: a size-rotated UTF-8 file, or stderr for `target` "-"."""

    def __init__(
        self,
        target: str | Path,
        *,
        max_bytes: int,
        backups: int,
        include_arguments: bool,
        clock: Callable[[], float] = time.perf_counter,
        service_user: str | None = None,
    ) -> None:
        self.enabled = True
        self.service_user = service_user or None  # the 1C user of calls made with the settings' account
        self.include_arguments = include_arguments
        self.clock = clock  # monotonic seconds for durations; wall time would jump with NTP or DST
        self._handler: _ReportingHandler
        if str(target) == STDERR:
            self._handler = _StderrHandler()
            self.target = "stderr"
        else:
            path = Path(target).expanduser().absolute()
            self._handler = _FileHandler(path, max_bytes=max(1, max_bytes), backups=max(0, backups))
            self.target = str(path)
        self._lock = threading.Lock()  # one line at a time, and the failure bookkeeping with it
        self._lost = 0  # lines lost since the last one that was written
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditLog:
        """The audit log MCP_AUDIT_LOG asks for, or a NullAudit when it is unset.

        A NullAudit rather than None: the request path then needs no `if audit` at each call, and the
        cost of auditing nothing is one call that returns a shared do-nothing record.
        """
        if settings.audit_log is None:
            return NullAudit()
        audit = cls(
            settings.audit_log,
            max_bytes=round(settings.audit_max_mb * MEGABYTE),
            backups=settings.audit_backups,
            include_arguments=settings.audit_arguments,
            service_user=settings.onec_username,
        )
        # The absolute path: a relative one is relative to wherever the MCP client started the proxy.
        logger.info("audit log: %s", audit.target)
        return audit

    def record(self, caller: Caller, method: str, target: str, arguments: dict[str, Any] | None = None) -> AuditRecord:
        """The record of one request, written when its `with` block ends. `target` is the tool name,
        resource URI or prompt name; `arguments` are written as given, and only with MCP_AUDIT_ARGUMENTS."""
        return AuditRecord(self, caller, method, target, arguments)

    def close(self) -> None:
        """Close the file. Lines that arrive afterwards are dropped, so a late one cannot reopen it."""
        with self._lock:
            self._closed = True
            self._handler.close()

    def write(self, line: str) -> None:
        """Write one line; never raises. The first failure of a run is logged, and so is the recovery."""
        with self._lock:
            if self._closed:
                return
            handler = self._handler
            handler.failure = None
            try:
                handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO, "levelname": "INFO"}))
            except Exception as exc:  # handlers catch their own errors; this is for anything they let through
                handler.failure = exc
            if handler.failure is None:
                if self._lost:
                    logger.warning("the audit log %s is written again; %d line(s) were lost", self.target, self._lost)
                    self._lost = 0
                return
            if not self._lost:
                failure = handler.failure
                reason = failure.strerror if isinstance(failure, OSError) and failure.strerror else failure
                logger.error(
                    "cannot write the audit log %s: %s; requests go on, unaudited until it can be written",
                    self.target,
                    reason,
                )
            self._lost += 1


class AuditRecord:
    """The audit of one request: a context manager that writes exactly one line when its block ends."""

    def __init__(
        self, log: AuditLog, caller: Caller, method: str, target: str, arguments: dict[str, Any] | None
    ) -> None:
        self._log = log
        self._caller = caller
        self._method = method
        self._target = target
        self._arguments = arguments
        self._started_at = datetime.now(UTC)
        self._started = log.clock()
        self._outcome: Outcome = "ok"
        self._size: int | None = None
        self._masked: dict[str, int] = {}
        self._reason: str | None = None
        self._error: str | None = None
        self._base: str | None = None
        self._written = False

    def __enter__(self) -> AuditRecord:
        # The clock starts when the request does, not when record() was called.
        self._started_at = datetime.now(UTC)
        self._started = self._log.clock()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> Literal[False]:
        if exc is not None and self._outcome != "denied":
            if isinstance(exc, asyncio.CancelledError):
                self._outcome = "cancelled"
            else:
                self._outcome = "error"
                self._error = clip(str(exc) or type(exc).__name__)
        self._write()
        return False  # the exception, if any, goes on to the request path unchanged

    def result(self, result: pydantic.BaseModel) -> None:
        """What the request answered: its size in bytes as sent, isError, and the masked counts in `_meta`."""
        try:
            self._size = len(result.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8"))
        except Exception:  # a result that cannot be serialized fails on its way out too; the audit says so, not us
            self._size = None
        if getattr(result, "is_error", None) is True and self._outcome == "ok":
            self._outcome = "tool_error"
        self._masked = masked_counts(result)

    def at_base(self, name: str) -> None:
        """The 1C base the request went to (none for a local tool)."""
        self._base = name

    def deny(self, reason: str) -> None:
        """The request was refused by policy; `reason` says why. An exception raised afterwards does not
        turn the outcome into "error": a refusal is usually answered by raising one."""
        self._outcome = "denied"
        self._reason = clip(reason)

    def _write(self) -> None:
        if self._written:  # a record re-entered by mistake still writes one line
            return
        self._written = True
        try:
            self._log.write(self._line())
        except Exception:  # formatting must not fail a request either
            logger.exception("cannot format an audit line for %s %s", self._method, clip(self._target))

    def _line(self) -> str:
        duration_ms = (self._log.clock() - self._started) * 1000
        entry: dict[str, Any] = {
            "time": self._started_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "who": self._caller.name,
            # The 1C user the call ran as: the person's own login (passthrough), else the service account's.
            "onec_user": self._caller.identity.onec_user or self._log.service_user,
            "session": self._caller.session_id,
            "transport": self._caller.transport,
            "base": self._base,
            "method": self._method,
            "target": clip(self._target),
            "outcome": self._outcome,
            "duration_ms": round(duration_ms, 1),
            "result_bytes": self._size,
            "masked": self._masked,
        }
        if self._reason is not None:
            entry["reason"] = self._reason
        if self._error is not None:
            entry["error"] = self._error
        if self._log.include_arguments:
            entry.update(_bounded_arguments(self._arguments))
        # default=str: arguments came from JSON, but a value that is not (a date a caller built) must not lose the line.
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
        if line.isascii():
            return line
        # A lone surrogate ("\ud800" is valid JSON from a client) cannot be encoded as UTF-8 and would lose
        # the line, which would let a client go unaudited; backslashreplace writes it as its JSON escape.
        return line.translate(_LINE_BREAKS).encode("utf-8", "backslashreplace").decode("utf-8")


def _bounded_arguments(arguments: dict[str, Any] | None) -> dict[str, Any]:
    """The `arguments` field: as given when small, else their JSON text cut to MAX_ARGUMENTS_CHARS.

    A few huge calls must not rotate the earlier lines out of the audit trail, and NaN or Infinity
    (which a client may send) must not make the line invalid JSON.
    """
    text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=True)
    if "NaN" in text or "Infinity" in text:  # cheap test first; the exact one only when it may be needed
        arguments = _finite(arguments)
        text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) <= MAX_ARGUMENTS_CHARS:
        return {"arguments": arguments}
    return {"arguments": text[:MAX_ARGUMENTS_CHARS], "arguments_truncated": True}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


class NullRecord(AuditRecord):
    """An AuditRecord that writes nothing: what NullAudit hands out. A subclass, so code typed for
    AuditRecord takes it; it holds no state, so every request shares one."""

    def __init__(self) -> None:
        pass  # nothing to remember: none of AuditRecord's state is used

    def __enter__(self) -> NullRecord:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> Literal[False]:
        return False

    def result(self, result: pydantic.BaseModel) -> None:
        pass

    def at_base(self, name: str) -> None:
        pass

    def deny(self, reason: str) -> None:
        pass


_NULL_RECORD = NullRecord()


class NullAudit(AuditLog):
    """The audit log when MCP_AUDIT_LOG is unset: the same interface, and nothing is written or opened."""

    def __init__(self) -> None:
        # No super().__init__: there is no file or stream to set up.
        self.enabled = False
        self.include_arguments = False  # so callers skip masking arguments that would not be written
        self.clock = time.perf_counter
        self.target = "off"

    def record(self, caller: Caller, method: str, target: str, arguments: dict[str, Any] | None = None) -> NullRecord:
        return _NULL_RECORD

    def write(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass
