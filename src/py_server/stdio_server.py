"""The stdio front-end (Claude Desktop, Cursor): stdout carries protocol messages only.

await run_stdio(proxy)            # the default view: the only base, or every base together
await run_stdio(proxy, "erp")     # one base of several, as a single-base proxy serves it
"""

from __future__ import annotations

from mcp.server.stdio import stdio_server

from .mcp_server import MCPProxy


async def run_stdio(proxy: MCPProxy, base: str | None = None) -> None:
    """Serve one MCP client on stdin/stdout until it disconnects."""
    server = proxy.server if base is None else proxy.server_for(base)
    async with proxy.running(), stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
