from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import gzip
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import certifi
import httpx
import pytest
import respx

from py_server import __version__
from py_server.config import Settings
from py_server.demo.onec_emulator import NOT_JSON_BODY, OneCEmulator
from py_server.errors import (
    ConfigError,
    InvalidRequestError,
    OneCAuthError,
    OneCBusyError,
    OneCConnectionError,
    OneCError,
    OneCHTTPError,
    OneCProtocolError,
    OneCRedirectError,
    OneCResponseTooLarge,
    OneCRpcError,
    OneCTimeoutError,
)
from py_server.onec_client import (
    ERROR_BODY_LIMIT,
    READ_ONLY_METHODS,
    Discovery,
    OneCClient,
    _tls_context,
    create_http_client,
    strip_module_prefix,
)

from .conftest import proxy_settings

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


NOT_FOUND = {"code": -32601, "message": "Неизвестный метод: initialize"}


def without_handshake(router: respx.MockRouter) -> respx.Route:
    """POST rpc answers -32601, as backends without the MCP handshake answer `initialize`."""
    return router.post("rpc").mock(side_effect=reply(error=NOT_FOUND))


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
    ("method", "rpc_method", "key"),
    [
        ("list_tools", "tools/list", "tools"),
        ("list_resources", "resources/list", "resources"),
        ("list_resource_templates", "resources/templates/list", "resourceTemplates"),
        ("list_prompts", "prompts/list", "prompts"),
    ],
)
async def test_list_methods_send_empty_params_and_return_the_named_list(
    onec: respx.MockRouter, client: OneCClient, method: str, rpc_method: str, key: str
) -> None:
    items = [{"name": "a", "title": "extra fields pass through"}]
    route = onec.post("rpc").mock(side_effect=reply({key: items}))
    assert await getattr(client, method)() == items
    assert sent(route.calls.last.request)["method"] == rpc_method
    assert sent(route.calls.last.request)["params"] == {}


