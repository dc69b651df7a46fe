"""The registry of locally registered tools, served next to 1C's catalog.

A local tool is a `types.Tool` definition plus an async handler that returns a `CallToolResult`.
Tools come in *extras*: groups that share one upstream (the repairs API, a knowledge base) and
report that upstream's state to `/health` and `check`.

    registry = ToolRegistry()
    registry.add(LocalTool(definition=types.Tool(name="echo", input_schema={"type": "object"}), handler=echo))
    result = await registry.call("echo", {"text": "hi"})

A handler should return `isError` results itself; anything it raises still becomes an `isError`
result here, so nothing escapes a local tool.

An extra loads its heavy parts when first used, never at start-up; one that has work worth doing
before its first call (the local knowledge base's index) has `warm_up()`, which the front-ends run
in the background once they serve (`warm_up(proxy.extras)`). A call that comes first does the same
work itself, or waits for it; it never fails because the warm-up has not finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from mcp import types

logger = logging.getLogger(__name__)

ToolHandler = Callable[[dict[str, Any]], Awaitable[types.CallToolResult]]
ExtraState = Literal["not configured", "configured", "reachable", "failing"]


@dataclass(frozen=True)
class LocalTool:
    definition: types.Tool
    handler: ToolHandler

    @property
    def name(self) -> str:
        return self.definition.name


@dataclass(frozen=True)
class ExtraStatus:
    """What `/health` and `check` say about one extra."""

    name: str
    state: ExtraState
    detail: str = ""
    tools: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "tools": self.tools}


class Extra(Protocol):
    """A group of local tools that share one upstream."""

    name: str

    @property
    def tools(self) -> Sequence[LocalTool]:
        """The tools to serve; empty when the upstream is not configured."""
        ...

    async def status(self) -> ExtraStatus:
        """Probe the upstream lightly; never raises."""
        ...

    async def aclose(self) -> None: ...

    # Optional: `async def warm_up(self) -> None`, the work its first call would otherwise do,
    # done ahead in the background; idempotent, never raises (see `warm_up` below).


async def warm_up(extras: Iterable[Extra]) -> None:
    """Warm up the extras that can, one after another. Meant to run in the background once a
    front-end serves; a failure is logged here, and reported again by the tool when called."""
    for extra in extras:
        warm: Callable[[], Awaitable[None]] | None = getattr(extra, "warm_up", None)
        if warm is None:
            continue
        try:
            await warm()
        except Exception:  # the extra's own calls report the problem; serving goes on
            logger.warning("warming up the %s extra failed", extra.name, exc_info=True)


def execution_meta(started: float) -> dict[str, Any]:
    """The `_meta` keys every local tool result carries: elapsed time since `started`
    (a `time.perf_counter()` value) and a UTC timestamp like "2025-12-07T12:00:00Z"."""
    return {
        "execution_time_ms": round((time.perf_counter() - started) * 1000),
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def error_result(text: str, *, meta: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True, _meta=meta or None)


class ToolRegistry:
    """A plain name -> LocalTool map. Names are unique."""

    def __init__(self, tools: Sequence[LocalTool] = ()) -> None:
        self._tools: dict[str, LocalTool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: LocalTool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"A local tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def get(self, name: str) -> LocalTool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def definitions(self) -> list[types.Tool]:
        return [tool.definition for tool in self._tools.values()]

    async def call(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Run a local tool. Raises KeyError for an unknown name; never raises from the handler."""
        tool = self._tools[name]
        try:
            return await tool.handler(arguments)
        except Exception as exc:  # a bug in a tool must not become a protocol error
            logger.exception("local tool %s failed", name)
            return error_result(
                f"Внутренняя ошибка инструмента '{name}': {type(exc).__name__}: {exc}",
                meta={"error_type": "unexpected_error"},
            )
