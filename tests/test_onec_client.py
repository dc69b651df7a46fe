from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from py_server import __version__
from py_server.config import Settings
from py_server.errors import (
    ConfigError,
    OneCAuthError,
    OneCConnectionError,
    OneCError,
    OneCHTTPError,
    OneCProtocolError,
    OneCRedirectError,
    OneCRpcError,
    OneCTimeoutError,
)
from py_server.onec_client import (
    READ_ONLY_METHODS,
    Discovery,
    OneCClient,
    create_http_client,
    strip_module_prefix,
)

pytestmark = pytest.mark.anyio

BASE = "http://srv/base/hs/mcp/"
RPC = BASE + "rpc"
PASSWORD = "s3cr3t-Пароль"
MODULE_ERROR = "Внутренняя ошибка сервера: {ОбщийМодуль.mcp_APIBackend.Модуль(263)}: Инструмент 'foo' не найден"
IIS_404 = (
    "<!DOCTYPE html><html><head><title>404 - File or directory not found.</title>"
    "<style>body{font-size:.7em}</style></head><body><div id='header'><h1>Server Error</h1></div>"
    "<div><h2>404 - File or directory not found.</h2>\n\n<h3>The resource   you are looking for"
    " might have been removed.</h3></div></body></html>"
)

Responder = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def onec() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def client() -> AsyncIterator[OneCClient]:
    async with OneCClient(httpx.AsyncClient(base_url=BASE), username="Администратор") as onec_client:
        yield onec_client


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "onec_url": "http://srv/base",
        "onec_username": "Администратор",
        "onec_password": PASSWORD,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def sent(request: httpx.Request) -> dict[str, Any]:
    return json.loads(request.content)  # type: ignore[no-any-return]


def reply(result: Any = None, *, error: dict[str, Any] | None = None, **envelope: Any) -> Responder:
    """A responder echoing the request id with `result` or `error` (envelope keys override)."""

    def respond(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": sent(request)["id"]}
        body.update({"error": error} if error is not None else {"result": result})
        body.update(envelope)
        return httpx.Response(200, json=body)

    return respond


# --- JSON-RPC requests --------------------------------------------------------------------


async def test_request_posts_a_utf8_json_rpc_envelope_and_returns_the_result(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    route = onec.post("rpc").mock(side_effect=reply({"ok": "да"}))
    assert await client.request("tools/call", {"name": "Остатки", "arguments": {}}) == {"ok": "да"}
    request = route.calls.last.request
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "Остатки".encode() in request.content
    assert sent(request) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "Остатки", "arguments": {}},
    }


async def test_each_request_gets_a_distinct_id(onec: respx.MockRouter, client: OneCClient) -> None:
    route = onec.post("rpc").mock(side_effect=reply({}))
    for _ in range(3):
        await client.request("initialize")
    assert [sent(call.request)["id"] for call in route.calls] == [1, 2, 3]


async def test_request_without_params_omits_params(onec: respx.MockRouter, client: OneCClient) -> None:
    route = onec.post("rpc").mock(side_effect=reply({}))
    await client.request("initialize")
    assert "params" not in sent(route.calls.last.request)


@pytest.mark.parametrize(
    ("method", "key"), [("list_tools", "tools"), ("list_resources", "resources"), ("list_prompts", "prompts")]
)
async def test_list_methods_send_empty_params_and_return_the_named_list(
    onec: respx.MockRouter, client: OneCClient, method: str, key: str
) -> None:
    items = [{"name": "a", "title": "extra fields pass through"}]
    route = onec.post("rpc").mock(side_effect=reply({key: items}))
    assert await getattr(client, method)() == items
    assert sent(route.calls.last.request)["params"] == {}


@pytest.mark.parametrize("result", [{}, {"tools": None}, {"tools": {"a": 1}}, {"tools": ["a"]}])
async def test_tools_list_without_a_list_of_objects_raises_protocol_error(
    onec: respx.MockRouter, client: OneCClient, result: dict[str, Any]
) -> None:
    onec.post("rpc").mock(side_effect=reply(result))
    with pytest.raises(OneCProtocolError, match="tools/list"):
        await client.list_tools()


