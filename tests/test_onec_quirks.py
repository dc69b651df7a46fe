"""The proxy against the quirks of real 1C backends (see the contract): discovery variants, a BOM,
HTML error pages, and the reference extension's failing prompts/list."""

from __future__ import annotations

import httpx
import pytest
from mcp import types
from mcp.shared.exceptions import MCPError

from py_server.demo.onec_emulator import OneCEmulator

from .conftest import http_proxy, mcp_session, proxy_settings

pytestmark = pytest.mark.anyio


def _text(result: types.CallToolResult) -> str:
    return "".join(item.text for item in result.content if isinstance(item, types.TextContent))


@pytest.mark.parametrize(("discovery", "source"), [("manifest", "manifest"), ("health", "health"), ("none", "rpc")])
async def test_every_discovery_variant_serves_the_catalog(emulator: OneCEmulator, discovery: str, source: str) -> None:
    emulator.state.discovery = discovery
    settings = proxy_settings(emulator)
    async with mcp_session("streamable_http", settings) as session:
        assert "get_metadata" in [tool.name for tool in (await session.list_tools()).tools]
    with http_proxy(settings) as server:
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{server.url}/health")).json()
    assert health["status"] == "healthy"
    assert health["onec"]["catalog"]["discovery"] == source


async def test_json_with_a_byte_order_mark_is_accepted(emulator: OneCEmulator) -> None:
    emulator.state.bom = True
    async with mcp_session("streamable_http", proxy_settings(emulator)) as session:
        tools = (await session.list_tools()).tools
        result = await session.call_tool("describe_object", {"name": "Номенклатура"})
    assert tools and result.is_error is False


async def test_an_html_error_page_becomes_an_error_result_with_status_and_excerpt(emulator: OneCEmulator) -> None:
    async with mcp_session("streamable_http", proxy_settings(emulator)) as session:
        await session.list_tools()
        emulator.state.fault = "html_502"
        result = await session.call_tool("get_metadata", {})
    assert result.is_error is True
    assert "HTTP 502" in _text(result) and "<" not in _text(result)  # an excerpt, not the raw page


async def test_a_failing_prompts_list_leaves_tools_and_resources_alone(emulator: OneCEmulator) -> None:
    emulator.state.prompts_list_bug = True
    settings = proxy_settings(emulator)
    async with mcp_session("streamable_http", settings) as session:
        assert (await session.list_tools()).tools
        assert (await session.list_resources()).resources
        assert (await session.list_prompts()).prompts == []
    with http_proxy(settings) as server:
        async with httpx.AsyncClient() as client:
            catalog = (await client.get(f"{server.url}/health")).json()["onec"]["catalog"]
    assert catalog["prompts"]["error"] and "-32603" in catalog["prompts"]["error"]
    assert catalog["tools"]["error"] is None


async def test_an_unknown_resource_is_a_protocol_error_with_1c_text(emulator: OneCEmulator) -> None:
    async with mcp_session("sse", proxy_settings(emulator)) as session:
        with pytest.raises(MCPError) as caught:
            await session.read_resource("metadata://Справочники/НетТакого")
    message = caught.value.error.message
    assert "metadata://Справочники/НетТакого" in message
    assert "{ОбщийМодуль" not in message  # 1C's module/line prefix stays in the log
