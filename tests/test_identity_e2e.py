"""Each person reaches 1C as themselves: passthrough 1C logins and OAuth sign-in, end to end.

The proxy runs under uvicorn on loopback against the demo base, whose users have different rights
(`demo/onec_data.demo_users`); OAuth tokens come from the local identity provider emulator
(`demo/idp.py`). Clients are the SDK's own, over SSE and Streamable HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from mcp.shared.exceptions import MCPError

from py_server.demo.idp import IdentityProvider, User
from py_server.demo.loopback import LoopbackServer
from py_server.demo.onec_emulator import OneCEmulator
from py_server.http_server import create_app, uvicorn_options
from py_server.wiring import build_proxy

from .conftest import TEST_PASSWORD, http_proxy, proxy_settings
from .test_oauth import MemoryStorage

pytestmark = pytest.mark.anyio

MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def onec_login(user: str, password: str) -> dict[str, str]:
    return {"Authorization": basic(user, password)}


def text_of(result: Any) -> str:
    return "\n".join(item.text for item in result.content if getattr(item, "type", None) == "text")


@contextlib.asynccontextmanager
async def session_at(url: str, transport: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    """An SDK client session to a running proxy, sending `headers` with every request."""
    async with contextlib.AsyncExitStack() as stack:
        if transport == "sse":
            read, write = await stack.enter_async_context(sse_client(f"{url}/sse", headers=headers))
        else:
            client = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=30))
            read, write = await stack.enter_async_context(streamable_http_client(f"{url}/mcp", http_client=client))
        session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=30))
        await session.initialize()
        yield session


async def post_initialize(url: str, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as client:
        return await client.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})


# --- passthrough: each client's own 1C login --------------------------------------------


@pytest.fixture
def passthrough(emulator: OneCEmulator) -> Iterator[str]:
    with http_proxy(proxy_settings(emulator, onec_auth="passthrough")) as server:
        yield server.url


async def test_two_clients_at_once_each_reach_1c_as_their_own_user(emulator: OneCEmulator, passthrough: str) -> None:
    async with (
        session_at(passthrough, "streamable_http", onec_login("accountant", "accountant")) as accountant,
        session_at(passthrough, "sse", onec_login("storekeeper", "storekeeper")) as storekeeper,
    ):
        mine = text_of(await accountant.call_tool("current_user", {}))
        theirs = text_of(await storekeeper.call_tool("current_user", {}))
        accountant_tools = {tool.name for tool in (await accountant.list_tools()).tools}
        storekeeper_tools = {tool.name for tool in (await storekeeper.list_tools()).tools}
        with pytest.raises(MCPError, match="Unknown tool: 'list_staff'"):  # not in this user's catalog
            await storekeeper.call_tool("list_staff", {})

    assert "accountant" in mine and "storekeeper" not in mine
    assert "storekeeper" in theirs and "accountant" not in theirs
    # 1C shows each user their own catalog (MCP_ONEC_CATALOG=per_identity, the default).
    assert {"post_document", "list_staff"} <= accountant_tools
    assert not {"post_document", "list_staff"} & storekeeper_tools
    assert emulator.state.user_calls["accountant", "tools/call"] == 1
    assert emulator.state.user_calls["storekeeper", "tools/call"] == 1
    assert emulator.state.user_calls[emulator.username, "tools/call"] == 0  # never the service account


async def test_a_cyrillic_1c_login_works(passthrough: str) -> None:
    async with session_at(passthrough, "streamable_http", onec_login("Иванов", "пароль")) as session:
        answer = text_of(await session.call_tool("current_user", {}))
    assert "Иванов" in answer


def test_a_wrong_password_gets_401_with_a_basic_challenge_before_any_session(passthrough: str) -> None:
    wrong = httpx.post(
        f"{passthrough}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **onec_login("accountant", "nope")}
    )
    missing = httpx.post(f"{passthrough}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    sse = httpx.get(f"{passthrough}/sse", headers=onec_login("accountant", "nope"))

    for answer in (wrong, missing, sse):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith('Basic realm="1C"')
        assert "mcp-session-id" not in answer.headers
    assert "accountant" in wrong.text and "nope" not in wrong.text


def test_a_user_without_the_right_to_the_service_gets_403_with_1cs_reason(passthrough: str) -> None:
    answer = httpx.post(
        f"{passthrough}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **onec_login("norights", "norights")}
    )
    assert answer.status_code == 403
    assert "Недостаточно прав" in answer.text  # 1C's own words, from its 403 page
    assert "mcp-session-id" not in answer.headers


def test_a_session_is_bound_to_the_login_that_opened_it(passthrough: str) -> None:
    accountant = {**MCP_HEADERS, **onec_login("accountant", "accountant")}
    opened = httpx.post(f"{passthrough}/mcp", json=INITIALIZE, headers=accountant)
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
    own = httpx.post(f"{passthrough}/mcp", json=PING, headers={**accountant, **session})
    other = httpx.post(
        f"{passthrough}/mcp",
        json=PING,
        headers={**MCP_HEADERS, **onec_login("storekeeper", "storekeeper"), **session},
    )
    assert own.status_code == 200
    assert other.status_code == 404


def test_the_login_is_checked_with_1c_once_not_per_request(emulator: OneCEmulator, passthrough: str) -> None:
    headers = {**MCP_HEADERS, **onec_login("accountant", "accountant")}
    for _ in range(3):
        assert httpx.post(f"{passthrough}/mcp", json=INITIALIZE, headers=headers).status_code == 200
    assert emulator.state.user_calls["accountant", "ping"] == 1


async def test_a_login_1c_refuses_later_is_refused_at_the_next_request(
    emulator: OneCEmulator, passthrough: str
) -> None:
    headers = onec_login("accountant", "accountant")
    async with session_at(passthrough, "streamable_http", headers) as session:
        assert not (await session.call_tool("current_user", {})).is_error
        accountant = emulator.state.users["accountant"]
        emulator.state.users["accountant"] = type(accountant)(
            accountant.name, "changed", accountant.full_name, accountant.roles
        )
        failed = await session.call_tool("current_user", {})
    assert failed.is_error and "rejected the login" in text_of(failed)
    again = await post_initialize(f"{passthrough}/mcp", headers)
    assert again.status_code == 401


async def test_a_shared_catalog_is_read_with_the_service_account(emulator: OneCEmulator) -> None:
    settings = proxy_settings(emulator, onec_auth="passthrough", onec_catalog="shared")
    with http_proxy(settings) as server:
        async with session_at(server.url, "streamable_http", onec_login("storekeeper", "storekeeper")) as session:
            tools = {tool.name for tool in (await session.list_tools()).tools}
            refused = await session.call_tool("post_document", {"number": "ТД-000001"})
    assert "post_document" in tools  # the service account's catalog
    assert refused.is_error and "Недостаточно прав" in text_of(refused)  # 1C's rights still apply
    assert emulator.state.user_calls["storekeeper", "tools/list"] == 0


async def test_the_audit_log_names_the_1c_user_and_no_password_is_logged(
    emulator: OneCEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    audit = tmp_path / "audit.jsonl"
    settings = proxy_settings(emulator, onec_auth="passthrough", audit_log=str(audit))
    with http_proxy(settings) as server:
        async with session_at(server.url, "streamable_http", onec_login("Иванов", "пароль")) as session:
            await session.call_tool("current_user", {})
        await post_initialize(f"{server.url}/mcp", onec_login("Иванов", "неверный"))
    line = json.loads(audit.read_text(encoding="utf-8").splitlines()[0])
    assert (line["who"], line["onec_user"]) == ("Иванов", "Иванов")
    logged = caplog.text + audit.read_text(encoding="utf-8")
    for secret in ("пароль", "неверный", basic("Иванов", "пароль").split()[1], TEST_PASSWORD):
        assert secret not in logged


def test_health_counts_personal_connections_but_names_nobody(emulator: OneCEmulator, passthrough: str) -> None:
    headers = onec_login("accountant", "accountant")
    httpx.post(f"{passthrough}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers})
    public = httpx.get(f"{passthrough}/health")
    detail = httpx.get(f"{passthrough}/health", headers=headers)
    assert set(public.json()) == {"status", "reason"}
    assert detail.json()["identities"]["personal_connections"] == 1
    assert "accountant" not in json.dumps(detail.json()["identities"])


async def test_with_a_bearer_token_the_1c_login_travels_in_x_onec_authorization(emulator: OneCEmulator) -> None:
    settings = proxy_settings(emulator, onec_auth="passthrough", auth_token="s3cret-token")
    with http_proxy(settings) as server:
        bearer = {"Authorization": "Bearer s3cret-token"}
        login = {"X-OneC-Authorization": basic("storekeeper", "storekeeper")}
        no_login = await post_initialize(f"{server.url}/mcp", bearer)
        no_bearer = await post_initialize(f"{server.url}/mcp", login)
        async with session_at(server.url, "streamable_http", {**bearer, **login}) as session:
            answer = text_of(await session.call_tool("current_user", {}))
    assert no_login.status_code == 401 and no_login.headers["www-authenticate"].startswith("Basic")
    assert no_bearer.status_code == 401 and no_bearer.headers["www-authenticate"] == "Bearer"
    assert "storekeeper" in answer


# --- OAuth: single sign-on --------------------------------------------------------------

POLICY = """
claim = "groups"
default = "deny"

