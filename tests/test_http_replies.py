"""How each Streamable HTTP POST is answered (one JSON body or a stream), and progress notifications
while a tool call waits for 1C, over stdio and Streamable HTTP in both protocol eras."""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters

from py_server.demo.onec_emulator import OneCEmulator
from py_server.http_replies import asks_for_progress, read_body
from py_server.progress import progress_token_of

from .conftest import http_proxy, mcp_session, proxy_settings, settings_env

pytestmark = pytest.mark.anyio

ACCEPT_BOTH = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def _call(request_id: int, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "get_metadata", "arguments": {}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


# --- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (json.dumps(_call(1)).encode(), False),
        (json.dumps(_call(1, {"progressToken": "p"})).encode(), True),
        (json.dumps(_call(1, {"progressToken": 7})).encode(), True),
        (json.dumps(_call(1, {"progressToken": None})).encode(), False),
        # The key named in an argument, not in _meta, asks for nothing.
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"progressToken":1}}}', False),
        (b'{"progressToken": broken', False),
        (b"[1, 2]", False),
    ],
)
def test_asks_for_progress(body: bytes, expected: bool) -> None:
    assert asks_for_progress(body) is expected


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (None, None),
        ({}, None),
        ({"progress_token": "a"}, "a"),
        ({"progressToken": 3}, 3),
        ({"progressToken": True}, None),
    ],
)
def test_progress_token_of(meta: dict[str, Any] | None, expected: object) -> None:
    class Ctx:
        pass

    ctx = Ctx()
    ctx.meta = meta  # type: ignore[attr-defined]
    assert progress_token_of(ctx) == expected


