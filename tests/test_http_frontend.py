"""The FastAPI front-end: info, health, Host/Origin checks, CORS, bearer auth, SSE keep-alive."""

from __future__ import annotations

import anyio
import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from py_server.demo.onec_emulator import OneCEmulator
from py_server.http_server import _ProxyApp

from .conftest import http_proxy, mcp_session, proxy_settings

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def test_index_names_the_endpoints_and_the_1c_url_without_credentials(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        info = httpx.get(server.url).json()
    assert info["endpoints"] == {
        "health": "/health",
        "live": "/health/live",
        "ready": "/health/ready",
        "sse": "/sse",
        "messages": "/messages/",
        "streamable_http": "/mcp",
    }
    assert info["onec_url"] == f"{emulator.url}/hs/mcp"
    assert emulator.password not in str(info)


def test_health_is_200_with_round_trip_when_1c_answers(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        response = httpx.get(f"{server.url}/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["onec"]["round_trip_ms"] >= 0
    assert emulator.password not in response.text


def test_health_is_503_with_the_reason_when_1c_is_down(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        emulator.stop()
        response = httpx.get(f"{server.url}/health")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unhealthy"
    assert "Cannot connect to 1C" in body["onec"]["error"]
    assert emulator.password not in response.text


def test_health_reports_a_wrong_password_without_showing_it(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, onec_password="wrong-Пароль")) as server:
        response = httpx.get(f"{server.url}/health")
    assert response.status_code == 503
    assert "401" in response.json()["onec"]["error"]
    assert "wrong-Пароль" not in response.text


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
def test_a_foreign_origin_is_rejected(emulator: OneCEmulator, path: str) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        headers = {**MCP_HEADERS, "Origin": "http://evil.example"}
        if path == "/mcp":
            response = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers=headers)
        else:
            response = httpx.get(f"{server.url}/sse", headers=headers)
    assert response.status_code == 403


def test_a_rebound_host_name_is_rejected(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        response = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example"})
    assert response.status_code == 421


def test_a_configured_origin_gets_cors_headers_and_the_session_id(emulator: OneCEmulator) -> None:
    origin = "http://app.example"
    with http_proxy(proxy_settings(emulator, allowed_origins=[origin])) as server:
        preflight = httpx.options(
            f"{server.url}/mcp",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,mcp-session-id",
            },
        )
        response = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": origin})
        unlisted = httpx.post(
            f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": "http://x.example"}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "mcp-session-id" in response.headers["access-control-expose-headers"].lower()
    assert response.headers["mcp-session-id"]
    assert unlisted.status_code == 403


def test_no_cors_headers_without_configured_origins(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        response = httpx.get(f"{server.url}/health")
    assert "access-control-allow-origin" not in response.headers


def test_bearer_token_guards_the_mcp_endpoints(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, auth_token="t0ken-123")) as server:
        missing = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        wrong = httpx.post(
            f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer nope"}
        )
        sse = httpx.get(f"{server.url}/sse")
        messages = httpx.post(f"{server.url}/messages/?session_id=x", json=INITIALIZE)
        right = httpx.post(
            f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer t0ken-123"}
        )
        health = httpx.get(f"{server.url}/health")
        index = httpx.get(server.url)
    assert [missing.status_code, wrong.status_code, sse.status_code, messages.status_code] == [401, 401, 401, 401]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200
    assert health.status_code == 200 and index.status_code == 200
    assert "t0ken-123" not in health.text + index.text


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["sse", "streamable_http"])
async def test_sdk_clients_work_with_the_bearer_token(emulator: OneCEmulator, transport: str) -> None:
    settings = proxy_settings(emulator, auth_token="t0ken-123")
    async with mcp_session(transport, settings, headers={"Authorization": "Bearer t0ken-123"}) as session:
        tools = await session.list_tools()
    assert "get_metadata" in [tool.name for tool in tools.tools]


@pytest.mark.anyio
async def test_idle_sse_stream_gets_keep_alive_pings(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, sse_ping_interval=0.2)) as server:
        async with httpx.AsyncClient(timeout=10) as client, client.stream("GET", f"{server.url}/sse") as stream:
            lines: list[str] = []
            with anyio.fail_after(5):
                async for line in stream.aiter_lines():
                    lines.append(line)
                    if line.startswith(": ping"):
                        break
    assert lines[0] == "event: endpoint"
    assert lines[-1].startswith(": ping")


def test_the_per_call_paths_skip_fastapis_layers_but_not_the_proxys_middleware() -> None:
    seen: list[str] = []

    class Recorder:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                seen.append(scope["path"])
            await self.app(scope, receive, send)

    async def per_call(scope: Scope, receive: Receive, send: Send) -> None:
        assert "router" not in scope  # FastAPI's router never saw it
        await PlainTextResponse("straight")(scope, receive, send)

    app = _ProxyApp(per_call={"/mcp": per_call})
    app.add_api_route("/mcp", lambda: PlainTextResponse("through FastAPI", status_code=418), methods=["POST"])
    app.add_api_route("/other", lambda: PlainTextResponse("other"), methods=["POST"])
    app.add_middleware(Recorder)
    with TestClient(app) as client:
        assert client.post("/mcp").text == "straight"
        assert client.post("/other").text == "other"
    assert seen == ["/mcp", "/other"]
