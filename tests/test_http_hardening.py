"""The HTTP front-end under hostile or careless clients: auth on every path, a bounded /health,
capped and reaped sessions, capped bodies, and connections that never send a request head."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator

import anyio
import httpx
import pytest

from py_server.config import Settings
from py_server.demo.loopback import LoopbackServer
from py_server.demo.onec_emulator import OneCEmulator
from py_server.http_connections import head_timeout_protocol, httptools_available
from py_server.http_server import create_app, uvicorn_options
from py_server.wiring import build_proxy

from .conftest import http_proxy, proxy_settings

TOKEN = "t0ken-for-the-tests-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


# --- authentication looks at what the router routes ---------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/mcp/"),
        ("POST", "/messages"),
        ("POST", "/messages/?session_id=00"),
        ("GET", "/sse/"),
        ("HEAD", "/mcp"),
        ("HEAD", "/sse"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "//mcp"),
        ("GET", "/health/../mcp"),
    ],
)
def test_every_path_but_the_public_ones_needs_the_token(emulator: OneCEmulator, method: str, path: str) -> None:
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN)) as server:
        response = httpx.request(method, server.url + path, headers=MCP_HEADERS, json=INITIALIZE)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_lower_case_bearer_scheme_is_accepted(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN)) as server:
        response = httpx.post(
            f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"bearer {TOKEN}"}
        )
    assert response.status_code == 200


def test_origin_null_is_a_foreign_origin(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN)) as server:
        response = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **AUTH, "Origin": "null"})
    assert response.status_code == 403


def test_openapi_is_not_served(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN)) as server:
        response = httpx.get(f"{server.url}/openapi.json", headers=AUTH)
    assert response.status_code == 404


def test_a_streamable_http_session_is_bound_to_the_credential_that_opened_it(emulator: OneCEmulator) -> None:
    # One token today, so the binding shows as: the session id alone (without the token) opens nothing.
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN)) as server:
        opened = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **AUTH})
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        with_token = httpx.post(f"{server.url}/mcp", json=ping, headers={**MCP_HEADERS, **AUTH, **session})
        without = httpx.post(f"{server.url}/mcp", json=ping, headers={**MCP_HEADERS, **session})
    assert with_token.status_code == 200
    assert without.status_code == 401


# --- health ------------------------------------------------------------------------------


def test_health_without_the_token_says_only_the_status_and_a_reason(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN)) as server:
        public = httpx.get(f"{server.url}/health")
        detailed = httpx.get(f"{server.url}/health", headers=AUTH)
        index = httpx.get(server.url)
    assert public.status_code == 200
    assert set(public.json()) == {"status", "reason"}
    assert public.json()["status"] == "healthy"
    assert emulator.url not in public.text + index.text
    assert detailed.json()["onec"]["url"] == f"{emulator.url}/hs/mcp"
    assert detailed.json()["onec"]["user"] == emulator.username


def test_unhealthy_public_reason_hides_the_1c_address(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN)) as server:
        emulator.stop()
        response = httpx.get(f"{server.url}/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unhealthy", "reason": "1C is unreachable"}


def test_liveness_needs_no_1c_and_readiness_does(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        emulator.stop()
        live = httpx.get(f"{server.url}/health/live")
        ready = httpx.get(f"{server.url}/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503


@pytest.mark.anyio
async def test_concurrent_health_requests_share_one_1c_probe(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        before = emulator.state.calls["GET manifest"]
        async with httpx.AsyncClient(timeout=10) as client:
            responses = []

            async def get() -> None:
                responses.append(await client.get(f"{server.url}/health"))

            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(get)
        probes = emulator.state.calls["GET manifest"] - before
    assert [r.status_code for r in responses] == [200] * 50
    assert probes <= 2  # one probe, or two if the reuse window ended mid-burst


@pytest.mark.anyio
async def test_health_does_not_wait_behind_tool_calls_for_a_slot(emulator: OneCEmulator) -> None:
    settings = proxy_settings(emulator, onec_max_concurrency=1)
    with http_proxy(settings) as server:
        emulator.state.latency = 3.0  # tool calls hold the only slot; GET manifest is not delayed
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_metadata"}}
        async with httpx.AsyncClient(timeout=10, headers=MCP_HEADERS) as client:
            opened = await client.post(f"{server.url}/mcp", json=INITIALIZE)
            session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: client.post(f"{server.url}/mcp", json=call, headers=session))
                with anyio.fail_after(5):  # the emulator runs in another thread: watch its counter
                    while True:
                        if emulator.state.in_flight:
                            break
                        await anyio.sleep(0.01)
                ready = await client.get(f"{server.url}/health/ready")
                still_running = emulator.state.in_flight
                group.cancel_scope.cancel()
    assert ready.status_code == 200
    assert still_running == 1


# --- sessions, bodies and connections ----------------------------------------------------


def test_a_session_beyond_the_cap_gets_503_with_a_clear_message(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, max_sessions=2)) as server:
        opened = [httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS) for _ in range(2)]
        refused = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        with httpx.stream("GET", f"{server.url}/sse") as sse:
            sse_status = sse.status_code
    assert [r.status_code for r in opened] == [200, 200]
    assert refused.status_code == 503
    assert "MCP_MAX_SESSIONS=2" in refused.json()["error"]["message"]
    assert sse_status == 503


@pytest.mark.anyio
async def test_sse_streams_count_against_the_session_cap(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, max_sessions=1)) as server:
        async with httpx.AsyncClient(timeout=10) as client, client.stream("GET", f"{server.url}/sse") as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: endpoint"
            refused = await client.post(f"{server.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert refused.status_code == 503


@pytest.mark.anyio
async def test_an_idle_sse_stream_is_closed(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, session_idle_timeout=0.5)) as server:
        async with httpx.AsyncClient(timeout=10) as client, client.stream("GET", f"{server.url}/sse") as stream:
            with anyio.fail_after(8):
                lines = [line async for line in stream.aiter_lines()]  # ends when the server closes it
    assert lines[0] == "event: endpoint"


@pytest.mark.anyio
async def test_an_idle_streamable_http_session_is_closed(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, session_idle_timeout=0.5)) as server:
        async with httpx.AsyncClient(timeout=10, headers=MCP_HEADERS) as client:
            opened = await client.post(f"{server.url}/mcp", json=INITIALIZE)
            session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
            ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
            with anyio.fail_after(8):
                while True:
                    await anyio.sleep(0.6)  # each ping restarts the idle clock, so wait longer than it
                    if (await client.post(f"{server.url}/mcp", json=ping, headers=session)).status_code == 404:
                        break
    assert opened.status_code == 200


def test_a_request_body_over_the_cap_gets_413(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, max_request_mb=0.01)) as server:
        big = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * 20_000}}
        response = httpx.post(f"{server.url}/mcp", json=big, headers=MCP_HEADERS)
    assert response.status_code == 413


PARSERS = [
    "h11",
    pytest.param(
        "httptools",
        marks=pytest.mark.skipif(not httptools_available(), reason="httptools is not installed (the `fast` extra)"),
    ),
]


@contextlib.contextmanager
def _proxy_with_parser(settings: Settings, parser: str) -> Iterator[LoopbackServer]:
    options = {**uvicorn_options(settings), "http": head_timeout_protocol(settings.header_timeout, parser)}
    with LoopbackServer(create_app(build_proxy(settings)), options=options) as server:
        yield server


@pytest.mark.anyio
@pytest.mark.parametrize("parser", PARSERS)
async def test_a_connection_that_never_finishes_its_request_head_is_closed(emulator: OneCEmulator, parser: str) -> None:
    with _proxy_with_parser(proxy_settings(emulator, header_timeout=0.3), parser) as server:
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        slow.settimeout(8)
        closed = await anyio.to_thread.run_sync(slow.recv, 1024)
        slow.close()
        async with httpx.AsyncClient() as client:
            healthy = await client.get(f"{server.url}/health/live")
    assert closed == b""
    assert healthy.status_code == 200


@pytest.mark.parametrize("parser", PARSERS)
def test_a_slow_but_complete_request_is_served(emulator: OneCEmulator, parser: str) -> None:
    with _proxy_with_parser(proxy_settings(emulator, header_timeout=0.3), parser) as server, httpx.Client() as client:
        response = client.get(f"{server.url}/health/live")
        again = client.get(f"{server.url}/health/live")  # kept-alive connection, second head in time
    assert (response.status_code, again.status_code) == (200, 200)


@pytest.mark.parametrize("parser", PARSERS)
def test_a_kept_alive_connection_that_sends_no_second_head_is_closed(emulator: OneCEmulator, parser: str) -> None:
    with _proxy_with_parser(proxy_settings(emulator, header_timeout=0.3), parser) as server:
        idle = socket.create_connection(("127.0.0.1", server.port))
        idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        idle.settimeout(8)
        received = b""
        while not received.endswith(b"}") or b"\r\n\r\n" not in received:
            received += idle.recv(4096)
        closed = idle.recv(1024)  # nothing more is sent: the proxy closes it after the head timeout
        idle.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert closed == b""


def test_uvicorn_options_pick_httptools_where_it_is_installed() -> None:
    protocol = uvicorn_options(Settings(_env_file=None))["http"]  # type: ignore[call-arg]
    expected = "HeadTimeoutHttpToolsProtocol" if httptools_available() else "HeadTimeoutProtocol"
    assert protocol.__name__ == expected


# --- what a client sends is answered, clipped, never crashes -------------------------------


def _open_session(client: httpx.Client, url: str) -> dict[str, str]:
    opened = client.post(f"{url}/mcp", json=INITIALIZE)
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
    client.post(f"{url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    return session


def _reply(response: httpx.Response) -> dict:
    """The JSON-RPC answer of a POST to /mcp: one JSON body, or the `data:` of an SSE stream."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    data = next(line for line in response.text.splitlines() if line.startswith("data: "))
    return json.loads(data.removeprefix("data: "))


