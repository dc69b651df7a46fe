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

__all__ = ["head_timeout_protocol"]

logger = logging.getLogger(__name__)


class HeadTimeoutProtocol(H11Protocol):
    head_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        scope = self.scope
        super().handle_events()
        if self.scope is not scope:  # a request head arrived: the request may now take its time
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        # A kept-alive connection owes the next head in time too. Armed first: the parent may read
        # a pipelined head right away, and `handle_events` then cancels the timer again.
        self._arm_head_timer()
        super().on_response_complete()

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


def head_timeout_protocol(timeout: float) -> type[H11Protocol]:
    """The h11 protocol class for uvicorn's `http=` option, with this head timeout."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout": timeout})