async def test_call_tool_sends_name_and_arguments_and_passes_the_result_through(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    result = {"content": [{"type": "text", "text": "Ошибка"}], "isError": True, "_meta": {"x": 1}}
    route = onec.post("rpc").mock(side_effect=reply(result))
    assert await client.call_tool("file_name", {"Склад": "Основной"}) == result
    assert sent(route.calls.last.request)["params"] == {"name": "file_name", "arguments": {"Склад": "Основной"}}


async def test_read_resource_sends_the_uri_byte_for_byte(onec: respx.MockRouter, client: OneCClient) -> None:
    uri = "metadata://Справочники/Номенклатура?a=b c&d=%20/"
    route = onec.post("rpc").mock(side_effect=reply({"contents": []}))
    await client.read_resource(uri)
    assert json.dumps(uri, ensure_ascii=False).encode() in route.calls.last.request.content
    assert sent(route.calls.last.request)["params"] == {"uri": uri}


async def test_get_prompt_without_arguments_sends_empty_arguments(onec: respx.MockRouter, client: OneCClient) -> None:
    route = onec.post("rpc").mock(side_effect=reply({"messages": []}))
    await client.get_prompt("Отчёт", None)
    assert sent(route.calls.last.request)["params"] == {"name": "Отчёт", "arguments": {}}


async def test_reply_with_a_utf8_bom_is_accepted(onec: respx.MockRouter, client: OneCClient) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        body = json.dumps({"jsonrpc": "2.0", "id": sent(request)["id"], "result": {"т": 1}}, ensure_ascii=False)
        return httpx.Response(200, content=b"\xef\xbb\xbf" + body.encode())

    onec.post("rpc").mock(side_effect=respond)
    assert await client.request("initialize") == {"т": 1}


async def test_reply_with_another_id_raises_protocol_error_naming_both_ids(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.post("rpc").mock(side_effect=reply({}, id=99))
    with pytest.raises(OneCProtocolError, match=r"id 99, but the request had id 1"):
        await client.request("initialize")


async def test_reply_with_boolean_id_does_not_match_id_one(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(side_effect=reply({}, id=True))
    with pytest.raises(OneCProtocolError, match="id True"):
        await client.request("initialize")


async def test_reply_without_jsonrpc_2_0_raises_protocol_error(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(side_effect=reply({}, jsonrpc="1.0"))
    with pytest.raises(OneCProtocolError, match=r"not a JSON-RPC 2\.0 reply"):
        await client.request("initialize")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null"])
async def test_reply_that_is_not_an_object_raises_protocol_error(
    onec: respx.MockRouter, client: OneCClient, body: bytes
) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(OneCProtocolError, match=r"not a JSON-RPC 2\.0 reply"):
        await client.request("initialize")


async def test_reply_with_neither_result_nor_error_raises_protocol_error(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(200, json={"jsonrpc": "2.0", "id": 1}))
    with pytest.raises(OneCProtocolError, match="either result or error"):
        await client.request("initialize")


async def test_reply_with_both_result_and_error_raises_protocol_error(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1, "message": "x"}}
    onec.post("rpc").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(OneCProtocolError, match="either result or error"):
        await client.request("initialize")


async def test_result_that_is_not_an_object_raises_protocol_error(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(side_effect=reply([1]))
    with pytest.raises(OneCProtocolError, match="non-object result"):
        await client.request("initialize")


# --- JSON-RPC errors ----------------------------------------------------------------------


async def test_rpc_error_raises_rpc_error_without_the_module_prefix(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(side_effect=reply(error={"code": -32603, "message": MODULE_ERROR}))
    with pytest.raises(OneCRpcError) as caught:
        await client.call_tool("foo", {})
    assert str(caught.value) == "1C returned error -32603: Внутренняя ошибка сервера: Инструмент 'foo' не найден"
    assert (caught.value.code, caught.value.detail) == (-32603, MODULE_ERROR)


async def test_rpc_error_logs_the_full_message_at_warning(
    onec: respx.MockRouter, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    onec.post("rpc").mock(side_effect=reply(error={"code": -32603, "message": MODULE_ERROR}))
    with caplog.at_level(logging.WARNING, logger="py_server.onec_client"), pytest.raises(OneCRpcError):
        await client.call_tool("foo", {})
    assert any(r.levelno == logging.WARNING and MODULE_ERROR in r.getMessage() for r in caplog.records)


async def test_rpc_error_with_null_id_is_still_an_rpc_error(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(side_effect=reply(error={"code": -32600, "message": "Неподдерживаемая версия"}, id=None))
    with pytest.raises(OneCRpcError, match="-32600"):
        await client.request("initialize")


@pytest.mark.parametrize("error", ["oops", {"code": "x", "message": "m"}, {"code": 1}, {"code": True, "message": ""}])
async def test_malformed_error_object_raises_protocol_error(
    onec: respx.MockRouter, client: OneCClient, error: Any
) -> None:
    onec.post("rpc").mock(side_effect=reply(error=error) if isinstance(error, dict) else reply({}, error=error))
    with pytest.raises(OneCProtocolError, match="lacks a code or message"):
        await client.request("initialize")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (MODULE_ERROR, "Внутренняя ошибка сервера: Инструмент 'foo' не найден"),
        ("{ОбщийМодуль.mcp_APIBackend.Модуль(263)}: Инструмент не найден", "Инструмент не найден"),
        ("{ВнешняяОбработка.Тест.Форма.Форма.Форма(12,5)}: Деление на 0", "Деление на 0"),
        ("Ошибка: {Модуль1(10)}: вызов: {Модуль2(5)}: причина", "Ошибка: вызов: причина"),
        ("{(3, 5)}: Поле не найдено", "{(3, 5)}: Поле не найдено"),
        ("Значение {не модуль}: текст", "Значение {не модуль}: текст"),
        ("plain text", "plain text"),
    ],
)
def test_strip_module_prefix_removes_only_module_locations(message: str, expected: str) -> None:
    assert strip_module_prefix(message) == expected


# --- HTTP statuses and bodies -------------------------------------------------------------


async def test_html_error_page_raises_http_error_with_title_and_visible_text(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(500, html=IIS_404.replace("404", "500")))
    with pytest.raises(OneCHTTPError) as caught:
        await client.list_tools()
    message = str(caught.value)
    assert caught.value.status_code == 500
    excerpt = "Server Error 500 - File or directory not found. The resource you are looking for might have been removed"
    assert f"HTTP 500: {excerpt}. See the web server" in message
    assert "<" not in message and "font-size" not in message


async def test_http_error_excerpt_is_at_most_200_characters(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(502, html=f"<p>{'Ошибка шлюза ' * 100}</p>"))
    with pytest.raises(OneCHTTPError) as caught:
        await client.list_tools()
    excerpt = str(caught.value).split("HTTP 502: ", 1)[1].rsplit(". See the web server", 1)[0]
    assert len(excerpt) == 200
    assert excerpt.endswith("…")


async def test_404_on_rpc_names_the_service_root_and_rpc_path_settings(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(404, html=IIS_404))
    with pytest.raises(OneCHTTPError, match="MCP_ONEC_SERVICE_ROOT and MCP_ONEC_RPC_PATH") as caught:
        await client.list_tools()
    assert caught.value.status_code == 404


async def test_non_json_200_raises_protocol_error_with_an_excerpt(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(200, html="<html><title>Вход</title><b>Войдите</b></html>"))
    with pytest.raises(OneCProtocolError, match=r"HTTP 200 but not JSON: Вход Войдите\. Check MCP_ONEC_URL"):
        await client.list_tools()


async def test_non_utf8_200_raises_protocol_error(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(200, content='{"id": "Ошибка"}'.encode("cp1251")))
    with pytest.raises(OneCProtocolError, match="not JSON"):
        await client.list_tools()


async def test_401_raises_auth_error_naming_the_user(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(401, headers={"WWW-Authenticate": "Basic"}, html="<p>x</p>"))
    with pytest.raises(OneCAuthError) as caught:
        await client.list_tools()
    assert str(caught.value) == (
        "1C rejected the login for user 'Администратор' (HTTP 401). Check MCP_ONEC_USERNAME and MCP_ONEC_PASSWORD."
    )
    assert caught.value.status_code == 401


async def test_403_raises_auth_error_about_rights(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(403, html="<p>Forbidden</p>"))
    with pytest.raises(OneCAuthError, match=r"'Администратор' has no right .*\(HTTP 403\).*1C configurator"):
        await client.list_tools()


async def test_redirect_raises_redirect_error_and_is_not_followed(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(302, headers={"Location": "http://srv/Base/hs/mcp/rpc"}))
    with pytest.raises(OneCRedirectError) as caught:
        await client.list_tools()
    assert caught.value.status_code == 302
    assert "http://srv/Base/hs/mcp/rpc" in str(caught.value)
    assert "case of the base name" in str(caught.value)
    assert onec.calls.call_count == 1


# --- transport failures -------------------------------------------------------------------


async def test_connect_error_raises_connection_error_with_url_and_hint(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.post("rpc").mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(OneCConnectionError) as caught:
        await client.call_tool("x", {})
    assert str(caught.value) == (
        f"Cannot connect to 1C at {RPC}: [Errno 111] Connection refused. "
        "Is the web server running and the base published? Check MCP_ONEC_URL."
    )
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_connect_timeout_names_the_connect_timeout_setting_and_value(onec: respx.MockRouter) -> None:
    onec.post("rpc").mock(side_effect=httpx.ConnectTimeout("timed out"))
    async with OneCClient.from_settings(settings(onec_connect_timeout=7)) as onec_client:
        with pytest.raises(OneCConnectionError, match=r"within 7 s \(MCP_ONEC_CONNECT_TIMEOUT\)"):
            await onec_client.call_tool("x", {})


@pytest.mark.parametrize("raised", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout])
async def test_read_write_and_pool_timeouts_raise_timeout_error_with_method_and_value(
    onec: respx.MockRouter, client: OneCClient, raised: type[httpx.TimeoutException]
) -> None:
    onec.post("rpc").mock(side_effect=raised("timed out"))
    with pytest.raises(OneCTimeoutError, match=r"^1C did not answer tools/call within 120 s \(MCP_ONEC_TIMEOUT\)"):
        await client.call_tool("x", {})


async def test_timeout_message_uses_the_configured_timeout(onec: respx.MockRouter) -> None:
    onec.post("rpc").mock(side_effect=httpx.ReadTimeout("timed out"))
    async with OneCClient.from_settings(settings(onec_timeout=300.5)) as onec_client:
        with pytest.raises(OneCTimeoutError, match=r"within 300.5 s"):
            await onec_client.list_tools()


async def test_dropped_connection_raises_connection_error(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(side_effect=httpx.RemoteProtocolError("Server disconnected without sending a response."))
    with pytest.raises(OneCConnectionError, match="dropped the connection during tools/call"):
        await client.call_tool("x", {})


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx.ConnectError, OneCConnectionError),
        (httpx.ConnectTimeout, OneCConnectionError),
        (httpx.ReadTimeout, OneCTimeoutError),
        (httpx.WriteTimeout, OneCTimeoutError),
        (httpx.PoolTimeout, OneCTimeoutError),
        (httpx.ReadError, OneCConnectionError),
        (httpx.WriteError, OneCConnectionError),
        (httpx.CloseError, OneCConnectionError),
        (httpx.RemoteProtocolError, OneCConnectionError),
        (httpx.LocalProtocolError, OneCConnectionError),
        (httpx.ProxyError, OneCConnectionError),
        (httpx.UnsupportedProtocol, OneCConnectionError),
        (httpx.DecodingError, OneCProtocolError),
        (httpx.TooManyRedirects, OneCConnectionError),
    ],
)
async def test_every_httpx_request_error_maps_into_the_onec_error_tree(
    onec: respx.MockRouter, client: OneCClient, raised: type[httpx.RequestError], expected: type[OneCError]
) -> None:
    onec.post("rpc").mock(side_effect=raised("boom"))
    with pytest.raises(expected) as caught:
        await client.call_tool("x", {})
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, raised)


# --- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "result"),
    [
        (lambda c: c.list_tools(), {"tools": []}),
        (lambda c: c.list_resources(), {"resources": []}),
        (lambda c: c.list_prompts(), {"prompts": []}),
        (lambda c: c.read_resource("x://y"), {"contents": []}),
        (lambda c: c.get_prompt("p", {}), {"messages": []}),
        (lambda c: c.ping(), {}),
    ],
)
async def test_read_only_calls_are_retried_once_after_a_connect_error(
    onec: respx.MockRouter, client: OneCClient, call: Callable[[OneCClient], Any], result: dict[str, Any]
) -> None:
    route = onec.post("rpc").mock(side_effect=[httpx.ConnectError("refused"), reply(result)])
    await call(client)
    assert route.call_count == 2


def test_read_only_methods_are_exactly_the_safe_ones() -> None:
    expected = {"tools/list", "resources/list", "prompts/list", "resources/read", "prompts/get", "ping"}
    assert expected == READ_ONLY_METHODS


async def test_read_only_call_is_retried_after_a_dropped_keep_alive_connection(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    route = onec.post("rpc").mock(side_effect=[httpx.ReadError("reset"), reply({"tools": []})])
    assert await client.list_tools() == []
    assert route.call_count == 2


async def test_read_only_call_fails_after_the_second_connect_error(onec: respx.MockRouter, client: OneCClient) -> None:
    route = onec.post("rpc").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(OneCConnectionError):
        await client.list_tools()
    assert route.call_count == 2


async def test_tools_call_is_never_retried(onec: respx.MockRouter, client: OneCClient) -> None:
    route = onec.post("rpc").mock(side_effect=[httpx.ConnectError("refused"), reply({"content": []})])
    with pytest.raises(OneCConnectionError):
        await client.call_tool("Провести", {})
    assert route.call_count == 1


async def test_timeouts_are_never_retried(onec: respx.MockRouter, client: OneCClient) -> None:
    route = onec.post("rpc").mock(side_effect=[httpx.ReadTimeout("slow"), reply({"tools": []})])
    with pytest.raises(OneCTimeoutError):
        await client.list_tools()
    assert route.call_count == 1


async def test_discovery_get_is_retried_once_after_a_connect_error(onec: respx.MockRouter, client: OneCClient) -> None:
    route = onec.get("manifest").mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(200)])
    assert await client.discover() == Discovery("manifest", None)
    assert route.call_count == 2