async def test_read_body_replays_the_body_then_the_rest() -> None:
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": True},
        {"type": "http.request", "body": b"ef", "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    body, replay = await read_body(receive, limit=3)  # stops once over the limit
    assert body == b"abcd"
    assert await replay() == {"type": "http.request", "body": b"abcd", "more_body": True}
    assert await replay() == {"type": "http.request", "body": b"ef", "more_body": False}


# --- Streamable HTTP: one JSON body unless the request asks for progress -----------------------


def _open(client: httpx.Client, url: str) -> dict[str, str]:
    opened = client.post(f"{url}/mcp", json=INITIALIZE, headers=ACCEPT_BOTH)
    assert opened.headers["content-type"] == "application/json"
    session = {**ACCEPT_BOTH, "Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
    client.post(f"{url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    return session


def test_a_call_without_a_progress_token_is_one_json_body_on_a_kept_connection(emulator: OneCEmulator) -> None:
    connections: list[object] = []
    with http_proxy(proxy_settings(emulator)) as server, httpx.Client() as client:
        session = _open(client, server.url)
        for request_id in (2, 3):
            reply = client.post(f"{server.url}/mcp", json=_call(request_id), headers=session, extensions={})
            connections.append(reply.extensions["network_stream"])
            assert reply.headers["content-type"] == "application/json"
            assert reply.json()["id"] == request_id
            assert "Справочник" in reply.json()["result"]["content"][0]["text"]
    assert connections[0] is connections[1]  # kept alive: no new TCP connection per call


def test_a_call_with_a_progress_token_is_a_stream(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server, httpx.Client() as client:
        session = _open(client, server.url)
        reply = client.post(f"{server.url}/mcp", json=_call(2, {"progressToken": "p"}), headers=session)
    assert reply.headers["content-type"] == "text/event-stream"
    data = next(line for line in reply.text.splitlines() if line.startswith("data: "))
    assert json.loads(data.removeprefix("data: "))["id"] == 2


def test_a_late_json_answer_becomes_a_stream_with_keep_alive_comments(emulator: OneCEmulator) -> None:
    emulator.state.latency = 1.5  # 1C slower than the ping interval below
    with http_proxy(proxy_settings(emulator, sse_ping_interval=0.2)) as server, httpx.Client(timeout=30) as client:
        session = _open(client, server.url)
        reply = client.post(f"{server.url}/mcp", json=_call(2), headers=session)
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["mcp-session-id"] == session["Mcp-Session-Id"]
    events = reply.text.split("\r\n\r\n")
    assert events[0] == ": ping"
    answer = next(event for event in events if event.startswith("event: message"))
    assert json.loads(answer.split("data: ", 1)[1])["id"] == 2


def test_a_client_that_accepts_only_json_waits_for_the_late_answer_as_json(emulator: OneCEmulator) -> None:
    emulator.state.latency = 1.0
    with http_proxy(proxy_settings(emulator, sse_ping_interval=0.2)) as server, httpx.Client(timeout=30) as client:
        session = {**_open(client, server.url), "Accept": "application/json"}
        reply = client.post(f"{server.url}/mcp", json=_call(2), headers=session)
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["id"] == 2


# --- progress notifications while 1C works ---------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_a_slow_tool_call_sends_progress_to_a_client_that_asked(emulator: OneCEmulator, transport: str) -> None:
    emulator.state.latency = 2.6  # two ticks of a 1 s interval, with room to spare
    settings = proxy_settings(emulator, progress_interval=1)
    heard: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append((progress, total, message))

    async with mcp_session(transport, settings) as session:
        result = await session.call_tool("get_metadata", {}, progress_callback=on_progress)
    assert not result.is_error
    assert len(heard) >= 2
    assert [total for _, total, _ in heard] == [None] * len(heard)
    assert heard[0][2] == "waiting for 1C, 1 s" and heard[1][2] == "waiting for 1C, 2 s"
    assert heard[0][0] < heard[1][0]


async def test_a_fast_tool_call_or_one_without_a_token_sends_no_progress(emulator: OneCEmulator) -> None:
    emulator.state.latency = 1.4
    heard: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append(progress)

    async with mcp_session("streamable_http", proxy_settings(emulator, progress_interval=1)) as session:
        await session.call_tool("get_metadata", {})  # no callback: no token, no notifications
        emulator.state.latency = 0
        await session.call_tool("get_metadata", {}, progress_callback=on_progress)
    assert heard == []


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_progress_reaches_a_2026_client(emulator: OneCEmulator, transport: str) -> None:
    emulator.state.latency = 1.6
    settings = proxy_settings(emulator, progress_interval=1)
    heard: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append(message)

    if transport == "stdio":
        target: Any = StdioServerParameters(
            command=sys.executable, args=["-m", "py_server", "stdio"], env=settings_env(settings)
        )
        async with Client(target) as client:
            assert client.protocol_version == "2026-07-28"
            result = await client.call_tool("get_metadata", {}, progress_callback=on_progress)
    else:
        with http_proxy(settings) as server:
            async with Client(f"{server.url}/mcp") as client:
                assert client.protocol_version == "2026-07-28"
                result = await client.call_tool("get_metadata", {}, progress_callback=on_progress)
    assert not result.is_error
    assert heard and heard[0] == "waiting for 1C, 1 s"


async def test_progress_stops_when_the_call_ends(emulator: OneCEmulator) -> None:
    emulator.state.latency = 1.3
    heard: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append(progress)

    async with mcp_session("streamable_http", proxy_settings(emulator, progress_interval=1)) as session:
        await session.call_tool("get_metadata", {}, progress_callback=on_progress)
        # A ticker left running would be due at 2 s, while this call runs (1.3 s to 2.6 s).
        await session.call_tool("get_metadata", {})
    assert heard == [pytest.approx(1.0, abs=0.3)]


def test_a_late_answer_streams_in_stateless_mode_too(emulator: OneCEmulator) -> None:
    emulator.state.latency = 1.5
    settings = proxy_settings(emulator, sse_ping_interval=0.2, stateless_http=True)
    headers = {**ACCEPT_BOTH, "Mcp-Protocol-Version": "2025-11-25"}
    with http_proxy(settings) as server, httpx.Client(timeout=30) as client:
        reply = client.post(f"{server.url}/mcp", json=_call(2), headers=headers)
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.text.startswith(": ping\r\n\r\n")
    assert '"id":2' in reply.text.split("data: ", 1)[1]