async def test_method_not_found_is_no_warning_the_caller_decides(
    onec: respx.MockRouter, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The reference extension answers -32601 to resources/templates/list at every start: that is no news.
    unknown = {"code": -32601, "message": "Неизвестный метод: resources/templates/list"}
    onec.post("rpc").mock(side_effect=reply(error=unknown))
    with caplog.at_level(logging.DEBUG, logger="py_server.onec_client"), pytest.raises(OneCRpcError) as caught:
        await client.list_resource_templates()
    assert caught.value.method_not_found
    assert [r.levelno for r in caplog.records if "-32601" in r.getMessage()] == [logging.DEBUG]


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
    expected = {"tools/list", "resources/list", "resources/templates/list", "prompts/list"}
    expected |= {"resources/read", "prompts/get", "ping"}
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
    without_handshake(onec)
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
    without_handshake(onec)
    expected = Discovery("manifest", {"tools": True, "resources": True, "prompts": False})
    assert await client.discover() == expected


@pytest.mark.parametrize("body", [b"", b"<html>ok</html>", b'{"name": "no capabilities"}', b"[]"])
async def test_discover_accepts_a_manifest_without_capabilities(
    onec: respx.MockRouter, client: OneCClient, body: bytes
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(200, content=body))
    without_handshake(onec)
    assert await client.discover() == Discovery("manifest", None)


@pytest.mark.parametrize("status", [404, 405, 400])
async def test_discover_falls_back_to_health_after_a_client_error_on_manifest(
    onec: respx.MockRouter, client: OneCClient, status: int
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(status, html=IIS_404))
    onec.get("health").mock(return_value=httpx.Response(200, json={"status": "ok"}))
    without_handshake(onec)
    assert await client.discover() == Discovery("health", None)


async def test_discover_reports_rpc_when_neither_endpoint_exists(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(404))
    onec.get("health").mock(return_value=httpx.Response(405))
    without_handshake(onec)
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
    rpc = without_handshake(onec)
    await client.discover()
    rpc_calls = rpc.call_count
    assert await client.ping() >= 0
    assert (health.call_count, rpc.call_count) == (2, rpc_calls)


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
    without_handshake(onec)
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


class Slow1C:
    """A respx responder for 1C: every call waits for `gate`; it counts the calls 1C is running."""

    def __init__(self, result: dict[str, Any] | None = None) -> None:
        self.gate = asyncio.Event()
        self.stopped = asyncio.Event()  # a call was cancelled inside 1C (the HTTP exchange ended)
        self.result = {"tools": []} if result is None else result
        self.active = self.peak = self.started = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.active += 1
        self.started += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.stopped.set()
            raise
        finally:
            self.active -= 1
        return reply(self.result)(request)


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks (and the emulator's thread) run until `condition` holds; bounded by the caller's fail_after."""
    while not condition():  # noqa: ASYNC110 - a counter on the client or the emulator, no event to await
        await asyncio.sleep(0.001)


async def test_a_cancelled_caller_leaves_at_once_but_its_exchange_keeps_the_slot_until_1c_answers() -> None:
    onec = Slow1C()
    with respx.mock(base_url=BASE) as router:
        route = router.post("rpc").mock(side_effect=onec)
        async with OneCClient(httpx.AsyncClient(base_url=BASE), max_concurrency=1) as onec_client:
            with anyio.fail_after(2):
                first = asyncio.create_task(onec_client.list_tools())
                await until(lambda: onec.active == 1)
                first.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await first
                assert (onec_client.in_flight, onec.active) == (1, 1)  # 1C still runs it, and it holds the slot
                second = asyncio.create_task(onec_client.list_tools())
                await until(lambda: onec_client.queued == 1)
                assert onec.started == 1
                onec.gate.set()
                assert await second == []
            assert (onec.peak, route.call_count, onec_client.in_flight) == (1, 2, 0)


async def test_a_call_cancelled_while_waiting_for_a_slot_never_reaches_1c() -> None:
    onec = Slow1C()
    with respx.mock(base_url=BASE) as router:
        route = router.post("rpc").mock(side_effect=onec)
        async with OneCClient(httpx.AsyncClient(base_url=BASE), max_concurrency=1) as onec_client:
            with anyio.fail_after(2):
                running = asyncio.create_task(onec_client.list_tools())
                await until(lambda: onec.active == 1)
                waiting = asyncio.create_task(onec_client.list_tools())
                await until(lambda: onec_client.queued == 1)
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                assert onec_client.queued == 0
                onec.gate.set()
                assert await running == []
            assert route.call_count == 1


async def test_waiting_for_a_slot_longer_than_the_queue_timeout_raises_busy(onec: respx.MockRouter) -> None:
    slow = Slow1C()
    onec.post("rpc").mock(side_effect=slow)
    async with OneCClient.from_settings(settings(onec_max_concurrency=1, onec_queue_timeout=0.05)) as onec_client:
        running = asyncio.create_task(onec_client.list_tools())
        with anyio.fail_after(2), pytest.raises(OneCBusyError) as caught:
            await until(lambda: slow.active == 1)
            await onec_client.call_tool("Провести", {})
        assert str(caught.value) == (
            "1C is busy: 1 call in flight (MCP_ONEC_MAX_CONCURRENCY=1) and this one waited 0.05 s "
            "(MCP_ONEC_QUEUE_TIMEOUT); try again later"
        )
        assert (slow.started, onec_client.queued) == (1, 0)
        slow.gate.set()
        await running


async def test_closing_the_client_ends_exchanges_whose_callers_left() -> None:
    onec = Slow1C()
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.post("rpc").mock(side_effect=onec)
        onec_client = OneCClient(httpx.AsyncClient(base_url=BASE), max_concurrency=1)
        with anyio.fail_after(2):
            left = asyncio.create_task(onec_client.call_tool("Отчёт", {}))
            await until(lambda: onec.active == 1)
            left.cancel()
            with pytest.raises(asyncio.CancelledError):
                await left
            await onec_client.aclose()
        assert onec.stopped.is_set()
        assert onec_client.in_flight == 0


async def test_calls_running_or_waiting_when_the_client_closes_raise_runtime_error() -> None:
    onec = Slow1C()
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.post("rpc").mock(side_effect=onec)
        onec_client = OneCClient(httpx.AsyncClient(base_url=BASE), max_concurrency=1)
        with anyio.fail_after(2):
            running = asyncio.create_task(onec_client.list_tools())
            await until(lambda: onec.active == 1)
            waiting = asyncio.create_task(onec_client.list_tools())
            await until(lambda: onec_client.queued == 1)
            await onec_client.aclose()
            with pytest.raises(RuntimeError, match="closed while tools/list was running"):
                await running
            with pytest.raises(RuntimeError, match="OneCClient is closed"):
                await waiting
        assert onec.started == 1


async def test_an_exchange_that_fails_after_its_caller_left_is_logged_and_its_error_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered, gate = asyncio.Event(), asyncio.Event()

    async def respond(request: httpx.Request) -> httpx.Response:
        entered.set()
        await gate.wait()
        raise httpx.ReadError("connection reset")

    caplog.set_level(logging.INFO)
    with respx.mock(base_url=BASE) as router:
        router.post("rpc").mock(side_effect=respond)
        async with OneCClient(httpx.AsyncClient(base_url=BASE)) as onec_client:
            with anyio.fail_after(2):
                left = asyncio.create_task(onec_client.call_tool("Отчёт", {}))
                await entered.wait()
                left.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await left
                gate.set()
                await until(lambda: any("after its caller left" in r.getMessage() for r in caplog.records))
            del left
            gc.collect()
    messages = [record.getMessage() for record in caplog.records]
    assert any("tools/call failed" in m and "after its caller left" in m for m in messages), messages
    assert not [m for m in messages if "never retrieved" in m]


async def test_1c_never_runs_more_than_the_cap_when_callers_time_out(emulator: OneCEmulator) -> None:
    emulator.state.latency = 0.5  # 1C is slower than the callers' patience
    async with OneCClient.from_settings(proxy_settings(emulator, onec_max_concurrency=2)) as onec_client:
        for _ in range(6):  # a client that gives up after 50 ms and asks again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(onec_client.list_tools(), 0.05)
            assert onec_client.in_flight <= 2
        emulator.state.latency = 0.0
        with anyio.fail_after(5):
            assert await onec_client.list_tools()
    assert emulator.state.max_in_flight == 2


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


async def test_a_new_session_cookie_from_1c_replaces_the_one_sent(onec: respx.MockRouter) -> None:
    cookies = iter(["first", None, "second", None, None])

    def answer(request: httpx.Request) -> httpx.Response:
        cookie = next(cookies)
        headers = {"Set-Cookie": f"ibsession={cookie}; Path=/base"} if cookie else {}
        return httpx.Response(200, headers=headers, json={"jsonrpc": "2.0", "id": sent(request)["id"], "result": {}})

    route = onec.post("rpc").mock(side_effect=answer)
    async with OneCClient.from_settings(settings()) as onec_client:
        for _ in range(5):
            await onec_client.request("initialize")
    sent_cookies = [call.request.headers.get("Cookie") for call in route.calls]
    assert sent_cookies == [None, "ibsession=first", "ibsession=first", "ibsession=second", "ibsession=second"]


# --- settings, factory and secrets --------------------------------------------------------


async def test_create_http_client_configures_base_url_timeouts_and_headers() -> None:
    async with create_http_client(settings(onec_timeout=90, onec_connect_timeout=5)) as http:
        assert str(http.base_url) == BASE
        assert http.timeout == httpx.Timeout(90, connect=5)
        assert not http.follow_redirects
        assert http.headers["Accept"] == "application/json"
        assert http.headers["User-Agent"] == f"onec-mcp-proxy/{__version__}"
        # Below the 5 s keep-alive of Apache and uvicorn, so a call never rides a connection being closed.
        assert http._transport._pool._keepalive_expiry == 3.0  # type: ignore[attr-defined]


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


# --- 1C's limits: response size ------------------------------------------------------------


class Body(httpx.AsyncByteStream):
    """A response body that counts how many of its bytes were read."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


async def test_an_answer_whose_content_length_exceeds_the_cap_is_refused_unread(onec: respx.MockRouter) -> None:
    body = Body([b"x" * 1000])
    onec.post("rpc").mock(return_value=httpx.Response(200, headers={"Content-Length": "1000"}, stream=body))
    async with OneCClient(httpx.AsyncClient(base_url=BASE), max_response_bytes=100) as onec_client:
        with pytest.raises(OneCResponseTooLarge):
            await onec_client.call_tool("Выгрузка", {})
    assert (body.read, body.closed) == (0, True)


async def test_an_answer_without_content_length_is_read_only_up_to_the_cap(onec: respx.MockRouter) -> None:
    body = Body([b"x" * 64] * 10)
    onec.post("rpc").mock(return_value=httpx.Response(200, stream=body))
    async with OneCClient(httpx.AsyncClient(base_url=BASE), max_response_bytes=100) as onec_client:
        with pytest.raises(OneCResponseTooLarge):
            await onec_client.call_tool("Выгрузка", {})
    assert (body.read, body.closed) == (128, True)


async def test_a_compressed_answer_is_capped_by_what_it_unpacks_to(onec: respx.MockRouter) -> None:
    # Content-Length counts the gzip bytes; the cap is on what lands in memory.
    packed = gzip.compress(b"0" * 10_000)
    headers = {"Content-Encoding": "gzip", "Content-Length": str(len(packed))}
    onec.post("rpc").mock(return_value=httpx.Response(200, headers=headers, content=packed))
    async with OneCClient(httpx.AsyncClient(base_url=BASE), max_response_bytes=1_000) as onec_client:
        with pytest.raises(OneCResponseTooLarge):
            await onec_client.call_tool("Выгрузка", {})


async def test_too_large_names_the_limit_and_the_setting(onec: respx.MockRouter) -> None:
    body = Body([])
    onec.post("rpc").mock(return_value=httpx.Response(200, headers={"Content-Length": str(65 * 2**20)}, stream=body))
    async with OneCClient.from_settings(settings()) as onec_client:
        with pytest.raises(OneCResponseTooLarge) as caught:
            await onec_client.call_tool("Выгрузка", {})
    assert str(caught.value) == (
        "1C's answer to tools/call is larger than 64 MB (MCP_ONEC_MAX_RESPONSE_MB); "
        "ask for less data or raise the setting"
    )


async def test_only_the_first_kb_of_an_error_page_are_read(onec: respx.MockRouter, client: OneCClient) -> None:
    body = Body([b"<html><title>500 - Internal server error.</title>"] + [b"<p>" + b"x" * 1021] * 100)
    onec.post("rpc").mock(return_value=httpx.Response(500, stream=body))
    with pytest.raises(OneCHTTPError, match=r"HTTP 500: 500 - Internal server error\."):
        await client.list_tools()
    assert ERROR_BODY_LIMIT <= body.read <= ERROR_BODY_LIMIT + 1024
    assert body.closed


# --- proxies --------------------------------------------------------------------------------


async def test_the_1c_client_ignores_proxies_set_in_the_environment(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with OneCClient.from_settings(proxy_settings(emulator)) as onec_client:
        assert await onec_client.list_tools()


async def test_mcp_onec_http_proxy_sends_1c_requests_through_that_proxy() -> None:
    heads: list[bytes] = []
    answer = b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "x"}}'

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        configured = settings(onec_url="http://onec.invalid/base", onec_http_proxy=f"http://127.0.0.1:{port}")
        async with OneCClient.from_settings(configured) as onec_client:
            with anyio.fail_after(5):
                await onec_client.probe(5)
    assert heads[0].startswith(b"POST http://onec.invalid/base/hs/mcp/rpc HTTP/1.1\r\n")


# --- health probe ---------------------------------------------------------------------------


async def test_probe_does_not_wait_for_a_concurrency_slot() -> None:
    slow = Slow1C()

    async def respond(request: httpx.Request) -> httpx.Response:
        if sent(request)["method"] == "ping":
            return reply(error={"code": -32601, "message": "Неизвестный метод: ping"})(request)
        return await slow(request)

    with respx.mock(base_url=BASE) as router:
        router.post("rpc").mock(side_effect=respond)
        async with OneCClient(httpx.AsyncClient(base_url=BASE), max_concurrency=1) as onec_client:
            busy = asyncio.create_task(onec_client.list_tools())
            with anyio.fail_after(2):
                await until(lambda: slow.active == 1)
                assert await onec_client.probe(1) >= 0
            slow.gate.set()
            await busy


async def test_probe_after_discovery_uses_the_discovery_endpoint(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(404))
    health = onec.get("health").mock(return_value=httpx.Response(200, json={"status": "ok"}))
    rpc = without_handshake(onec)
    await client.discover()
    rpc_calls = rpc.call_count
    assert await client.probe(1) >= 0
    assert (health.call_count, rpc.call_count) == (2, rpc_calls)


async def test_probe_without_discovery_counts_method_not_found_as_alive(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    route = without_handshake(onec)
    assert await client.probe(1) >= 0
    assert sent(route.calls.last.request)["method"] == "ping"


async def test_probe_gives_up_after_its_own_timeout(onec: respx.MockRouter, client: OneCClient) -> None:
    onec.post("rpc").mock(side_effect=Slow1C())
    with anyio.fail_after(2), pytest.raises(OneCTimeoutError) as caught:
        await client.probe(0.05)
    assert str(caught.value) == (
        "1C did not answer the health probe (ping) within 0.05 s; it may be overloaded or waiting on a lock."
    )


async def test_the_probe_gets_a_connection_while_every_slot_holds_one(emulator: OneCEmulator) -> None:
    async with OneCClient.from_settings(proxy_settings(emulator, onec_max_concurrency=1)) as onec_client:
        await onec_client.discover()
        emulator.state.latency = 1.0  # tools/list holds the one slot and its connection meanwhile
        busy = asyncio.create_task(onec_client.list_tools())
        with anyio.fail_after(5):
            await until(lambda: emulator.state.in_flight == 1)
            assert await onec_client.probe(0.5) < 0.5  # the GET manifest has no latency
        emulator.state.latency = 0.0
        assert await busy


# --- the MCP handshake ----------------------------------------------------------------------

INITIALIZE_RESULT = {
    "protocolVersion": "2025-03-26",
    "capabilities": {"tools": {"listChanged": False}},
    "serverInfo": {"name": "1C MCP Server", "version": "1.0.0"},
}


def mcp_backend(initialize: Responder, notification: httpx.Response | None = None) -> Responder:
    """POST rpc of a backend: `initialize` answers the requests, `notification` (204) the notifications."""

    def respond(request: httpx.Request) -> httpx.Response:
        if "id" not in sent(request):
            return notification if notification is not None else httpx.Response(204)
        return initialize(request)

    return respond


async def test_discover_sends_initialize_then_initialized_and_reports_the_backend(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(200, json={}))
    route = onec.post("rpc").mock(side_effect=mcp_backend(reply(INITIALIZE_RESULT)))
    discovery = await client.discover()
    assert discovery == Discovery("manifest", None, {"name": "1C MCP Server", "version": "1.0.0"}, "2025-03-26")
    assert [sent(call.request) for call in route.calls] == [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "onec-mcp-proxy", "version": __version__},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]


async def test_discover_against_the_reference_extension_reports_its_fixed_answer(emulator: OneCEmulator) -> None:
    async with OneCClient.from_settings(proxy_settings(emulator)) as onec_client:
        discovery = await onec_client.discover()
    assert (discovery.server_info, discovery.protocol_version) == (
        {"name": "1C MCP Server", "version": "1.0.0"},
        "2025-03-26",
    )
    assert emulator.state.calls["notifications/initialized"] == 1


async def test_discover_tolerates_a_backend_without_initialize_and_logs_it_at_debug(
    onec: respx.MockRouter, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(200, json={}))
    route = without_handshake(onec)
    caplog.set_level(logging.DEBUG, logger="py_server.onec_client")
    assert await client.discover() == Discovery("manifest", None, None, None)
    assert [sent(call.request)["method"] for call in route.calls] == ["initialize"]  # no notification after it
    handshake = [r for r in caplog.records if "initialize" in r.getMessage()]
    assert handshake and all(r.levelno == logging.DEBUG for r in handshake)


async def test_discover_tolerates_another_json_rpc_error_for_initialize(
    onec: respx.MockRouter, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(200, json={}))
    onec.post("rpc").mock(side_effect=reply(error={"code": -32603, "message": MODULE_ERROR}))
    caplog.set_level(logging.INFO, logger="py_server.onec_client")
    assert await client.discover() == Discovery("manifest", None, None, None)
    assert any(r.levelno == logging.INFO and "-32603" in r.getMessage() for r in caplog.records)


async def test_discover_tolerates_a_failing_initialized_notification(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(200, json={}))
    onec.post("rpc").mock(side_effect=mcp_backend(reply(INITIALIZE_RESULT), httpx.Response(500, html="<h1>x</h1>")))
    assert (await client.discover()).protocol_version == "2025-03-26"


async def test_a_connection_error_during_the_handshake_fails_discovery(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    onec.get("manifest").mock(return_value=httpx.Response(200, json={}))
    onec.post("rpc").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(OneCConnectionError, match="Cannot connect"):
        await client.discover()


# --- an expired 1C session ------------------------------------------------------------------

SESSION_COOKIE = {"Set-Cookie": "ibsession=old; Path=/base"}


def first_reply_sets_the_cookie(result: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, headers=SESSION_COOKIE, json={"jsonrpc": "2.0", "id": 1, "result": result})


@pytest.mark.parametrize(
    "gone",
    [
        httpx.Response(400, text=NOT_JSON_BODY),
        httpx.Response(200, text=NOT_JSON_BODY),
        httpx.Response(500, html=f"<html><body><h1>{NOT_JSON_BODY.upper()}</h1></body></html>"),
    ],
)
async def test_an_expired_session_drops_the_cookie_and_retries_a_read_only_call_once(
    onec: respx.MockRouter, client: OneCClient, caplog: pytest.LogCaptureFixture, gone: httpx.Response
) -> None:
    again = httpx.Response(200, json={"jsonrpc": "2.0", "id": 2, "result": {"tools": [{"name": "a"}]}})
    route = onec.post("rpc").mock(side_effect=[first_reply_sets_the_cookie({"tools": []}), gone, again])
    await client.list_tools()
    with caplog.at_level(logging.WARNING, logger="py_server.onec_client"):
        assert await client.list_tools() == [{"name": "a"}]
    assert route.calls[1].request.headers["Cookie"] == "ibsession=old"
    assert "Cookie" not in route.calls[2].request.headers
    assert "1C session expired; dropped the session cookie and retried tools/list" in caplog.messages


async def test_an_expired_session_on_tools_call_drops_the_cookie_and_is_not_retried(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    later = httpx.Response(200, json={"jsonrpc": "2.0", "id": 3, "result": {"tools": []}})
    gone = httpx.Response(400, text=NOT_JSON_BODY)
    route = onec.post("rpc").mock(side_effect=[first_reply_sets_the_cookie({"tools": []}), gone, later])
    await client.list_tools()
    with pytest.raises(OneCConnectionError) as caught:
        await client.call_tool("Провести", {"Номер": "1"})
    assert str(caught.value) == (
        "The 1C session had expired, so the tool was not run; the session cookie has been dropped: try again."
    )
    await client.list_tools()
    assert route.call_count == 3
    assert "Cookie" not in route.calls[2].request.headers


async def test_a_session_that_stays_gone_after_the_retry_raises(onec: respx.MockRouter, client: OneCClient) -> None:
    route = onec.post("rpc").mock(return_value=httpx.Response(400, text=NOT_JSON_BODY))
    with pytest.raises(OneCConnectionError, match="even after the session cookie was dropped"):
        await client.list_tools()
    assert route.call_count == 2


async def test_a_json_reply_quoting_the_session_text_is_an_ordinary_answer(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    result = {"content": [{"type": "text", "text": NOT_JSON_BODY}], "isError": True}
    route = onec.post("rpc").mock(side_effect=reply(result))
    assert await client.call_tool("Сеансы", {}) == result
    assert route.call_count == 1


async def test_the_client_carries_on_when_the_emulated_1c_ends_its_sessions(
    emulator: OneCEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with OneCClient.from_settings(proxy_settings(emulator)) as onec_client:
        await onec_client.list_tools()
        emulator.state.expire_sessions()
        with caplog.at_level(logging.WARNING, logger="py_server.onec_client"):
            assert await onec_client.list_tools()
    assert emulator.state.calls["session expired"] == 1
    assert "1C session expired; dropped the session cookie and retried tools/list" in caplog.messages


# --- text from 1C is masked -----------------------------------------------------------------


def echoing_login(kind: str) -> Responder:
    """1C (or the web server in front) quoting the request's Authorization header and the password."""

    def respond(request: httpx.Request) -> httpx.Response:
        text = f"Authorization: {request.headers['Authorization']}; Администратор:{PASSWORD}; пароль {PASSWORD}"
        if kind == "html_page":
            return httpx.Response(500, html=f"<html><title>Ошибка</title><body><p>{text}</p></body></html>")
        if kind == "not_json":
            return httpx.Response(200, text=text)
        return reply(error={"code": -32603, "message": f"Внутренняя ошибка сервера: {text}"})(request)

    return respond


@pytest.mark.parametrize("kind", ["html_page", "not_json", "rpc_error"])
async def test_1c_text_that_echoes_the_login_is_masked(
    onec: respx.MockRouter, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    onec.post("rpc").mock(side_effect=echoing_login(kind))
    token = base64.b64encode(f"Администратор:{PASSWORD}".encode()).decode()
    caplog.set_level(logging.DEBUG)
    async with OneCClient.from_settings(settings()) as onec_client:
        with pytest.raises(OneCError) as caught:
            await onec_client.call_tool("x", {})
    texts = [str(caught.value), getattr(caught.value, "detail", "")] + [r.getMessage() for r in caplog.records]
    assert "Authorization: Basic ***" in str(caught.value)
    assert not [text for text in texts if PASSWORD in text or token in text]


# --- arguments that are not JSON ------------------------------------------------------------


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
async def test_nan_or_infinity_in_arguments_is_an_invalid_request_and_nothing_is_sent(
    onec: respx.MockRouter, client: OneCClient, number: float
) -> None:
    route = onec.post("rpc").mock(side_effect=reply({}))
    with pytest.raises(InvalidRequestError) as caught:
        await client.call_tool("Расчёт", {"Сумма": number})
    assert str(caught.value) == "the arguments of tools/call are not valid JSON: NaN and Infinity are not JSON numbers"
    assert not route.called


def test_every_client_shares_one_tls_context_per_ca_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first, second = _tls_context(settings()), _tls_context(settings(onec_username="другой"))
    assert first is second  # loading the CA certificates once, not once per person's connection
    bundle = tmp_path / "company-ca.pem"
    bundle.write_text(Path(certifi.where()).read_text(encoding="ascii"), encoding="ascii")
    with_bundle = _tls_context(settings(onec_ca_bundle=bundle))
    assert with_bundle is not first and with_bundle is _tls_context(settings(onec_ca_bundle=bundle))
    assert _tls_context(settings(onec_verify_tls=False)) is not first
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert _tls_context(settings()) is not first  # another CA setting, another context


CERT_TEXT = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"


async def test_a_refused_certificate_says_so_and_what_to_set_instead_of_is_the_server_running(
    onec: respx.MockRouter, client: OneCClient
) -> None:
    route = onec.post("rpc").mock(side_effect=httpx.ConnectError(CERT_TEXT))
    with pytest.raises(OneCConnectionError) as caught:
        await client.list_tools()  # read-only, but a refused certificate is refused again: no retry
    assert str(caught.value) == (
        "1C's HTTPS certificate at http://srv is not trusted ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
        "failed: self-signed certificate): set MCP_ONEC_CA_BUNDLE to the PEM file of the CA that signed it, or, "
        "on a trusted network only, MCP_ONEC_VERIFY_TLS=false."
    )
    assert route.call_count == 1


def over_ssl(error: type[httpx.RequestError], cause: BaseException) -> httpx.RequestError:
    """An httpx error over an ssl one, chained as httpx and httpcore chain them."""
    try:
        raise error(str(cause)) from cause
    except httpx.RequestError as exc:
        return exc


def client_failing_with(*failures: httpx.RequestError) -> tuple[OneCClient, list[httpx.Request]]:
    """A client whose transport raises `failures` in turn (respx would replace their causes), then
    answers with an empty tools list; and the requests it was sent."""
    sent_requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent_requests.append(request)
        if len(sent_requests) <= len(failures):
            raise failures[len(sent_requests) - 1]
        return reply({"tools": []})(request)

    http = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(handle))
    return OneCClient(http, username="Администратор"), sent_requests


async def test_another_failed_handshake_is_a_tls_line_too() -> None:
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version (_ssl.c:1006)")
    client, _ = client_failing_with(over_ssl(httpx.ConnectError, alert))
    async with client:
        with pytest.raises(OneCConnectionError) as caught:
            await client.call_tool("x", {})
    assert str(caught.value) == (
        "The TLS handshake with 1C's web server at http://srv failed: [SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 "
        "alert protocol version. Check the web server's HTTPS settings (certificate, TLS versions, ciphers)."
    )


async def test_an_ssl_error_on_a_connection_that_was_up_is_a_dropped_connection_and_retried() -> None:
    # A keep-alive connection 1C's web server closed: on HTTPS the read ends in an ssl EOF error.
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)")
    client, requests = client_failing_with(over_ssl(httpx.ReadError, eof))
    async with client:
        assert await client.list_tools() == []
    assert len(requests) == 2
    client, _ = client_failing_with(*[over_ssl(httpx.ReadError, eof)] * 2)
    async with client:
        with pytest.raises(OneCConnectionError, match=r"dropped the connection during tools/list: EOF occurred"):
            await client.list_tools()


async def test_a_refused_certificate_is_not_retried() -> None:
    refused = ssl.SSLCertVerificationError(1, CERT_TEXT)
    refused.verify_code, refused.verify_message = 18, "self-signed certificate"
    client, requests = client_failing_with(*[over_ssl(httpx.ConnectError, refused)] * 2)
    async with client:
        with pytest.raises(OneCConnectionError, match=r"^1C's HTTPS certificate at http://srv is not trusted \(self"):
            await client.list_tools()
    assert len(requests) == 1