# --- notifications ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [204, 202, 200])
async def test_notify_sends_no_id_and_accepts_204_202_and_200(
    onec: respx.MockRouter, client: OneCClient, status: int
) -> None:
    route = onec.post("rpc").mock(return_value=httpx.Response(status))
    await client.notify("notifications/initialized")
    assert sent(route.calls.last.request) == {"jsonrpc": "2.0", "method": "notifications/initialized"}


async def test_notify_with_an_unexpected_success_status_raises_protocol_error(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(201))
    with pytest.raises(OneCProtocolError, match="HTTP 201"):
        await client.notify("notifications/initialized")


async def test_notify_with_an_error_status_raises_http_error(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(500, html="<h1>Ошибка</h1>"))
    with pytest.raises(OneCHTTPError, match="HTTP 500: Ошибка"):
        await client.notify("notifications/initialized")


# --- discovery and ping -------------------------------------------------------------------


async def test_discover_reads_capabilities_from_a_json_manifest(onec: respx.MockRouter, client: OneCClient) -> None:
    manifest = {"capabilities": {"tools": {"listChanged": True}, "resources": {}}}
    onec.get("manifest").mock(return_value=httpx.Response(200, json=manifest))
    expected = Discovery("manifest", {"tools": True, "resources": True, "prompts": False})
    assert await client.discover() == expected