[groups.accountants]
tools_allow = ["*"]

[groups.interns]
read_only = true
tools_deny = ["get_counterparty"]
"""


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as running:
        yield running


@contextlib.contextmanager
def oauth_proxy(emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path, **overrides: Any) -> Iterator[str]:
    """The proxy as an OAuth resource server; its audience is its own /mcp URL, as MCP clients ask for."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    port = free_port()
    values: dict[str, Any] = {
        "oauth_issuer": idp.issuer,
        "oauth_audience": f"http://127.0.0.1:{port}/mcp",
        "oauth_scopes": ["mcp"],
        "policy_file": policy,
        "port": port,
        **overrides,
    }
    settings = proxy_settings(emulator, **values)
    with LoopbackServer(create_app(build_proxy(settings)), port=port, options=uvicorn_options(settings)) as server:
        yield server.url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def audience(url: str) -> str:
    return f"{url}/mcp"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_signed_in_user_sees_the_tools_of_their_groups(
    emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path
) -> None:
    with oauth_proxy(emulator, idp, tmp_path) as url:
        accountant = idp.issue(
            "u-1", audience=audience(url), preferred_username="petrova", groups=["accountants"], scopes=["mcp"]
        )
        intern = idp.issue(
            "u-2", audience=audience(url), preferred_username="sidorov", groups=["interns"], scopes=["mcp"]
        )
        async with (
            session_at(url, "streamable_http", bearer(accountant)) as full,
            session_at(url, "sse", bearer(intern)) as limited,
        ):
            full_tools = {tool.name for tool in (await full.list_tools()).tools}
            limited_tools = {tool.name for tool in (await limited.list_tools()).tools}
            me = text_of(await limited.call_tool("current_user", {}))
    assert {"post_document", "get_counterparty"} <= full_tools
    assert "post_document" not in limited_tools  # read-only group: a writing tool is hidden
    assert "get_counterparty" not in limited_tools  # the group's deny
    assert "query_sales" in limited_tools
    # Calls go with the service account, naming the signed-in user in X-MCP-User.
    assert emulator.username in me and "Действует от имени: sidorov" in me


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("expired", 401, "invalid_token"),
        ("wrong_audience", 401, "invalid_token"),
        ("wrong_issuer", 401, "invalid_token"),
        ("bad_signature", 401, "invalid_token"),
        ("alg_none", 401, "invalid_token"),
        ("no_scope", 403, "insufficient_scope"),
    ],
)
def test_a_bad_token_is_refused_with_a_challenge_that_points_to_the_metadata(
    emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path, case: str, status: int, error: str
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    with oauth_proxy(emulator, idp, tmp_path) as url:
        good: dict[str, Any] = {"preferred_username": "petrova", "groups": ["accountants"], "scopes": ["mcp"]}
        mine = audience(url)
        tokens = {
            "expired": lambda: idp.issue("u-1", audience=mine, expires_in=-600, **good),
            "wrong_audience": lambda: idp.issue("u-1", audience="another-service", **good),
            "wrong_issuer": lambda: idp.issue(
                "u-1", audience=mine, extra_claims={"iss": "https://evil.example"}, **good
            ),
            "bad_signature": lambda: idp.issue(
                "u-1",
                audience=mine,
                key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
                kid=idp.current_kid,
                **good,
            ),
            "alg_none": lambda: _unsigned(idp, mine),
            "no_scope": lambda: idp.issue("u-1", audience=mine, **{**good, "scopes": ["other"]}),
        }
        answer = httpx.post(f"{url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(tokens[case]())})
    assert answer.status_code == status
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'error="{error}"' in challenge
    assert (
        'resource_metadata="http://127.0.0.1:' in challenge and "/.well-known/oauth-protected-resource/mcp" in challenge
    )
    assert answer.json()["error"] == error


def _unsigned(idp: IdentityProvider, aud: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": aud, "sub": "u-1", "exp": now + 300, "scope": "mcp", "groups": ["accountants"]}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_a_token_signed_with_a_rotated_key_is_accepted_after_one_refetch(
    emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path
) -> None:
    with oauth_proxy(emulator, idp, tmp_path) as url:
        claims: dict[str, Any] = {
            "audience": audience(url),
            "preferred_username": "petrova",
            "groups": ["accountants"],
            "scopes": ["mcp"],
        }
        first = httpx.post(f"{url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(idp.issue("u", **claims))})
        fetches = idp.jwks_fetches
        idp.rotate()
        rotated = httpx.post(f"{url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(idp.issue("u", **claims))})
    assert first.status_code == rotated.status_code == 200
    assert idp.jwks_fetches == fetches + 1


def test_a_user_in_no_listed_group_is_refused(emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path) -> None:
    with oauth_proxy(emulator, idp, tmp_path) as url:
        token = idp.issue(
            "u-9", audience=audience(url), preferred_username="guest", groups=["visitors"], scopes=["mcp"]
        )
        answer = httpx.post(f"{url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(token)})
    assert answer.status_code == 403
    assert "MCP_POLICY_FILE" in answer.text


def test_the_protected_resource_metadata_names_the_issuer(
    emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path
) -> None:
    with oauth_proxy(emulator, idp, tmp_path) as url:
        metadata = httpx.get(f"{url}/.well-known/oauth-protected-resource/mcp")
        root = httpx.get(f"{url}/.well-known/oauth-protected-resource")
        unauthenticated = httpx.post(f"{url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert metadata.status_code == 200
    body = metadata.json()
    assert body["resource"] == f"{url}/mcp"
    assert [server.rstrip("/") for server in body["authorization_servers"]] == [idp.issuer.rstrip("/")]
    assert body["scopes_supported"] == ["mcp"]
    assert root.status_code == 200
    assert unauthenticated.status_code == 401
    assert (
        f'resource_metadata="{url}/.well-known/oauth-protected-resource/mcp"'
        in (unauthenticated.headers["www-authenticate"])
    )


async def test_the_sdks_oauth_client_discovers_signs_in_and_lists_tools(emulator: OneCEmulator, tmp_path: Path) -> None:
    with (
        IdentityProvider(user=User("f81d4fae", "petrova", ("accountants",))) as idp,
        oauth_proxy(emulator, idp, tmp_path, oauth_scopes=[]) as url,
    ):
        redirects: list[str] = []

        async def follow_login(authorization_url: str) -> None:
            async with httpx2.AsyncClient() as browser:  # the emulator approves at once
                answer = await browser.get(authorization_url)
            redirects.append(answer.headers["location"])

        async def callback() -> AuthorizationCodeResult:
            query = parse_qs(urlsplit(redirects[-1]).query)
            return AuthorizationCodeResult(code=query["code"][0], state=query["state"][0])

        provider = OAuthClientProvider(
            server_url=f"{url}/mcp",
            client_metadata=OAuthClientMetadata(redirect_uris=["http://127.0.0.1:1/callback"]),  # type: ignore[list-item]
            storage=MemoryStorage(),
            redirect_handler=follow_login,
            callback_handler=callback,
        )
        async with (
            httpx2.AsyncClient(auth=provider, timeout=30) as client,
            streamable_http_client(f"{url}/mcp", http_client=client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
    assert "post_document" in tools
    assert redirects  # the client went through the sign-in


# --- sessions stay with their owner, whatever the transport and sign-in ----------------------


def test_an_sse_session_is_bound_to_the_login_that_opened_it(passthrough: str) -> None:
    accountant = onec_login("accountant", "accountant")
    with httpx.stream("GET", f"{passthrough}/sse", headers=accountant) as stream:
        lines = stream.iter_lines()
        endpoint = next(line for line in lines if line.startswith("data:")).removeprefix("data:").strip()
        own = httpx.post(f"{passthrough}{endpoint}", json=INITIALIZE, headers=accountant)
        other = httpx.post(
            f"{passthrough}{endpoint}", json=INITIALIZE, headers=onec_login("storekeeper", "storekeeper")
        )
    assert own.status_code == 202
    assert other.status_code == 404


def test_an_oauth_session_is_bound_to_the_user_who_opened_it(
    emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path
) -> None:
    with oauth_proxy(emulator, idp, tmp_path) as url:
        claims: dict[str, Any] = {"audience": audience(url), "groups": ["accountants"], "scopes": ["mcp"]}
        petrova = {**MCP_HEADERS, **bearer(idp.issue("u-1", preferred_username="petrova", **claims))}
        sidorov = {**MCP_HEADERS, **bearer(idp.issue("u-2", preferred_username="sidorov", **claims))}
        opened = httpx.post(f"{url}/mcp", json=INITIALIZE, headers=petrova)
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        own = httpx.post(f"{url}/mcp", json=PING, headers={**petrova, **session})
        other = httpx.post(f"{url}/mcp", json=PING, headers={**sidorov, **session})
    assert own.status_code == 200
    assert other.status_code == 404


def test_an_hmac_token_keyed_with_the_issuers_public_key_is_refused(
    emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path
) -> None:
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization
    from jwt.algorithms import RSAAlgorithm

    with oauth_proxy(emulator, idp, tmp_path) as url:
        jwk = httpx.get(f"{idp.issuer}/jwks").json()["keys"][0]  # what anybody can read
        public_pem = RSAAlgorithm.from_jwk(json.dumps(jwk)).public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        now = int(time.time())
        claims = {"iss": idp.issuer, "aud": audience(url), "sub": "u-1", "exp": now + 300, "scope": "mcp"}

        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': idp.current_kid})}.{part(claims)}"
        signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        forged = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
        answer = httpx.post(f"{url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(forged)})
    assert answer.status_code == 401
    assert "shared-secret" in answer.json()["error_description"]


def test_a_host_header_cannot_smuggle_another_host_into_the_challenge(
    emulator: OneCEmulator, idp: IdentityProvider, tmp_path: Path
) -> None:
    with oauth_proxy(emulator, idp, tmp_path, allowed_hosts=["*"]) as url:
        port = url.rsplit(":", 1)[1]
        answers = [
            httpx.post(f"{url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Host": host})
            for host in (f"127.0.0.1:{port}@evil.example", f'127.0.0.1:{port}"x, error="y')
        ]
    assert [answer.status_code for answer in answers] == [421, 421]


def test_the_same_wrong_password_reaches_1c_once_in_a_while(emulator: OneCEmulator, passthrough: str) -> None:
    wrong = {**MCP_HEADERS, **onec_login("accountant", "guess")}
    answers = [httpx.post(f"{passthrough}/mcp", json=INITIALIZE, headers=wrong).status_code for _ in range(5)]
    assert answers == [401] * 5
    assert emulator.state.calls["HTTP 401"] == 1
