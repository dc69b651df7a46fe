"""One cap on everything a client can hold open: Streamable HTTP sessions, SSE streams and 2026
`subscriptions/listen` streams, counted together (`MCP_MAX_SESSIONS`).

Each transport registers how to count what it holds; whoever is about to open one more asks
`has_room()` first and refuses with `refusal()` when there is none.

    gate = SessionGate(max_sessions=1000)
    gate.add_counter("sse", lambda: len(streams))
    if not gate.has_room():
        ...  # HTTP 503 with gate.refusal()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Counter = Callable[[], int]


class SessionGate:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._counters: dict[str, Counter] = {}
        self._pending = 0  # admitted here, not yet counted by their transport

    def add_counter(self, transport: str, count: Counter) -> None:
        self._counters[transport] = count

    def counts(self) -> dict[str, int]:
        """Open sessions by transport (for `/health` and metrics)."""
        return {transport: count() for transport, count in self._counters.items()}

    @property
    def total(self) -> int:
        return self._pending + sum(count() for count in self._counters.values())

    @contextlib.contextmanager
    def reserve(self) -> Iterator[bool]:
        """Hold a place while a session is being opened; yields False (and holds none) when full.

        The check and the reservation happen without an await between them, so concurrent opening
        requests cannot all see room for one.
        """
        if not self.has_room():
            yield False
            return
        self._pending += 1
        try:
            yield True
        finally:
            self._pending -= 1

    def has_room(self) -> bool:
        return self.total < self.max_sessions

    def refusal(self) -> str:
        return (
            f"The proxy already has {self.total} open sessions (MCP_MAX_SESSIONS={self.max_sessions}); "
            "close unused clients or try again later"
        )
