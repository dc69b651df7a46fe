"""Tell every connected client that a list changed, in both protocol eras the SDK serves.

* Handshake-era connections (2024-11-05 … 2025-11-25: stdio, SSE, stateful Streamable HTTP) get
  `notifications/*/list_changed` on the session captured at `notifications/initialized`. The
  session is forgotten when its connection ends. Each delivery pings first (the SDK drops sends
  on a broken connection silently) and runs on its own with a time bound, so one slow or broken
  client costs the others nothing.
* 2026-07-28 connections listen with `subscriptions/listen`; they get the event from a bus.

    notifier = ListChangeNotifier()
    async with notifier.running():
        await notifier.notify({"tools"})
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Hashable, Iterable
from typing import Any

from mcp import types
from mcp.server import ServerRequestContext
from mcp.server.connection import Connection
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    ToolsListChanged,
)

logger = logging.getLogger(__name__)

# How long one client may take to answer the ping and take the notifications.
SEND_TIMEOUT = 5.0
# A round starts this many deliveries, then lets other tasks run: creating the tasks for thousands
# of sessions must not stall the event loop.
_SPAWN_BATCH = 64

_EVENTS: dict[str, ServerEvent] = {
    "tools": ToolsListChanged(),
    "resources": ResourcesListChanged(),
    "prompts": PromptsListChanged(),
}


class _CountedListenHandler(ListenHandler):
    """The SDK's ListenHandler, counting the listen streams it serves (it exposes no count)."""

    def __init__(self, bus: InMemorySubscriptionBus) -> None:
        super().__init__(bus)
        self.open_streams = 0

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        self.open_streams += 1
        try:
            return await super().__call__(ctx, params)
        finally:
            self.open_streams -= 1


class ListChangeNotifier:
    def __init__(self, *, send_timeout: float = SEND_TIMEOUT) -> None:
        self.bus = InMemorySubscriptionBus()
        self.listen_handler = _CountedListenHandler(self.bus)
        self._send_timeout = send_timeout
        # One entry per open handshake-era connection: its Connection (or the session itself, see
        # `_connection_of`) → the session captured at notifications/initialized.
        self._sessions: dict[object, ServerSession] = {}
        # Which catalogs a session hears about, e.g. {("erp", "service")}: (base, 1C connection key)
        # pairs of what it is served; None hears every change.
        self._audiences: dict[object, Collection[Hashable] | None] = {}
        self._rounds: set[asyncio.Task[None]] | None = None  # rounds in flight; None outside running()

    @property
    def session_count(self) -> int:
        """Handshake-era connections registered at notifications/initialized and not ended yet."""
        return len(self._sessions)

    @property
    def listen_count(self) -> int:
        """Open 2026-07-28 `subscriptions/listen` streams."""
        return self.listen_handler.open_streams

    def add_session(self, session: ServerSession, audience: Collection[Hashable] | None = None) -> None:
        """Remember a handshake-era session until its connection ends. Twice for one connection is once.

        `ctx.session` is a new wrapper for every inbound message, around one long-lived
        `Connection`. Each SDK driver (stdio, SSE, Streamable HTTP, in-memory) unwinds
        `connection.exit_stack` in a shielded `finally` when the connection ends, however it ends
        (EOF, DELETE, idle timeout, cancellation at shutdown): the SDK's documented place for
        per-connection cleanup. So the session is forgotten at once and deterministically, rather
        than whenever the garbage collector gets to a weak reference (a count used as a session cap
        cannot wait for that, and connections sit in reference cycles). The ping before each
        delivery stays as a backstop.
        """
        connection = _connection_of(session)
        key: object = connection if connection is not None else session
        if key in self._sessions:
            return
        self._sessions[key] = session
        self._audiences[key] = audience
        if connection is not None:
            connection.exit_stack.callback(self._forget, key)

    def _forget(self, key: object) -> None:
        self._sessions.pop(key, None)
        self._audiences.pop(key, None)

    async def notify(self, kinds: Iterable[str], audience: Hashable | None = None) -> asyncio.Event:
        """Announce changed lists to every client; returns at once, without waiting for slow clients.

        With `audience` (whose catalog changed), handshake-era sessions hear it only if their
        audience holds it. 2026 listen streams share one bus and hear every change: a needless
        re-list for some, never a change missed.

        The returned event is set when every delivery of this round has ended. Outside
        `running()` the round runs inline and the event is already set.
        """
        kinds = sorted(set(kinds) & _EVENTS.keys())
        for kind in kinds:
            await self.bus.publish(_EVENTS[kind])
        done = asyncio.Event()
        sessions = [
            (key, session)
            for key, session in self._sessions.items()
            if audience is None or (heard := self._audiences.get(key)) is None or audience in heard
        ]
        deliveries = self._deliver_round(sessions, kinds)
        if self._rounds is None:
            await deliveries
            done.set()
        else:
            task = asyncio.create_task(deliveries, name="mcp-list-changed")
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
            task.add_done_callback(lambda _task: done.set())  # also when cancelled before it started
        return done

    async def _deliver_round(self, sessions: list[tuple[object, ServerSession]], kinds: list[str]) -> None:
        # Plain asyncio tasks, as in catalog.py: anyio's task groups cost several times more per
        # task, which adds up to seconds in a round over tens of thousands of sessions.
        async with asyncio.TaskGroup() as group:
            for number, (key, session) in enumerate(sessions, 1):
                group.create_task(self._deliver(key, session, kinds))
                if number % _SPAWN_BATCH == 0:
                    await asyncio.sleep(0)  # let other clients' tasks run between batches
        logger.debug("list_changed %s sent to %d session(s)", kinds, len(sessions))

    async def _deliver(self, key: object, session: ServerSession, kinds: list[str]) -> None:
        try:
            async with asyncio.timeout(self._send_timeout):
                await session.send_ping()
                for kind in kinds:
                    await _send(session, kind)
        except Exception as exc:  # whatever one client does, it must not reach the others
            # A session keyed on its connection is forgotten when that connection ends (the exit-stack
            # callback); a slow ping or a missing GET stream now does not mean the client is gone.
            if key is session and self._sessions.get(key) is session:
                logger.debug("dropping an MCP session that did not take list_changed: %r", exc)
                self._forget(key)
            else:
                logger.debug("an MCP client did not take list_changed this time: %r", exc)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ListChangeNotifier]:
        """Deliver in the background for the duration of the block, so `notify()` need not wait."""
        self._rounds = set()
        try:
            yield self
        finally:
            rounds, self._rounds = self._rounds, None
            for task in rounds:
                task.cancel()  # deliveries still in flight must not hold up shutdown
            await asyncio.gather(*rounds, return_exceptions=True)

    def close(self) -> None:
        """End every open `subscriptions/listen` stream and every delivery in flight (shutdown)."""
        self.listen_handler.close()
        for task in self._rounds or ():
            task.cancel()
        self._sessions.clear()
        self._audiences.clear()


def _connection_of(session: ServerSession) -> Connection | None:
    # mcp 2.3 reaches the per-connection object only through this private attribute
    # (`ServerRequestContext` has no `connection`). Should a later SDK rename it, sessions are
    # keyed on the wrapper and pruned by the failing ping instead; tests/test_notifier.py notices.
    connection = getattr(session, "_connection", None)
    return connection if isinstance(connection, Connection) else None


async def _send(session: ServerSession, kind: str) -> None:
    if kind == "tools":
        await session.send_tool_list_changed()
    elif kind == "resources":
        await session.send_resource_list_changed()
    else:
        await session.send_prompt_list_changed()
