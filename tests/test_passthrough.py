"""What 1C sends reaches MCP clients unchanged, over stdio, SSE and Streamable HTTP.

Each test compares what the SDK client receives through the proxy with what the demo 1C base
answers to a direct JSON-RPC call, so any field the proxy drops or alters fails the test.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from mcp import types
from mcp.shared.exceptions import MCPError

from py_server.demo.onec_emulator import OneCEmulator

from .conftest import TRANSPORTS, mcp_session, proxy_settings

SAMPLE_VALUES = {"number": "ТД00-000003", "name": "Номенклатура"}  # exist in the demo base
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("transport", TRANSPORTS)]


def direct_rpc(emulator: OneCEmulator, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The floor: ask the demo 1C base directly, as the proxy would."""
    reply = httpx.post(
        f"{emulator.url}/hs/mcp/rpc",
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
        auth=(emulator.username, emulator.password),
    ).json()
    return reply["result"]


def wire(model: Any) -> dict[str, Any]:
    dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    dumped.pop("resultType", None)
    return dumped


async def test_tools_reach_the_client_with_every_field(emulator: OneCEmulator, transport: str) -> None:
    expected = direct_rpc(emulator, "tools/list")["tools"]
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        listed = await session.list_tools()
    assert [wire(tool) for tool in listed.tools] == expected
    rich = next(tool for tool in listed.tools if tool.output_schema is not None)
    assert rich.title and rich.annotations and rich.icons and rich.meta  # the fixture really has them


async def test_every_content_type_and_result_field_passes_through(emulator: OneCEmulator, transport: str) -> None:
    tools = direct_rpc(emulator, "tools/list")["tools"]
    calls = {tool["name"]: _sample_arguments(tool) for tool in tools}
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        seen_types: set[str] = set()
        for name, arguments in calls.items():
            expected = direct_rpc(emulator, "tools/call", {"name": name, "arguments": arguments})
            result = await session.call_tool(name, arguments)
            assert wire(result) == expected, name
            seen_types.update(item.type for item in result.content)
    assert {"text", "image", "audio", "resource_link", "resource"} <= seen_types


async def test_failing_1c_tool_stays_an_error_result(emulator: OneCEmulator, transport: str) -> None:
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        result = await session.call_tool("post_document", {"number": "00001"})
    assert result.is_error is True
    assert "Ошибка выполнения инструмента 'post_document'" in result.content[0].text


async def test_unknown_tool_is_a_protocol_error_naming_it(emulator: OneCEmulator, transport: str) -> None:
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        with pytest.raises(MCPError) as caught:
            await session.call_tool("no_such_tool", {})
    assert caught.value.error.code == types.INVALID_PARAMS
    assert "no_such_tool" in caught.value.error.message


async def test_resources_keep_their_uris_and_contents(emulator: OneCEmulator, transport: str) -> None:
    expected = direct_rpc(emulator, "resources/list")["resources"]
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        listed = await session.list_resources()
        assert [wire(resource) for resource in listed.resources] == expected
        uris = [resource.uri for resource in listed.resources]
        assert "metadata://Справочники/Номенклатура" in uris
        kinds = set()
        for uri in uris:
            read = await session.read_resource(uri)
            raw = direct_rpc(emulator, "resources/read", {"uri": uri})["contents"]
            assert [wire(item) for item in read.contents] == [_without_type(item) for item in raw]
            assert all(item.uri == uri for item in read.contents)
            kinds.update(type(item).__name__ for item in read.contents)
    assert kinds == {"TextResourceContents", "BlobResourceContents"}


async def test_blob_resource_arrives_as_the_same_bytes(emulator: OneCEmulator, transport: str) -> None:
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        listed = await session.list_resources()
        blob_uri = next(r.uri for r in listed.resources if r.uri.endswith(".png"))
        read = await session.read_resource(blob_uri)
    assert base64.b64decode(read.contents[0].blob).startswith(b"\x89PNG")


async def test_prompts_keep_arguments_and_messages(emulator: OneCEmulator, transport: str) -> None:
    expected = direct_rpc(emulator, "prompts/list")["prompts"]
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        listed = await session.list_prompts()
        assert [wire(prompt) for prompt in listed.prompts] == expected
        for prompt in listed.prompts:
            arguments = {arg.name: "Тест" for arg in prompt.arguments or []}
            got = await session.get_prompt(prompt.name, arguments)
            raw = direct_rpc(emulator, "prompts/get", {"name": prompt.name, "arguments": arguments})
            assert got.description == raw.get("description")
            assert [m.content.text for m in got.messages] == [m["content"]["text"] for m in raw["messages"]]
            # MCP has no "system" role; the proxy sends such a message as "user".
            assert [m.role for m in got.messages] == [_mcp_role(m["role"]) for m in raw["messages"]]


def _without_type(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key != "type"}


def _mcp_role(role: str) -> str:
    return "user" if role == "system" else role


def _sample_arguments(tool: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy the tool's required fields, from enum/default or a plain value."""
    schema = tool.get("inputSchema", {})
    arguments: dict[str, Any] = {}
    for name in schema.get("required", []):
        spec = schema.get("properties", {}).get(name, {})
        if "enum" in spec:
            arguments[name] = spec["enum"][0]
        elif "default" in spec:
            arguments[name] = spec["default"]
        elif spec.get("type") in ("integer", "number"):
            arguments[name] = 1
        else:
            arguments[name] = SAMPLE_VALUES.get(name, "Номенклатура")
    return arguments
