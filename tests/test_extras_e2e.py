"""The local extras through the proxy, with the SDK client (it checks structuredContent against
each tool's outputSchema): repair-history tools on the demo repairs API, compliance_rag on the
shipped local knowledge base, a clash with a 1C tool, and tools whose upstream is not configured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mcp import types

from py_server.config import Settings
from py_server.demo.loopback import LoopbackServer
from py_server.demo.onec_emulator import OneCEmulator
from py_server.demo.repairs_api import create_repairs_api

from .conftest import TRANSPORTS, http_proxy, mcp_session, proxy_settings

REPAIR_TOOLS = ("warranty_days", "warranty_history", "maintenance_history", "vehicle_repairs_history")
META_KEYS = {"execution_time_ms", "data_source", "record_count", "timestamp"}
DEMO_VIN = "XWEG3417BN0009095"


@pytest.fixture
def repairs_api() -> Iterator[LoopbackServer]:
    with LoopbackServer(create_repairs_api(api_key="test-key")) as server:
        yield server


def extras_settings(emulator: OneCEmulator, repairs_api: LoopbackServer) -> Settings:
    return proxy_settings(emulator, repairs_api_url=repairs_api.url, repairs_api_key="test-key", rag_backend="local")


def _text(result: types.CallToolResult) -> str:
    return "".join(item.text for item in result.content if isinstance(item, types.TextContent))


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_extra_answers_on_the_demo_data(
    emulator: OneCEmulator, repairs_api: LoopbackServer, transport: str
) -> None:
    async with mcp_session(transport, extras_settings(emulator, repairs_api)) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {*REPAIR_TOOLS, "compliance_rag", "get_metadata"} <= tools.keys()
        for name in REPAIR_TOOLS:
            assert tools[name].output_schema is not None
            assert tools[name].annotations is not None and tools[name].annotations.read_only_hint is True
            result = await session.call_tool(name, {"vin": DEMO_VIN.lower()})  # normalised by the tool
            assert result.is_error is False, _text(result)
            assert result.structured_content["vin"] == DEMO_VIN
            assert set(result.meta or {}) >= META_KEYS
            assert "test-key" not in result.model_dump_json()
        days = await session.call_tool("warranty_days", {"vin": DEMO_VIN})
        assert days.structured_content["total_days_in_repair"] > 30
        rag = await session.call_tool("compliance_rag", {"query": "повторный ремонт"})
    assert rag.is_error is False
    assert rag.structured_content["documents"]
    assert "повторн" in rag.structured_content["documents"][0]["content"].lower()


@pytest.mark.anyio
async def test_invalid_vin_is_an_error_result_naming_the_characters(
    emulator: OneCEmulator, repairs_api: LoopbackServer
) -> None:
    async with mcp_session("streamable_http", extras_settings(emulator, repairs_api)) as session:
        result = await session.call_tool("warranty_history", {"vin": "XWEG3417BN00090IO"})
    assert result.is_error is True
    assert "I" in _text(result) and "O" in _text(result)
    assert (result.meta or {}).get("error_type") == "invalid_vin"


@pytest.mark.anyio
async def test_unknown_vin_is_an_empty_successful_result(emulator: OneCEmulator, repairs_api: LoopbackServer) -> None:
    async with mcp_session("sse", extras_settings(emulator, repairs_api)) as session:
        result = await session.call_tool("vehicle_repairs_history", {"vin": "XTA210930Y2796514"})
    assert result.is_error is False
    assert result.structured_content["records"] == []
    assert "не найден" in _text(result)


@pytest.mark.anyio
async def test_extras_without_an_upstream_are_not_listed(emulator: OneCEmulator) -> None:
    async with mcp_session("streamable_http", proxy_settings(emulator)) as session:  # no repairs URL, RAG off
        names = {tool.name for tool in (await session.list_tools()).tools}
    assert names.isdisjoint({*REPAIR_TOOLS, "compliance_rag"})


def test_health_reports_each_extra(emulator: OneCEmulator, repairs_api: LoopbackServer) -> None:
    with http_proxy(extras_settings(emulator, repairs_api)) as server:
        extras = httpx.get(f"{server.url}/health").json()["extras"]
    assert extras["repairs"]["state"] == "reachable"
    assert extras["compliance_rag"]["state"] == "reachable"
    with http_proxy(proxy_settings(emulator)) as server:
        extras = httpx.get(f"{server.url}/health").json()["extras"]
    assert extras["repairs"]["state"] == "not configured"
    assert "MCP_REPAIRS_API_URL" in extras["repairs"]["detail"]


@pytest.mark.anyio
async def test_a_1c_tool_with_a_local_name_is_reported_and_the_local_one_wins(
    emulator: OneCEmulator, repairs_api: LoopbackServer
) -> None:
    impostor = {"name": "warranty_days", "description": "1C", "inputSchema": {"type": "object"}}
    emulator.state.add_tool(impostor, lambda arguments: {"content": [{"type": "text", "text": "from 1C"}]})
    settings = extras_settings(emulator, repairs_api)
    async with mcp_session("streamable_http", settings) as session:
        listed = [tool for tool in (await session.list_tools()).tools if tool.name == "warranty_days"]
        result = await session.call_tool("warranty_days", {"vin": DEMO_VIN})
    assert len(listed) == 1 and listed[0].description != "1C"
    assert _text(result) != "from 1C" and result.structured_content["vin"] == DEMO_VIN
    with http_proxy(settings) as server:
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{server.url}/health")).json()
    assert health["shadowed_tools"] == ["warranty_days"]