@pytest.mark.parametrize("body", [b"", b"<html>ok</html>", b'{"name": "no capabilities"}', b"[]"])
async def test_discover_accepts_a_manifest_without_capabilities(
    onec: respx.MockRouter, client: OneCClient, body: bytes
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(200, content=body))
    assert await client.discover() == Discovery("manifest", None)


@pytest.mark.parametrize("status", [404, 405, 400])
async def test_discover_falls_back_to_health_after_a_client_error_on_manifest(
    onec: respx.MockRouter, client: OneCClient, status: int
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(status, html=IIS_404))
    onec.get("health").mock(return_value=httpx.Response(200, json={"status": "ok"}))
    assert await client.discover() == Discovery("health", None)


async def test_discover_reports_rpc_when_neither_endpoint_exists(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(404))
    onec.get("health").mock(return_value=httpx.Response(405))
    assert await client.discover() == Discovery("rpc", None)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(401), OneCAuthError),
        (httpx.Response(403), OneCAuthError),
        (httpx.Response(301, headers={"Location": "http://srv/Base/hs/mcp/manifest"}), OneCRedirectError),
        (httpx.Response(500, html=IIS_404), OneCHTTPError),
    ],
)
async def test_discover_raises_on_auth_redirect_and_server_errors(
    onec: respx.MockRouter, client: OneCClient, response: httpx.Response, expected: type[OneCError]
) -> None:
    onec.get("manifest").mock(return_value=response)
    health = onec.get("health").mock(return_value=httpx.Response(200))
    with pytest.raises(expected):
        await client.discover()
    assert not health.called


