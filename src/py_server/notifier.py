"""Tell every connected client that a list changed, in both protocol eras the SDK serves.

* Handshake-era connections (2024-11-05 … 2025-11-25: stdio, SSE, stateful Streamable HTTP) get
  `notifications/*/list_changed` on the session captured at `notifications/initialized`.
  The SDK drops sends on closed connections silently, so each session is pinged first and
  forgotten when the ping fails.
* 2026-07-28 connections listen with `subscriptions/listen`; they get the event from a bus.

    notifier = ListChangeNotifier()
    await notifier.notify({"tools"})
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError

logger = logging.getLogger(__name__)

PING_TIMEOUT = 5.0

_EVENTS: dict[str, ServerEvent] = {
    "tools": ToolsListChanged(),
    "resources": ResourcesListChanged(),
    "prompts": PromptsListChanged(),
}


class ListChangeNotifier:
    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.listen_handler = ListenHandler(self.bus)
        self._sessions: list[ServerSession] = []

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def add_session(self, session: ServerSession) -> None:
        self._sessions.append(session)

    async def notify(self, kinds: Iterable[str]) -> None:
        kinds = sorted(set(kinds) & _EVENTS.keys())
        for kind in kinds:
            await self.bus.publish(_EVENTS[kind])
        alive: list[ServerSession] = []

        async def notify_session(session: ServerSession) -> None:
            try:
                with anyio.fail_after(PING_TIMEOUT):
                    await session.send_ping()
                for kind in kinds:
                    await _send(session, kind)
            except (MCPError, TimeoutError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the client is gone
            alive.append(session)

        async with anyio.create_task_group() as group:
            for session in list(self._sessions):
                group.start_soon(notify_session, session)
        gone = [session for session in self._sessions if session not in alive]
        self._sessions = [session for session in self._sessions if session not in gone]
        logger.debug("list_changed %s sent to %d session(s), %d gone", kinds, len(alive), len(gone))

    def close(self) -> None:
        """End every open `subscriptions/listen` stream (shutdown)."""
        self.listen_handler.close()
        self._sessions.clear()


async def _send(session: ServerSession, kind: str) -> None:
    if kind == "tools":
        await session.send_tool_list_changed()
    elif kind == "resources":
        await session.send_resource_list_changed()
    else:
        await session.send_prompt_list_changed()