def test_nan_in_tool_arguments_gets_a_readable_invalid_params_error(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server, httpx.Client(headers=MCP_HEADERS) as client:
        session = _open_session(client, server.url)
        body = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query_sales","arguments":{"x":NaN}}}'
        headers = {**session, "Content-Type": "application/json"}
        reply = _reply(client.post(f"{server.url}/mcp", content=body, headers=headers))
    assert reply["error"]["code"] == -32602
    assert "NaN and Infinity are not JSON numbers" in reply["error"]["message"]
    assert emulator.state.calls["tools/call"] == 0


def test_a_huge_tool_name_is_clipped_in_the_error(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server, httpx.Client(headers=MCP_HEADERS, timeout=30) as client:
        session = _open_session(client, server.url)
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "x" * 3_000_000}}
        response = client.post(f"{server.url}/mcp", json=call, headers=session)
    message = _reply(response)["error"]["message"]
    assert message.startswith("Unknown tool: 'xxx")
    assert len(message) < 400


@pytest.mark.anyio
async def test_a_burst_of_new_sessions_cannot_pass_the_cap_together(emulator: OneCEmulator) -> None:
    # Three SSE streams hold three of five places; thirty sessions opened at once get two.
    with http_proxy(proxy_settings(emulator, max_sessions=5)) as server:
        async with contextlib.AsyncExitStack() as streams, httpx.AsyncClient(timeout=20, headers=MCP_HEADERS) as client:
            readers = []  # kept: a dropped line iterator closes its stream
            for _ in range(3):
                stream = await streams.enter_async_context(client.stream("GET", f"{server.url}/sse"))
                readers.append(stream.aiter_lines())
                assert await anext(readers[-1]) == "event: endpoint"
            statuses: list[int] = []

            async def open_one() -> None:
                statuses.append((await client.post(f"{server.url}/mcp", json=INITIALIZE)).status_code)

            async with anyio.create_task_group() as group:
                for _ in range(30):
                    group.start_soon(open_one)
            sessions = (await client.get(f"{server.url}/health")).json()["sessions"]
    assert statuses.count(200) <= 2
    assert sum(sessions.values()) <= 5


def test_an_allowed_host_may_be_written_with_its_port(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, allowed_hosts=["proxy.corp:8000", "other.corp:*"])) as server:
        first = httpx.get(f"{server.url}/health/live", headers={"Host": "proxy.corp:8000"})
        second = httpx.get(f"{server.url}/health/live", headers={"Host": "other.corp"})
    assert (first.status_code, second.status_code) == (200, 200)
