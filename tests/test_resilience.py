"""The proxy under real-world 1C behaviour: down at start, slow, changing catalog, parallel calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from py_server.demo.loopback import LoopbackServer
from py_server.demo.onec_emulator import EmulatorState, OneCEmulator
from py_server.http_server import create_app
from py_server.wiring import build_proxy

from .conftest import TEST_PASSWORD, TRANSPORTS, http_proxy, mcp_session, proxy_settings

pytestmark = pytest.mark.anyio

NEW_TOOL = {
    "name": "new_report",
    "description": "Отчёт, добавленный в 1С во время работы",
    "inputSchema": {"type": "object", "properties": {}},
}


def _text(result: types.CallToolResult) -> str:
    return "".join(item.text for item in result.content if isinstance(item, types.TextContent))


class Notifications:
    """Collects list_changed notifications from a ClientSession."""

    def __init__(self) -> None:
        self.tools_changed = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.tools_changed.set()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_1c_down_at_start_then_up_recovers_in_the_same_session(transport: str) -> None:
    emulator = OneCEmulator(EmulatorState(password=TEST_PASSWORD)).start()
    emulator.stop()  # keep its port, take 1C down
    notifications = Notifications()
    settings = proxy_settings(emulator, catalog_ttl=1)
    try:
        async with mcp_session(transport, settings, message_handler=notifications) as session:
            assert (await session.list_tools()).tools == []
            down = await session.call_tool("get_metadata", {})
            assert down.is_error is True
            assert "1C is unavailable" in _text(down) and "Cannot connect" in _text(down)

            emulator.start()
            with anyio.fail_after(15):
                await notifications.tools_changed.wait()
            names = [tool.name for tool in (await session.list_tools()).tools]
            assert "get_metadata" in names
            up = await session.call_tool("get_metadata", {})
            assert up.is_error is False
    finally:
        emulator.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tool_added_in_1c_reaches_a_connected_client(emulator: OneCEmulator, transport: str) -> None:
    notifications = Notifications()
    async with mcp_session(
        transport, proxy_settings(emulator, catalog_ttl=1), message_handler=notifications
    ) as session:
        assert "new_report" not in [tool.name for tool in (await session.list_tools()).tools]
        emulator.state.add_tool(NEW_TOOL, lambda arguments: {"content": [{"type": "text", "text": "готово"}]})
        with anyio.fail_after(15):
            await notifications.tools_changed.wait()
        assert "new_report" in [tool.name for tool in (await session.list_tools()).tools]
        assert _text(await session.call_tool("new_report", {})) == "готово"


async def test_tool_added_in_1c_reaches_a_2026_client_through_subscriptions(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, catalog_ttl=1)) as server:
        async with Client(f"{server.url}/mcp") as client:
            assert client.protocol_version == "2026-07-28"
            await client.list_tools()
            async with client.listen(tools_list_changed=True) as events:
                emulator.state.add_tool(NEW_TOOL, lambda arguments: {"content": [{"type": "text", "text": "ok"}]})
                with anyio.fail_after(15):
                    async for _event in events:
                        break
            assert "new_report" in [tool.name for tool in (await client.list_tools()).tools]


async def test_slow_1c_call_times_out_with_the_setting_named(emulator: OneCEmulator) -> None:
    async with mcp_session("streamable_http", proxy_settings(emulator, onec_timeout=0.3)) as session:
        await session.list_tools()
        emulator.state.latency = 3.0
        try:
            result = await session.call_tool("get_metadata", {})
        finally:
            emulator.state.latency = 0.0
    assert result.is_error is True
    assert "MCP_ONEC_TIMEOUT" in _text(result) and "0.3" in _text(result)


async def test_tools_list_is_served_from_the_cache(emulator: OneCEmulator) -> None:
    async with mcp_session("streamable_http", proxy_settings(emulator)) as session:
        first = await session.list_tools()
        emulator.state.reset_counters()
        for _ in range(5):
            assert (await session.list_tools()).tools == first.tools
    assert emulator.state.calls["tools/list"] == 0


async def test_twenty_concurrent_calls_each_get_their_own_answer(emulator: OneCEmulator) -> None:
    echo = {"name": "echo", "inputSchema": {"type": "object", "properties": {"n": {"type": "string"}}}}
    emulator.state.add_tool(echo, lambda arguments: {"content": [{"type": "text", "text": arguments["n"]}]})
    emulator.state.latency = 0.05  # long enough for the calls to overlap
    answers: dict[str, str] = {}
    async with mcp_session("streamable_http", proxy_settings(emulator, onec_max_concurrency=4)) as session:

        async def call(n: str) -> None:
            answers[n] = _text(await session.call_tool("echo", {"n": n}))

        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(call, f"запрос-{i}")
    assert answers == {f"запрос-{i}": f"запрос-{i}" for i in range(20)}
    assert 1 < emulator.state.max_in_flight <= 4


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for a condition another thread makes true (bounded by the caller's fail_after)."""
    while not condition():  # noqa: ASYNC110 - it changes in the server's thread, no event to await
        await anyio.sleep(0.01)


async def test_a_cancelled_client_request_keeps_its_1c_slot_until_1c_answers(emulator: OneCEmulator) -> None:
    # 1C goes on running a request whose HTTP connection is dropped, so the slot stays taken until
    # 1C answers: 1C never runs more than MCP_ONEC_MAX_CONCURRENCY calls, cancelled ones included.
    proxy = build_proxy(proxy_settings(emulator, onec_max_concurrency=1))
    with LoopbackServer(create_app(proxy)) as server:
        async with streamable_http_client(f"{server.url}/mcp") as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            emulator.state.latency = 1.0
            try:
                with anyio.fail_after(10):
                    async with anyio.create_task_group() as group:
                        group.start_soon(session.call_tool, "get_metadata", {})
                        await _until(lambda: proxy.client.in_flight == 1)
                        group.cancel_scope.cancel()  # the client gives up: notifications/cancelled
                    held_after_cancel = proxy.client.in_flight
                    assert (await session.list_tools()).tools  # the session is still fine
                    await _until(lambda: proxy.client.in_flight == 0)
            finally:
                emulator.state.latency = 0.0
    assert held_after_cancel == 1
    assert emulator.state.max_in_flight == 1


@pytest.mark.anyio
async def test_the_first_catalog_is_logged_as_loaded_and_a_later_one_as_a_change(
    emulator: OneCEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="py_server")
    proxy = build_proxy(proxy_settings(emulator))
    async with proxy.running():
        emulator.state.tools.pop("get_metadata")
        await proxy.catalog.refresh()
    catalog_lines = [message for message in caplog.messages if message.startswith("1C catalog")]
    assert catalog_lines == [
        "1C catalog loaded (prompts, resources, tools)",
        "1C catalog changed (tools); notifying clients",
    ]
