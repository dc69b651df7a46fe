"""The stdio front-end (Claude Desktop, Cursor): stdout carries protocol messages only.

await run_stdio(proxy)
"""

from __future__ import annotations

from mcp.server.stdio import stdio_server

from .mcp_server import MCPProxy


async def run_stdio(proxy: MCPProxy) -> None:
    """Serve one MCP client on stdin/stdout until it disconnects."""
    async with proxy.running(), stdio_server() as (read_stream, write_stream):
        await proxy.server.run(read_stream, write_stream, proxy.initialization_options())
