"""Connections that hold the door without asking anything are closed.

uvicorn waits forever for a request head: a client that opens a connection and sends a byte a
second (or nothing) keeps it, and a few hundred such clients exhaust file descriptors and lock
everyone else out. This protocol gives every connection `timeout` seconds to deliver each whole
request head (from connect, and again after each response on a kept-alive connection); once the
head is in, the request itself may take as long as it needs (SSE streams live for hours).

    uvicorn.run(app, http=head_timeout_protocol(10.0))
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["head_timeout_protocol", "httptools_available"]

logger = logging.getLogger(__name__)


def httptools_available() -> bool:
    """Whether uvicorn can parse HTTP with httptools (the `fast` extra), which costs less per request than h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


class _HeadTimer:
    """The timer, for either of uvicorn's HTTP protocols (mixed in before it)."""

    head_timeout: float = 10.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        # A kept-alive connection owes the next head in time too. Armed first: the parent may read
        # a pipelined head right away, and the head's arrival then cancels the timer again.
        self._arm_head_timer()
        super().on_response_complete()  # type: ignore[misc]

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            logger.warning("closed a connection that sent no complete request head within %g s", self.head_timeout)
            self.transport.close()


class HeadTimeoutProtocol(_HeadTimer, H11Protocol):
    def handle_events(self) -> None:
        scope = self.scope
        super().handle_events()
        if self.scope is not scope:  # a request head arrived: the request may now take its time
            self._cancel_head_timer()


def _httptools_protocol() -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadTimeoutHttpToolsProtocol(_HeadTimer, HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._cancel_head_timer()  # a request head arrived: the request may now take its time

    return HeadTimeoutHttpToolsProtocol


def head_timeout_protocol(timeout: float, parser: str = "auto") -> type[Any]:
    """The protocol class for uvicorn's `http=` option, with this head timeout.

    `parser` is "h11", "httptools", or "auto": httptools where it is installed, else h11.
    """
    use_httptools = parser == "httptools" or (parser == "auto" and httptools_available())
    base = _httptools_protocol() if use_httptools else HeadTimeoutProtocol
    return type(base.__name__, (base,), {"head_timeout": timeout})