async def test_discover_raises_timeout_without_falling_back(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.get("manifest").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(OneCTimeoutError, match="GET manifest"):
        await client.discover()


async def test_ping_after_discovery_uses_the_endpoint_that_answered(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(404))
    health = onec.get("health").mock(return_value=httpx.Response(200, json={"status": "ok"}))
    rpc = onec.post("rpc")
    await client.discover()
    assert await client.ping() >= 0
    assert (health.call_count, rpc.called) == (2, False)


async def test_ping_without_discovery_counts_method_not_found_as_alive(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    route = onec.post("rpc").mock(side_effect=reply(error={"code": -32601, "message": "Неизвестный метод: ping"}))
    assert await client.ping() >= 0
    assert sent(route.calls.last.request)["method"] == "ping"


async def test_ping_with_a_non_json_rpc_answer_raises_protocol_error(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.post("rpc").mock(return_value=httpx.Response(200, text="OK"))
    with pytest.raises(OneCProtocolError):
        await client.ping()


async def test_ping_after_discovery_raises_when_the_endpoint_fails(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.get("manifest").mock(side_effect=[httpx.Response(200), httpx.Response(503, html="<h1>Unavailable</h1>")])
    await client.discover()
    with pytest.raises(OneCHTTPError, match="HTTP 503"):
        await client.ping()


# --- concurrency, cancellation, lifecycle -------------------------------------------------


async def test_at_most_max_concurrency_calls_are_in_flight() -> None:
    active, peak = 0, 0
    full, gate = asyncio.Event(), asyncio.Event()

    async def respond(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == 3:
            full.set()
        await gate.wait()
        active -= 1
        return reply({"tools": []})(request)

    with respx.mock(base_url=BASE) as router:
        router.post("rpc").mock(side_effect=respond)
        async with OneCClient(httpx.AsyncClient(base_url=BASE), max_concurrency=3) as onec_client:
            tasks = [asyncio.create_task(onec_client.list_tools()) for _ in range(10)]
            await full.wait()
            for _ in range(20):  # let every waiting task try to get a slot
                await asyncio.sleep(0)
            assert (onec_client.in_flight, peak) == (3, 3)
            gate.set()
            await asyncio.gather(*tasks)
            assert (onec_client.in_flight, peak, router.calls.call_count) == (0, 3, 10)


async def test_cancelled_call_releases_its_slot() -> None:
    entered, never = asyncio.Event(), asyncio.Event()

    async def respond(request: httpx.Request) -> httpx.Response:
        if sent(request)["id"] == 1:
            entered.set()
            await never.wait()
        return reply({"tools": []})(request)

    with respx.mock(base_url=BASE) as router:
        router.post("rpc").mock(side_effect=respond)
        async with OneCClient(httpx.AsyncClient(base_url=BASE), max_concurrency=1) as onec_client:
            pending = asyncio.create_task(onec_client.list_tools())
            await entered.wait()
            assert onec_client.in_flight == 1
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            assert onec_client.in_flight == 0
            assert await onec_client.list_tools() == []


async def test_calls_after_close_raise_runtime_error(client: OneCClient) -> None:
    await client.aclose()
    with pytest.raises(RuntimeError, match="OneCClient is closed"):
        await client.list_tools()
    with pytest.raises(RuntimeError, match="OneCClient is closed"):
        await client.discover()


async def test_leaving_the_context_closes_the_http_client() -> None:
    http = httpx.AsyncClient(base_url=BASE)
    async with OneCClient(http):
        pass
    assert http.is_closed


async def test_one_pooled_client_keeps_the_1c_session_cookie(onec: respx.MockRouter) -> None:
    cookie = {"Set-Cookie": "ibsession=abc; Path=/base"}
    route = onec.post("rpc").mock(
        side_effect=[httpx.Response(200, headers=cookie, json={"jsonrpc": "2.0", "id": 1, "result": {}}), reply({})]
    )
    async with OneCClient.from_settings(settings()) as onec_client:
        await onec_client.request("initialize")
        await onec_client.request("initialize")
    assert route.calls[1].request.headers["Cookie"] == "ibsession=abc"


# --- settings, factory and secrets --------------------------------------------------------


async def test_create_http_client_configures_base_url_timeouts_and_headers() -> None:
    async with create_http_client(settings(onec_timeout=90, onec_connect_timeout=5)) as http:
        assert str(http.base_url) == BASE
        assert http.timeout == httpx.Timeout(90, connect=5)
        assert not http.follow_redirects
        assert http.headers["Accept"] == "application/json"
        assert http.headers["User-Agent"] == f"onec-mcp-proxy/{__version__}"


async def test_basic_auth_is_sent_with_a_cyrillic_user(onec: respx.MockRouter) -> None:
    route = onec.post("rpc").mock(side_effect=reply({}))
    async with OneCClient.from_settings(settings()) as onec_client:
        await onec_client.request("initialize")
    token = base64.b64encode(f"Администратор:{PASSWORD}".encode()).decode()
    assert route.calls.last.request.headers["Authorization"] == f"Basic {token}"


async def test_no_auth_header_without_a_username(onec: respx.MockRouter) -> None:
    route = onec.post("rpc").mock(side_effect=reply({}))
    async with OneCClient.from_settings(settings(onec_username="", onec_password="")) as onec_client:
        await onec_client.request("initialize")
    assert "Authorization" not in route.calls.last.request.headers


def test_create_http_client_without_a_url_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="MCP_ONEC_URL"):
        create_http_client(settings(onec_url=None))


async def test_rpc_at_the_service_root_posts_to_the_root(onec: respx.MockRouter) -> None:
    route = onec.post("").mock(side_effect=reply({"tools": []}))
    async with OneCClient.from_settings(settings(onec_rpc_path="/")) as onec_client:
        assert onec_client.rpc_url == BASE
        await onec_client.list_tools()
    assert str(route.calls.last.request.url) == BASE


async def test_urls_never_contain_credentials() -> None:
    async with OneCClient(httpx.AsyncClient(base_url="http://user:pw@srv/base/hs/mcp")) as onec_client:
        assert (onec_client.base_url, onec_client.rpc_url) == ("http://srv/base/hs/mcp", RPC)


def test_max_concurrency_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        OneCClient(httpx.AsyncClient(base_url=BASE), max_concurrency=0)


async def test_password_never_appears_in_logs_errors_or_repr(
    onec: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    onec.post("rpc").mock(side_effect=[reply({"tools": []}), httpx.Response(401, html="<p>Unauthorized</p>")])
    token = base64.b64encode(f"Администратор:{PASSWORD}".encode()).decode()
    caplog.set_level(logging.DEBUG)
    async with OneCClient.from_settings(settings()) as onec_client:
        await onec_client.list_tools()
        with pytest.raises(OneCAuthError) as caught:
            await onec_client.list_tools()
        texts = [record.getMessage() for record in caplog.records] + [str(caught.value), repr(onec_client)]
    assert any("tools/list id=1: HTTP 200" in text for text in texts)
    assert not [text for text in texts if PASSWORD in text or token in text]
