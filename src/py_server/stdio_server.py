"""The stdio front-end (Claude Desktop, Cursor): stdout carries protocol messages only.

await run_stdio(proxy)            # the default view: the only base, or every base together
await run_stdio(proxy, "erp")     # one base of several, as a single-base proxy serves it
"""

from __future__ import annotations

import logging

from mcp.server.stdio import stdio_server
from prometheus_client import start_http_server

from .mcp_server import MCPProxy

logger = logging.getLogger(__name__)


async def run_stdio(proxy: MCPProxy, base: str | None = None) -> None:
    """Serve one MCP client on stdin/stdout until it disconnects; /metrics with MCP_METRICS_PORT."""
    server = proxy.server if base is None else proxy.server_for(base)
    settings = proxy.settings
    if settings.metrics_port is not None:
        # prometheus_client's own small server, in a thread; stdout stays the protocol's alone.
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=proxy.metrics.registry)
        logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    async with proxy.running(), stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
