from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from py_server.config import Settings
from py_server.errors import UpstreamError
from py_server.extras.repairs.client import RepairsApiClient

API = "http://repairs.test"
KEY = "s3cr3t-repairs-key"
VIN = "XWEG3417BN0009095"
Call = Callable[[RepairsApiClient], Awaitable[Any]]

ENDPOINTS: list[tuple[str, Call]] = [
    (f"/api/warranty/{VIN}", lambda c: c.warranty_days(VIN)),
    (f"/api/warranty/records/{VIN}", lambda c: c.warranty_records(VIN)),
    (f"/api/maintenance/{VIN}", lambda c: c.maintenance(VIN)),
    (f"/api/dnm/{VIN}", lambda c: c.dnm(VIN)),
]
IDS = ["warranty_days", "warranty_records", "maintenance", "dnm"]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "repairs_api_url": API,
        "repairs_api_key": SecretStr(KEY),
        "repairs_api_timeout": 7.5,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run(call: Call, settings: Settings | None = None) -> Any:
    async def main() -> Any:
        client = RepairsApiClient.from_settings(settings or make_settings())
        try:
            return await call(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def fail(call: Call) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        run(call)
    assert KEY not in str(info.value)
    return info.value


@respx.mock
@pytest.mark.parametrize(("path", "call"), ENDPOINTS, ids=IDS)
def test_each_endpoint_is_a_get_with_the_bearer_key(path: str, call: Call) -> None:
    route = respx.get(API + path).respond(json=[{"ok": 1}])
    assert run(call) == [{"ok": 1}]
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "application/json"


@respx.mock
def test_an_empty_list_is_returned_as_is() -> None:
    respx.get(f"{API}/api/dnm/{VIN}").respond(json=[])
    assert run(lambda c: c.dnm(VIN)) == []


@respx.mock
@pytest.mark.parametrize(("path", "call"), ENDPOINTS, ids=IDS)
def test_404_means_no_records(path: str, call: Call) -> None:
    respx.get(API + path).respond(404, json={"detail": "VIN не найден"})
    assert run(call) is None


@respx.mock
def test_without_a_key_no_authorization_header_is_sent() -> None:
    route = respx.get(f"{API}/api/dnm/{VIN}").respond(json=[])
    run(lambda c: c.dnm(VIN), make_settings(repairs_api_key=None))
    assert "Authorization" not in route.calls.last.request.headers


def test_the_timeout_setting_reaches_the_http_client() -> None:
    client = RepairsApiClient.from_settings(make_settings())
    assert client._http.timeout.read == 7.5
    asyncio.run(client.aclose())


@respx.mock
@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_authentication_errors_that_name_the_setting(status: int) -> None:
    respx.get(f"{API}/api/dnm/{VIN}").respond(status, json={"detail": f"bad key {KEY}"})
    error = fail(lambda c: c.dnm(VIN))
    assert (error.error_type, error.http_status) == ("authentication_error", status)
    assert f"HTTP {status}" in str(error)
    assert "MCP_REPAIRS_API_KEY" in str(error)


@respx.mock
def test_a_timeout_is_reported_with_the_limit_and_the_setting() -> None:
    respx.get(f"{API}/api/warranty/{VIN}").mock(side_effect=httpx.ReadTimeout("timed out"))
    error = fail(lambda c: c.warranty_days(VIN))
    assert error.error_type == "timeout"
    assert error.http_status is None
    assert "7.5 с" in str(error)
    assert "MCP_REPAIRS_API_TIMEOUT" in str(error)


@respx.mock
def test_a_connection_failure_is_a_network_error_naming_the_url_setting() -> None:
    respx.get(f"{API}/api/maintenance/{VIN}").mock(side_effect=httpx.ConnectError("Connection refused"))
    error = fail(lambda c: c.maintenance(VIN))
    assert error.error_type == "network_error"
    assert "Connection refused" in str(error)
    assert "http://repairs.test" in str(error)
    assert "MCP_REPAIRS_API_URL" in str(error)


@respx.mock
@pytest.mark.parametrize(
    ("status", "advice"), [(500, "попробуйте позже"), (502, "попробуйте позже"), (422, "MCP_REPAIRS_API_URL")]
)
def test_other_statuses_are_http_errors_with_the_status(status: int, advice: str) -> None:
    respx.get(f"{API}/api/warranty/records/{VIN}").respond(status, json={"detail": f"boom {KEY}"})
    error = fail(lambda c: c.warranty_records(VIN))
    assert (error.error_type, error.http_status) == ("http_error", status)
    assert f"HTTP {status}: boom ***" in str(error)  # the API's detail is kept, the key scrubbed
    assert advice in str(error)


@respx.mock
def test_an_html_error_page_is_not_quoted() -> None:
    respx.get(f"{API}/api/dnm/{VIN}").respond(503, html="<html><body>Service Unavailable</body></html>")
    error = fail(lambda c: c.dnm(VIN))
    assert error.http_status == 503
    assert "<html>" not in str(error)


@respx.mock
@pytest.mark.parametrize("body", [b"<html>login</html>", b"", b"{broken", b"\xff\xfe\x00"])
def test_a_body_that_is_not_json_is_an_invalid_response(body: bytes) -> None:
    respx.get(f"{API}/api/dnm/{VIN}").respond(200, content=body, headers={"Content-Type": "text/html"})
    error = fail(lambda c: c.dnm(VIN))
    assert error.error_type == "invalid_response"
    assert "text/html" in str(error)


@respx.mock
def test_the_vin_is_escaped_in_the_path() -> None:
    route = respx.get(f"{API}/api/dnm/A%2FB").respond(json=[])
    run(lambda c: c.dnm("A/B"))
    assert route.called


def test_base_url_shows_only_scheme_and_host() -> None:
    client = RepairsApiClient.from_settings(make_settings(repairs_api_url="https://api.example.ru:8443/v1/x"))
    assert client.base_url == "https://api.example.ru:8443"
    asyncio.run(client.aclose())


def test_from_settings_needs_a_url() -> None:
    with pytest.raises(ValueError, match="repairs_api_url"):
        RepairsApiClient.from_settings(make_settings(repairs_api_url=None))


def test_a_closed_client_refuses_requests() -> None:
    async def main() -> None:
        client = RepairsApiClient.from_settings(make_settings())
        await client.aclose()
        with pytest.raises(RuntimeError):
            await client.dnm(VIN)

    asyncio.run(main())
