"""IamTokenProvider: both token styles, caching with an injected clock, one request for concurrent
callers, invalidation after a 401, and errors that name settings but never carry the secret."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr

from py_server.errors import UpstreamError
from py_server.extras.compliance.iam import IamTokenProvider, resolve_style

IAM_URL = "https://iam.api.cloud.ru/api/v1/auth/token"
OPENID_URL = "https://auth.iam.sbercloud.ru/auth/system/openid/token"
KEY_ID = "key-id-123"
SECRET = "s3cr3t-VALUE-never-shown"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_reply(token: str = "tok-1", expires_in: object = 3600) -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})


def provider(
    client: httpx.AsyncClient, url: str = IAM_URL, clock: FakeClock | None = None, **kw: object
) -> IamTokenProvider:
    return IamTokenProvider(
        client, auth_url=url, key_id=KEY_ID, key_secret=SecretStr(SECRET), clock=clock or FakeClock(), **kw
    )  # type: ignore[arg-type]


def test_auto_style_follows_the_url() -> None:
    assert resolve_style("auto", OPENID_URL) == "openid"
    assert resolve_style("auto", IAM_URL) == "iam"
    assert resolve_style("iam", OPENID_URL) == "iam"
    assert resolve_style("openid", IAM_URL) == "openid"


@pytest.mark.anyio
async def test_iam_style_posts_json_key_and_secret() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as client:
        route = mock.post(IAM_URL).mock(return_value=token_reply("tok-iam"))
        assert await provider(client).get_token() == "tok-iam"
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"keyId": KEY_ID, "secret": SECRET}


@pytest.mark.anyio
async def test_openid_style_posts_a_form() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as client:
        route = mock.post(OPENID_URL).mock(return_value=token_reply("tok-openid"))
        tokens = provider(client, OPENID_URL, grant_type="access_key")
        assert tokens.style == "openid"
        assert await tokens.get_token() == "tok-openid"
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "grant_type": ["access_key"],
        "client_id": [KEY_ID],
        "client_secret": [SECRET],
    }


@pytest.mark.anyio
async def test_token_is_reused_until_the_margin_then_refreshed() -> None:
    clock = FakeClock()
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(IAM_URL).mock(side_effect=[token_reply("tok-1", 3600), token_reply("tok-2", 3600)])
        tokens = provider(client, clock=clock, margin=60.0)
        assert await tokens.get_token() == "tok-1"
        clock.now += 3600 - 61  # 61 s before expiry: still outside the 60 s margin
        assert await tokens.get_token() == "tok-1"
        assert route.call_count == 1
        clock.now += 2  # inside the margin: refresh before use
        assert await tokens.get_token() == "tok-2"
        assert await tokens.get_token() == "tok-2"
        assert route.call_count == 2


@pytest.mark.anyio
async def test_short_lived_token_is_not_refreshed_on_every_call() -> None:
    clock = FakeClock()
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(IAM_URL).mock(side_effect=[token_reply("a", "30"), token_reply("b", 30)])
        tokens = provider(client, clock=clock, margin=60.0)
        assert await tokens.get_token() == "a"
        clock.now += 10  # margin is capped at half the lifetime (15 s)
        assert await tokens.get_token() == "a"
        clock.now += 6
        assert await tokens.get_token() == "b"
        assert route.call_count == 2


@pytest.mark.anyio
async def test_concurrent_callers_share_one_token_request() -> None:
    release = asyncio.Event()

    async def slow_token(request: httpx.Request) -> httpx.Response:
        await release.wait()  # every caller is queued before the first request completes
        return token_reply("shared")

    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(IAM_URL).mock(side_effect=slow_token)
        tokens = provider(client)
        tasks = [asyncio.create_task(tokens.get_token()) for _ in range(10)]
        for _ in range(5):
            await asyncio.sleep(0)  # let all ten reach the lock (a yield, not a wait)
        release.set()
        assert await asyncio.gather(*tasks) == ["shared"] * 10
        assert route.call_count == 1


@pytest.mark.anyio
async def test_invalidate_drops_only_the_failed_token() -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(IAM_URL).mock(side_effect=[token_reply("old"), token_reply("new"), token_reply("x")])
        tokens = provider(client)
        assert await tokens.get_token() == "old"
        tokens.invalidate("old")
        assert await tokens.get_token() == "new"
        tokens.invalidate("old")  # a late 401 with the old token must not throw the new one away
        assert await tokens.get_token() == "new"
        assert route.call_count == 2
        tokens.invalidate()
        assert await tokens.get_token() == "x"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "status", "needle"),
    [
        (httpx.Response(401, json={"error": "invalid_client"}), 401, "MCP_RAG_KEY_SECRET"),
        (httpx.Response(403), 403, "MCP_RAG_KEY_ID"),
        (httpx.Response(404), 404, "MCP_RAG_AUTH_URL"),
        (httpx.Response(503), 503, "HTTP 503"),
        (httpx.Response(200, text="<html>not json</html>"), None, "не JSON"),
        (httpx.Response(200, json={"token_type": "Bearer"}), None, "access_token"),
        (httpx.Response(200, json={"access_token": ""}), None, "access_token"),
    ],
)
async def test_token_errors_are_authentication_errors(
    reply: httpx.Response, status: int | None, needle: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(IAM_URL).mock(return_value=reply)
        with pytest.raises(UpstreamError) as info:
            await provider(client).get_token()
    assert info.value.error_type == "authentication_error"
    assert info.value.http_status == status
    assert needle in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("effect", "needle"), [(httpx.ConnectTimeout, "не ответил"), (httpx.ConnectError, "MCP_RAG_AUTH_URL")]
)
async def test_token_transport_failures(effect: type[Exception], needle: str) -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(IAM_URL).mock(side_effect=effect)
        with pytest.raises(UpstreamError) as info:
            await provider(client).get_token()
    assert info.value.error_type == "authentication_error"
    assert needle in str(info.value)


@pytest.mark.anyio
async def test_failed_request_is_not_cached_and_token_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(IAM_URL).mock(side_effect=[httpx.Response(500), token_reply("tok-after-500")])
        tokens = provider(client)
        with pytest.raises(UpstreamError):
            await tokens.get_token()
        assert await tokens.get_token() == "tok-after-500"
        assert route.call_count == 2
    assert "tok-after-500" not in caplog.text
    assert SECRET not in caplog.text
