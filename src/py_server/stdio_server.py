"""The stdio front-end (Claude Desktop, Cursor): stdout carries protocol messages only.

await run_stdio(proxy)            # the default view: the only base, or every base together
await run_stdio(proxy, "erp")     # one base of several, as a single-base proxy serves it

Nothing is prepared before serving: what the extras load lazily (the local knowledge base's
index) is warmed up in the background once the client's first tools/list has been answered, so
that the handshake does not share the interpreter with it. A call that comes earlier does that
work itself, or waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
from mcp.server.stdio import stdio_server

from .local_tools import warm_up

if TYPE_CHECKING:
    from mcp.server import Server
    from mcp.shared._stream_protocols import ReadStream, WriteStream
    from mcp.shared.message import SessionMessage

    from .local_tools import Extra
    from .mcp_server import MCPProxy

logger = logging.getLogger(__name__)


async def run_stdio(proxy: MCPProxy, base: str | None = None) -> None:
    """Serve one MCP client on stdin/stdout until it disconnects; /metrics with MCP_METRICS_PORT."""
    server = proxy.server if base is None else proxy.server_for(base)
    settings = proxy.settings
    if settings.metrics_port is not None:
        # prometheus_client's own small server, in a thread; stdout stays the protocol's alone.
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=proxy.metrics.registry)
        logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    async with proxy.running(), stdio_server() as (read_stream, write_stream):
        await serve(proxy, read_stream, write_stream, server)


async def serve(
    proxy: MCPProxy,
    read_stream: ReadStream[SessionMessage | Exception],
    write_stream: WriteStream[SessionMessage],
    server: Server[Any] | None = None,
) -> None:
    """Serve one MCP session on these streams with `server` (default: the proxy's default view),
    inside `proxy.running()`, until the client leaves; the extras are warmed up in the background
    once its first tools/list has been answered."""
    if server is None:
        server = proxy.server
    listed = anyio.Event()
    async with anyio.create_task_group() as background:
        background.start_soon(_warm_up_when_set, listed, proxy.extras)
        await server.run(read_stream, _NotingWriteStream(write_stream, listed), server.create_initialization_options())
        background.cancel_scope.cancel()


async def _warm_up_when_set(event: anyio.Event, extras: Sequence[Extra]) -> None:
    await event.wait()
    await warm_up(extras)


class _NotingWriteStream:
    """The session's write stream, setting `listed` once an answer to tools/list has been sent."""

    def __init__(self, stream: WriteStream[SessionMessage], listed: anyio.Event) -> None:
        self._stream = stream
        self._listed = listed

    async def send(self, item: SessionMessage, /) -> None:
        await self._stream.send(item)
        if not self._listed.is_set():
            result = getattr(item.message, "result", None)  # a JSON-RPC response's result
            if isinstance(result, dict) and "tools" in result:
                self._listed.set()

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> Self:
        await self._stream.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> bool | None:
        return await self._stream.__aexit__(exc_type, exc_val, exc_tb)

    def __getattr__(self, name: str) -> Any:  # anything else the SDK asks of its stream
        return getattr(self._stream, name)
