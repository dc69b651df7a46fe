"""RequestGuard on its own: Host, Origin and bearer checks in front of a bare ASGI app."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from py_server.config import Settings
from py_server.http_security import RequestGuard, is_authenticated, route_path

TOKEN = "guard-t0ken"


class Recorder:
    """The app behind the guard: answers 200 and remembers what it saw."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def guarded(*, root_path: str = "", **settings: Any) -> tuple[TestClient, Recorder]:
    app = Recorder()
    guard = RequestGuard(app, settings=Settings(_env_file=None, **settings))  # type: ignore[call-arg]
    return TestClient(guard, base_url="http://127.0.0.1:8000", root_path=root_path), app


def test_without_a_token_configured_every_path_passes() -> None:
    client, app = guarded()
    assert client.post("/mcp").status_code == 200
    assert not is_authenticated(app.scopes[0])


@pytest.mark.parametrize("path", ["/", "/health", "/health/live", "/health/ready"])
def test_public_paths_pass_without_the_token(path: str) -> None:
    client, _ = guarded(auth_token=TOKEN)
    assert client.get(path).status_code == 200
    assert client.head(path).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/"])
def test_a_public_path_with_another_method_needs_the_token(path: str) -> None:
    client, _ = guarded(auth_token=TOKEN)
    assert client.post(path).status_code == 401


@pytest.mark.parametrize("path", ["/mcp", "/mcp/", "/sse/", "/messages", "/anything", "/health/", "/HEALTH"])
def test_any_other_path_needs_the_token(path: str) -> None:
    client, app = guarded(auth_token=TOKEN)
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert app.scopes == []


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "])
def test_a_valid_token_passes_and_marks_the_request_authenticated(header: str) -> None:
    client, app = guarded(auth_token=TOKEN)
    assert client.post("/mcp", headers={"Authorization": header}).status_code == 200
    assert is_authenticated(app.scopes[0])
    assert TOKEN not in repr(app.scopes[0]["user"].access_token)


@pytest.mark.parametrize("header", ["Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer"])
def test_a_wrong_token_or_scheme_is_rejected(header: str) -> None:
    client, _ = guarded(auth_token=TOKEN)
    assert client.post("/mcp", headers={"Authorization": header}).status_code == 401


def test_a_public_path_with_a_valid_token_is_authenticated_for_the_detail() -> None:
    client, app = guarded(auth_token=TOKEN)
    client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert is_authenticated(app.scopes[0])


@pytest.mark.parametrize("origin", ["null", "http://evil.example", "http://127.0.0.1:9999"])
def test_foreign_origins_are_rejected_even_with_the_token(origin: str) -> None:
    client, _ = guarded(auth_token=TOKEN)
    response = client.post("/mcp", headers={"Authorization": f"Bearer {TOKEN}", "Origin": origin})
    assert response.status_code == 403


def test_the_proxys_own_origin_and_configured_ones_pass() -> None:
    client, _ = guarded(allowed_origins=["http://app.example"])
    assert client.post("/mcp", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 200
    assert client.post("/mcp", headers={"Origin": "http://app.example/"}).status_code == 200


@pytest.mark.parametrize(("host", "status"), [("evil.example", 421), ("localhost:8000", 200), ("[::1]:8000", 200)])
def test_host_names_are_checked(host: str, status: int) -> None:
    client, _ = guarded()
    assert client.get("/health", headers={"Host": host}).status_code == status


def test_allowed_hosts_extend_loopback() -> None:
    client, _ = guarded(allowed_hosts=["proxy.corp"])
    assert client.get("/health", headers={"Host": "proxy.corp:8000"}).status_code == 200


@pytest.mark.parametrize(
    ("path", "root", "routed"),
    [("/health", "", "/health"), ("/app/health", "/app", "/health"), ("/application/x", "/app", "/application/x")],
)
def test_route_path_strips_the_root_path_as_the_router_does(path: str, root: str, routed: str) -> None:
    assert route_path({"type": "http", "path": path, "root_path": root}) == routed


def test_a_public_path_under_a_root_path_is_public() -> None:
    client, _ = guarded(root_path="/proxy", auth_token=TOKEN)
    assert client.get("/proxy/health").status_code == 200
    assert client.get("/proxy/mcp").status_code == 401


def test_a_page_the_proxy_served_may_call_it_from_an_allowed_host() -> None:
    client, _ = guarded(allowed_hosts=["proxy.corp"])
    same = client.post("/mcp", headers={"Host": "proxy.corp:8000", "Origin": "http://proxy.corp:8000"})
    other = client.post("/mcp", headers={"Host": "proxy.corp:8000", "Origin": "http://evil.example:8000"})
    rebinding = client.post("/mcp", headers={"Host": "evil.example:8000", "Origin": "http://evil.example:8000"})
    assert (same.status_code, other.status_code, rebinding.status_code) == (200, 403, 421)


@pytest.mark.parametrize(
    ("resource", "endpoint", "announced"),
    [
        ("https://proxy.corp/mcp", "/mcp", "https://proxy.corp/mcp"),
        ("https://proxy.corp/mcp", "", "https://proxy.corp/mcp"),
        ("https://proxy.corp/mcp", "/bases/erp/mcp", "https://proxy.corp/bases/erp/mcp"),
        ("https://proxy.corp/onec/mcp", "/sse", "https://proxy.corp/onec/sse"),
    ],
)
def test_a_fixed_resource_url_is_announced_for_each_endpoint_at_its_origin(
    resource: str, endpoint: str, announced: str
) -> None:
    from py_server.http_security import resource_url

    settings = Settings(_env_file=None, oauth_resource=resource)  # type: ignore[call-arg]
    assert resource_url(settings, {"type": "http", "headers": []}, endpoint) == announced
