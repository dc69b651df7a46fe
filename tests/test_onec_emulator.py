"""The demo 1C base must behave like the 1C HTTP service of the contract, quirks included,
and everything it serves must be valid MCP once the proxy's two documented mappings are applied
(drop `type` from resource contents, map role "system")."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import re
import struct
import time
import wave
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
from mcp import types

from py_server.demo.chart import PNG_SIGNATURE, bar_chart, encode_png
from py_server.demo.onec_data import RIGHT_POSTING, CallContext, demo_tools, text_result
from py_server.demo.onec_emulator import BOM, NOT_JSON_BODY, SESSION_COOKIE, EmulatorState, OneCEmulator

INTERNAL = re.compile(r"Внутренняя ошибка сервера: \{[^}]+\(\d+\)\}: (?P<text>.+)", re.S)
PERIOD = {"period_start": "2024-01-01", "period_end": "2024-03-31"}


@pytest.fixture(scope="module")
def server() -> Iterator[OneCEmulator]:
    with OneCEmulator() as emulator:
        yield emulator


@pytest.fixture
def onec(server: OneCEmulator) -> Iterator[OneCEmulator]:
    yield server
    fresh = EmulatorState()  # put every knob, registry and counter back for the next test
    for item in dataclasses.fields(EmulatorState):
        if item.init:
            setattr(server.state, item.name, getattr(fresh, item.name))


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(auth=("demo", "demo"), timeout=5) as client:
        yield client


def post(http: httpx.Client, onec: OneCEmulator, payload: dict[str, Any]) -> httpx.Response:
    return http.post(onec.rpc_url, content=json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def rpc(http: httpx.Client, onec: OneCEmulator, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    response = post(http, onec, {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    return response.json()


def result(http: httpx.Client, onec: OneCEmulator, method: str, params: dict[str, Any] | None = None) -> Any:
    reply = rpc(http, onec, method, params)
    assert "error" not in reply, reply
    return reply["result"]


def internal_text(reply: dict[str, Any]) -> str:
    assert reply["error"]["code"] == -32603
    assert set(reply["error"]) == {"code", "message"}  # 1C sends no error.data
    match = INTERNAL.fullmatch(reply["error"]["message"])
    assert match, reply["error"]["message"]
    return match["text"]


def call(http: httpx.Client, onec: OneCEmulator, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return result(http, onec, "tools/call", {"name": name, "arguments": arguments})


def round_trips(model: type[Any], data: dict[str, Any]) -> None:
    """Valid MCP, and nothing unknown dropped or added on the way."""
    assert model.model_validate(data).model_dump(mode="json", by_alias=True, exclude_unset=True) == data


# --- JSON-RPC contract ----------------------------------------------------------------------


def test_initialize_is_the_fixed_answer(onec: OneCEmulator, http: httpx.Client) -> None:
    assert result(http, onec, "initialize", {"protocolVersion": "2025-11-25"}) == {
        "protocolVersion": "2025-03-26",
        "capabilities": {
            "tools": {"listChanged": False},
            "resources": {"subscribe": False, "listChanged": False},
            "prompts": {"listChanged": False},
        },
        "serverInfo": {"name": "1C MCP Server", "version": "1.0.0"},
    }


@pytest.mark.parametrize("request_id", [0, 1, 2**40, 1.5, "abc", "Запрос-1"])
def test_id_is_echoed_verbatim(onec: OneCEmulator, http: httpx.Client, request_id: object) -> None:
    for method in ("tools/list", "ping"):  # results and errors alike
        reply = post(http, onec, {"jsonrpc": "2.0", "id": request_id, "method": method}).json()
        assert reply["id"] == request_id and type(reply["id"]) is type(request_id)


@pytest.mark.parametrize("payload", [{"method": "notifications/initialized"}, {"method": "tools/list", "id": None}])
def test_notification_gets_204_and_empty_body(onec: OneCEmulator, http: httpx.Client, payload: dict[str, Any]) -> None:
    response = post(http, onec, {"jsonrpc": "2.0", **payload})
    assert (response.status_code, response.content) == (204, b"")


@pytest.mark.parametrize("version", ["1.0", None, 2.0])
def test_wrong_version_is_32600(onec: OneCEmulator, http: httpx.Client, version: object) -> None:
    payload = {"id": "v", "method": "tools/list"} | ({"jsonrpc": version} if version is not None else {})
    response = post(http, onec, payload)
    assert response.status_code == 200
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": "v",
        "error": {"code": -32600, "message": "Неподдерживаемая версия JSON-RPC"},
    }


@pytest.mark.parametrize("body", [b"{not json", b"", b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]'])
def test_unparsable_or_batch_body_is_32603(onec: OneCEmulator, http: httpx.Client, body: bytes) -> None:
    response = http.post(onec.rpc_url, content=body)
    assert response.status_code == 200
    reply = response.json()
    assert reply["id"] is None
    assert internal_text(reply)


@pytest.mark.parametrize("method", ["ping", "resources/templates/list", "completion/complete", "logging/setLevel"])
def test_unknown_method_is_32601(onec: OneCEmulator, http: httpx.Client, method: str) -> None:
    assert rpc(http, onec, method)["error"] == {"code": -32601, "message": f"Неизвестный метод: {method}"}


@pytest.mark.parametrize(
    ("method", "params", "text"),
    [
        ("tools/call", {"name": "foo", "arguments": {}}, "Инструмент 'foo' не найден"),
        ("resources/read", {"uri": "metadata://Нет/Такого"}, "Ресурс 'metadata://Нет/Такого' не найден"),
        ("prompts/get", {"name": "нет_такого"}, "Промпт 'нет_такого' не найден"),
    ],
)
def test_unknown_names_are_32603(
    onec: OneCEmulator, http: httpx.Client, method: str, params: dict[str, Any], text: str
) -> None:
    reply = rpc(http, onec, method, params)
    assert internal_text(reply) == text
    if method == "tools/call":  # the contract's exact example
        assert reply["error"]["message"] == (
            "Внутренняя ошибка сервера: {ОбщийМодуль.mcp_APIBackend.Модуль(263)}: Инструмент 'foo' не найден"
        )


def test_cyrillic_is_raw_utf8(onec: OneCEmulator, http: httpx.Client) -> None:
    response = post(http, onec, {"jsonrpc": "2.0", "id": 1, "method": "resources/list"})
    assert "metadata://Справочники/Номенклатура".encode() in response.content
    assert b"\\u04" not in response.content


def test_request_with_bom_is_accepted(onec: OneCEmulator, http: httpx.Client) -> None:
    response = http.post(onec.rpc_url, content=BOM + b'{"jsonrpc": "2.0", "id": 3, "method": "tools/list"}')
    assert response.json()["result"]["tools"]


# --- HTTP layer: auth, paths, discovery -----------------------------------------------------


def assert_html(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert re.search(rf"<title>{status}\b", response.text)


@pytest.mark.parametrize("auth", [None, ("demo", "wrong"), ("Demo", "demo"), ("", "")])
def test_bad_credentials_get_401_html(onec: OneCEmulator, auth: tuple[str, str] | None) -> None:
    response = httpx.post(onec.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, auth=auth)
    assert_html(response, 401)
    assert response.headers["www-authenticate"] == 'Basic realm="1C"'


def test_user_without_rights_gets_403_html(onec: OneCEmulator) -> None:
    response = httpx.post(
        onec.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, auth=("norights", "norights")
    )
    assert_html(response, 403)


def test_credentials_follow_the_state(onec: OneCEmulator) -> None:
    onec.state.username, onec.state.password = "Администратор", "пароль"
    payload = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert httpx.post(onec.rpc_url, json=payload, auth=("Администратор", "пароль")).status_code == 200
    assert httpx.post(onec.rpc_url, json=payload, auth=("demo", "demo")).status_code == 401
    onec.state.username = ""  # published without authentication
    assert httpx.post(onec.rpc_url, json=payload).status_code == 200


def test_wrong_case_publication_redirects(onec: OneCEmulator, http: httpx.Client) -> None:
    response = http.post(onec.rpc_url.replace("/demo/", "/Demo/"), json={"jsonrpc": "2.0", "id": 1, "method": "x"})
    assert response.status_code == 301
    assert response.headers["location"] == onec.rpc_url


@pytest.mark.parametrize(
    "path", ["/", "/other/hs/mcp/rpc", "/demo/hs/other/rpc", "/demo/hs/mcp/nothing", "/demo/hs/mcp/"]
)
def test_unknown_paths_get_404_html(onec: OneCEmulator, http: httpx.Client, path: str) -> None:
    base = onec.url.removesuffix("/demo")
    assert_html(http.post(base + path, json={}), 404)


def test_get_on_rpc_is_405(onec: OneCEmulator, http: httpx.Client) -> None:
    assert_html(http.get(onec.rpc_url), 405)


@pytest.mark.parametrize(
    ("mode", "manifest", "health"),
    [("manifest", 200, 404), ("health", 404, 200), ("none", 404, 404)],
)
def test_discovery_modes(onec: OneCEmulator, http: httpx.Client, mode: str, manifest: int, health: int) -> None:
    onec.state.discovery = mode  # type: ignore[assignment]
    root = onec.url + "/hs/mcp/"
    got_manifest, got_health = http.get(root + "manifest"), http.get(root + "health")
    assert (got_manifest.status_code, got_health.status_code) == (manifest, health)
    if manifest == 200:
        capabilities = got_manifest.json()["capabilities"]
        assert capabilities["tools"] == {"listChanged": True}
        assert capabilities["resources"] == {"subscribe": True, "listChanged": True}
    if health == 200:
        assert got_health.json() == {"status": "ok"}
    assert onec.state.calls["GET manifest"] == 1 and onec.state.calls["GET health"] == 1
    assert http.post(root + "manifest").status_code == 405


# --- knobs ----------------------------------------------------------------------------------


def test_bom_knob_prefixes_every_json_body(onec: OneCEmulator, http: httpx.Client) -> None:
    onec.state.bom = True
    for response in (
        post(http, onec, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        post(http, onec, {"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        http.get(onec.url + "/hs/mcp/manifest"),
    ):
        assert response.content.startswith(BOM)
        assert json.loads(response.content.decode("utf-8-sig"))


@pytest.mark.parametrize("fault", ["html_500", "html_502", "html_503"])
def test_html_fault_pages(onec: OneCEmulator, http: httpx.Client, fault: str) -> None:
    onec.state.fault = fault  # type: ignore[assignment]
    response = post(http, onec, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert_html(response, int(fault.removeprefix("html_")))
    assert onec.state.calls["tools/list"] == 1  # retries stay countable
    onec.state.fault = None
    assert post(http, onec, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).status_code == 200


def test_not_json_fault(onec: OneCEmulator, http: httpx.Client) -> None:
    onec.state.fault = "not_json"
    response = post(http, onec, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 200 and response.text
    with pytest.raises(ValueError):
        response.json()


def test_latency_and_concurrency_counters(onec: OneCEmulator) -> None:
    onec.state.latency = 0.15

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(auth=("demo", "demo")) as client:
            requests = [{"jsonrpc": "2.0", "id": i, "method": "tools/list"} for i in range(4)]
            return await asyncio.gather(*(client.post(onec.rpc_url, json=r) for r in requests))

    started = time.perf_counter()
    responses = asyncio.run(burst())
    elapsed = time.perf_counter() - started
    assert [r.json()["id"] for r in responses] == [0, 1, 2, 3]
    assert 0.15 <= elapsed < 0.55  # slowed down, but served concurrently
    assert (onec.state.max_in_flight, onec.state.in_flight, onec.state.calls["tools/list"]) == (4, 0, 4)
    onec.state.reset_counters()
    assert (onec.state.max_in_flight, sum(onec.state.calls.values())) == (0, 0)


def test_replies_open_a_1c_session_and_keep_it_while_the_cookie_is_sent(onec: OneCEmulator) -> None:
    payload = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    with httpx.Client(auth=("demo", "demo"), timeout=5) as client:
        first = client.post(onec.rpc_url, json=payload)
        session = first.cookies[SESSION_COOKIE]
        assert session and "Path=/demo" in first.headers["set-cookie"]
        second = client.post(onec.rpc_url, json=payload)
    assert second.status_code == 200 and SESSION_COOKIE not in second.cookies  # the same session goes on
    assert httpx.post(onec.rpc_url, json=payload, auth=("demo", "demo")).cookies[SESSION_COOKIE] != session


@pytest.mark.parametrize("status", [400, 200, 500])
def test_an_expired_session_is_answered_with_1c_text_once(status: int) -> None:
    payload = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    # An emulator of its own: expiry ends every session, the shared `http` client's too.
    with OneCEmulator() as onec, httpx.Client(auth=("demo", "demo"), timeout=5) as client:
        client.post(onec.rpc_url, json=payload)
        onec.state.expire_sessions(status)
        gone = client.post(onec.rpc_url, json=payload)
        assert (gone.status_code, gone.text) == (status, NOT_JSON_BODY)
        assert gone.headers["content-type"].startswith("text/plain")
        again = client.post(onec.rpc_url, json=payload)  # still the old cookie: now unknown, a new session
        assert again.json()["result"]["tools"]
        assert SESSION_COOKIE in again.cookies
        assert onec.state.calls["session expired"] == 1


def test_tools_added_and_removed_at_run_time(onec: OneCEmulator, http: httpx.Client) -> None:
    definition = {
        "name": "echo_text",
        "description": "Повторяет текст",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    }
    onec.state.add_tool(definition, lambda arguments: text_result(arguments["text"]))
    assert definition in result(http, onec, "tools/list")["tools"]
    assert call(http, onec, "echo_text", {"text": "привет"})["content"] == [{"type": "text", "text": "привет"}]
    missing = call(http, onec, "echo_text", {"text": ""})
    assert missing["isError"] is True
    assert (
        missing["content"][0]["text"]
        == "Ошибка выполнения инструмента 'echo_text': Не заполнен обязательный параметр 'text'"
    )
    onec.state.remove_tool("echo_text")
    assert "echo_text" not in [tool["name"] for tool in result(http, onec, "tools/list")["tools"]]
    assert internal_text(rpc(http, onec, "tools/call", {"name": "echo_text"})) == "Инструмент 'echo_text' не найден"
    with pytest.raises(KeyError):
        onec.state.remove_tool("echo_text")


def test_a_crashing_handler_is_an_iserror_result(onec: OneCEmulator, http: httpx.Client) -> None:
    def boom(arguments: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero")

    onec.state.add_tool({"name": "boom", "inputSchema": {"type": "object"}}, boom)
    answer = call(http, onec, "boom", {})
    assert answer["isError"] is True
    assert answer["content"][0]["text"].startswith("Ошибка выполнения инструмента 'boom': ZeroDivisionError")


def test_prompts_list_bug(onec: OneCEmulator, http: httpx.Client) -> None:
    assert len(result(http, onec, "prompts/list")["prompts"]) == 3
    onec.state.prompts_list_bug = True
    assert internal_text(rpc(http, onec, "prompts/list"))
    assert result(http, onec, "tools/list")["tools"]  # only prompts/list is broken
    onec.state.prompts = {name: p for name, p in onec.state.prompts.items() if not p.arguments}
    assert [p["name"] for p in result(http, onec, "prompts/list")["prompts"]] == ["monthly_report"]


def test_stop_and_start_keep_the_port() -> None:
    payload = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    with OneCEmulator() as emulator:
        url, port = emulator.rpc_url, emulator.port
        assert httpx.post(url, json=payload, auth=("demo", "demo")).status_code == 200
        emulator.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, json=payload, auth=("demo", "demo"))
        emulator.start()
        assert (emulator.port, emulator.url) == (port, f"http://127.0.0.1:{port}/demo")
        assert httpx.post(url, json=payload, auth=("demo", "demo")).status_code == 200


# --- demo content: valid MCP after the proxy's mappings -------------------------------------

DEMO_CALLS: dict[str, dict[str, Any]] = {
    "get_metadata": {"type": "Документы"},
    "describe_object": {"name": "Справочник.Номенклатура"},
    "query_sales": {**PERIOD, "limit": 5},
    "sales_chart": {**PERIOD, "group_by": "Контрагенты"},
    "get_document_attachments": {"number": "ТД00-000003"},
    "post_document": {"number": "ТД00-000003"},
    "get_counterparty": {"name": "ромашка"},
    "list_staff": {"department": "Бухгалтерия"},
    "current_user": {},
}


def test_tools_list_is_valid_mcp(onec: OneCEmulator, http: httpx.Client) -> None:
    tools = result(http, onec, "tools/list")["tools"]
    assert [tool["name"] for tool in tools] == list(DEMO_CALLS)
    for tool in tools:
        round_trips(types.Tool, tool)
        jsonschema.Draft202012Validator.check_schema(tool["inputSchema"])
        assert tool["inputSchema"]["type"] == "object" and "required" in tool["inputSchema"]
    query = next(tool for tool in tools if tool["name"] == "query_sales")
    assert {"title", "annotations", "outputSchema", "icons", "_meta"} <= set(query)
    assert query["annotations"] | {} == {"title": "Продажи за период", "readOnlyHint": True, "openWorldHint": False}
    assert query["inputSchema"]["properties"]["limit"]["default"] == 20
    assert base64.b64decode(query["icons"][0]["src"].removeprefix("data:image/png;base64,")).startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("name", list(DEMO_CALLS))
def test_every_tool_result_is_valid_mcp(onec: OneCEmulator, http: httpx.Client, name: str) -> None:
    answer = call(http, onec, name, DEMO_CALLS[name])
    round_trips(types.CallToolResult, answer)
    assert answer["isError"] is (name == "post_document")


def test_demo_tools_cover_every_content_type(onec: OneCEmulator, http: httpx.Client) -> None:
    kinds = {item["type"] for name, args in DEMO_CALLS.items() for item in call(http, onec, name, args)["content"]}
    assert kinds == {"text", "image", "audio", "resource_link", "resource"}


def test_query_sales_structured_content_matches_its_schema(onec: OneCEmulator, http: httpx.Client) -> None:
    schema = next(t for t in result(http, onec, "tools/list")["tools"] if t["name"] == "query_sales")["outputSchema"]
    full = call(http, onec, "query_sales", PERIOD)
    jsonschema.validate(full["structuredContent"], schema)
    assert full["structuredContent"]["count"] == 20 < full["structuredContent"]["total_rows"]  # limit default
    assert full["_meta"] == {"ru.1c.demo/truncated": True}
    filtered = call(http, onec, "query_sales", {**PERIOD, "counterparty": "ромашка", "limit": "3"})
    rows = filtered["structuredContent"]["rows"]
    jsonschema.validate(filtered["structuredContent"], schema)
    assert len(rows) == 3 and {row["counterparty"] for row in rows} == {"ООО «Ромашка»"}
    assert len(filtered["content"][0]["text"].splitlines()) == 1 + 3 + 1  # header, rows, footer


def test_get_counterparty_finds_by_name_or_inn_with_every_detail(onec: OneCEmulator, http: httpx.Client) -> None:
    by_name = call(http, onec, "get_counterparty", {"name": "вектор"})
    details = by_name["structuredContent"]
    assert details["Наименование"] == "АО «Вектор»"
    assert call(http, onec, "get_counterparty", {"inn": details["ИНН"]})["structuredContent"] == details
    expected = {"ИНН", "КПП", "ОГРН", "БИК", "РасчетныйСчет", "КоррСчет", "Телефон", "Email", "КонтактноеЛицо"}
    assert expected <= set(details)
    text = by_name["content"][0]["text"]
    assert f"ИНН/КПП {details['ИНН']}/{details['КПП']}" in text and f"р/с {details['РасчетныйСчет']}" in text


def test_list_staff_filters_by_department_in_text_and_structure(onec: OneCEmulator, http: httpx.Client) -> None:
    everyone = call(http, onec, "list_staff", {})["structuredContent"]
    sales = call(http, onec, "list_staff", {"department": "продаж"})
    assert everyone["Всего"] == len(everyone["Сотрудники"]) > sales["structuredContent"]["Всего"] == 2
    lines = sales["content"][0]["text"].splitlines()
    assert len(lines) == 2 + 2 + 1  # header, rule, rows, total
    assert all(row["Подразделение"] == "Отдел продаж" for row in sales["structuredContent"]["Сотрудники"])
    assert {"СНИЛС", "ИНН", "Паспорт", "Телефон", "Email"} <= set(sales["structuredContent"]["Сотрудники"][0])


@pytest.mark.parametrize(
    ("name", "arguments", "detail"),
    [
        ("get_counterparty", {}, "Укажите наименование (name) или ИНН (inn) контрагента"),
        ("get_counterparty", {"inn": "0000000000"}, "Контрагент '0000000000' не найден"),
        ("get_counterparty", {"name": "ООО"}, "Найдено несколько контрагентов: ООО «Ромашка»; ООО «ТехноСнаб»"),
        ("describe_object", {}, "Не заполнен обязательный параметр 'name'"),
        ("query_sales", {"period_start": "2024-01-01"}, "Не заполнен обязательный параметр 'period_end'"),
        ("query_sales", {**PERIOD, "period_end": "вчера"}, "Неверный формат даты 'вчера'"),
        ("query_sales", {**PERIOD, "limit": 0}, "Параметр 'limit' должен быть целым положительным числом"),
        ("describe_object", {"name": "Справочник.Нет"}, "Объект метаданных 'Справочник.Нет' не найден"),
        ("post_document", {"number": "ТД00-000003"}, "Документ заблокирован другим пользователем"),
    ],
)
def test_tool_failures_are_iserror_results(
    onec: OneCEmulator, http: httpx.Client, name: str, arguments: dict[str, Any], detail: str
) -> None:
    answer = call(http, onec, name, arguments)
    assert answer["isError"] is True
    assert answer["content"][0]["text"].startswith(f"Ошибка выполнения инструмента '{name}': {detail}")


def test_binary_content_is_real_png_and_wav(onec: OneCEmulator, http: httpx.Client) -> None:
    image = call(http, onec, "sales_chart", PERIOD)["content"][1]
    assert image["mimeType"] == "image/png" and base64.b64decode(image["data"]).startswith(PNG_SIGNATURE)
    attachments = call(http, onec, "get_document_attachments", {"number": "ТД00-000003"})["content"]
    with wave.open(io.BytesIO(base64.b64decode(attachments[1]["data"]))) as audio:
        assert audio.getnframes() > 0
    assert attachments[2]["uri"] == "file:///Вложения/РеализацияТоваровУслуг/ТД00-000003/Договор_поставки.pdf"


def test_resources_are_valid_mcp_after_dropping_type(onec: OneCEmulator, http: httpx.Client) -> None:
    listed = result(http, onec, "resources/list")["resources"]
    assert [r["uri"] for r in listed] == [
        "metadata://Справочники/Номенклатура",
        "metadata://Документы/РеализацияТоваровУслуг",
        "file:///Отчёты/Логотип.png",
        "file:///Документация/Руководство.md",
        "file:///Контрагенты/Ромашка.md",
    ]
    for resource in listed:
        assert set(resource) == {"uri", "name", "description"}  # no mimeType, as in 1C
        round_trips(types.Resource, resource)
        [content] = result(http, onec, "resources/read", {"uri": resource["uri"]})["contents"]
        assert content["uri"] == resource["uri"]  # byte for byte
        kind = content.pop("type")
        round_trips(types.TextResourceContents if kind == "text" else types.BlobResourceContents, content)
        assert kind in content
        if kind == "blob":
            assert base64.b64decode(content["blob"]).startswith(PNG_SIGNATURE)
        if resource["uri"].endswith(".md"):
            assert content["mimeType"] == "text/plain" and content["text"].startswith("# ")


@pytest.mark.parametrize(
    "uri",
    [
        "metadata://Справочники/Номенклатура/",
        "metadata://%D0%A1%D0%BF%D1%80%D0%B0%D0%B2%D0%BE%D1%87%D0%BD%D0%B8%D0%BA%D0%B8/Номенклатура",
    ],
)
def test_resources_are_looked_up_by_exact_string(onec: OneCEmulator, http: httpx.Client, uri: str) -> None:
    assert internal_text(rpc(http, onec, "resources/read", {"uri": uri})) == f"Ресурс '{uri}' не найден"


def test_prompts_are_valid_mcp_after_mapping_system_role(onec: OneCEmulator, http: httpx.Client) -> None:
    listed = result(http, onec, "prompts/list")["prompts"]
    roles: set[str] = set()
    for prompt in listed:
        round_trips(types.Prompt, prompt)
        arguments = {a["name"]: "2024-01-01" for a in prompt["arguments"] if a["required"]}
        got = result(http, onec, "prompts/get", {"name": prompt["name"], "arguments": arguments})
        roles |= {message["role"] for message in got["messages"]}
        for message in got["messages"]:
            message["role"] = "user" if message["role"] == "system" else message["role"]
        round_trips(types.GetPromptResult, got)
    assert roles == {"system", "user"}
    assert sum(bool(p["arguments"]) for p in listed) == 2


def test_prompt_arguments_are_substituted_and_required(onec: OneCEmulator, http: httpx.Client) -> None:
    got = result(
        http, onec, "prompts/get", {"name": "sales_analysis", "arguments": {**PERIOD, "counterparty": "АО «Вектор»"}}
    )
    text = got["messages"][-1]["content"]["text"]
    assert "2024-01-01" in text and "2024-03-31" in text and "АО «Вектор»" in text
    missing = rpc(http, onec, "prompts/get", {"name": "sales_analysis", "arguments": {"period_start": "2024-01-01"}})
    assert "period_end" in internal_text(missing)


# --- 1C users and their rights -------------------------------------------------------------

ALL_TOOLS = list(DEMO_CALLS)
PERSONAL_CARD = "file:///Контрагенты/Ромашка.md"


def basic(user: str, password: str, encoding: str = "utf-8") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode(encoding)).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def rpc_as(
    onec: OneCEmulator,
    login: tuple[str, str],
    method: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    return httpx.post(onec.rpc_url, json=payload, headers={**basic(*login), **(headers or {})}, timeout=5)


def result_as(onec: OneCEmulator, login: tuple[str, str], method: str, params: dict[str, Any] | None = None) -> Any:
    reply = rpc_as(onec, login, method, params).json()
    assert "error" not in reply, reply
    return reply["result"]


@pytest.mark.parametrize(
    ("login", "tools"),
    [
        (("demo", "demo"), ALL_TOOLS),
        (("accountant", "accountant"), ALL_TOOLS),
        (("Иванов", "пароль"), ALL_TOOLS),
        (("storekeeper", "storekeeper"), [name for name in ALL_TOOLS if name not in ("post_document", "list_staff")]),
    ],
)
def test_each_user_sees_the_tools_and_resources_of_its_rights(
    onec: OneCEmulator, login: tuple[str, str], tools: list[str]
) -> None:
    assert [tool["name"] for tool in result_as(onec, login, "tools/list")["tools"]] == tools
    uris = [resource["uri"] for resource in result_as(onec, login, "resources/list")["resources"]]
    assert (PERSONAL_CARD in uris) is (login[0] != "storekeeper") and len(uris) >= 4
    assert len(result_as(onec, login, "prompts/list")["prompts"]) == 3


@pytest.mark.parametrize(
    ("method", "params", "text"),
    [
        ("tools/call", {"name": "post_document", "arguments": {"number": "ТД00-000003"}},
         "Недостаточно прав для выполнения инструмента 'post_document'"),
        ("tools/call", {"name": "list_staff", "arguments": {}},
         "Недостаточно прав для выполнения инструмента 'list_staff'"),
        ("resources/read", {"uri": PERSONAL_CARD}, f"Недостаточно прав для чтения ресурса '{PERSONAL_CARD}'"),
    ],
)  # fmt: skip
def test_storekeeper_calling_a_hidden_item_gets_1c_rights_error(
    onec: OneCEmulator, method: str, params: dict[str, Any], text: str
) -> None:
    response = rpc_as(onec, ("storekeeper", "storekeeper"), method, params)
    assert response.status_code == 200  # a JSON-RPC error, as every 1C error
    assert internal_text(response.json()) == text
    assert response.json()["error"]["message"].startswith(
        "Внутренняя ошибка сервера: {ОбщийМодуль.mcp_APIBackend.Модуль("
    )
    assert onec.state.user_calls["storekeeper", method] == 1


def test_storekeeper_still_runs_the_tools_of_its_role(onec: OneCEmulator) -> None:
    login = ("storekeeper", "storekeeper")
    answer = result_as(onec, login, "tools/call", {"name": "query_sales", "arguments": {**PERIOD, "limit": 1}})
    assert answer["isError"] is False and answer["structuredContent"]["count"] == 1


def test_user_without_right_to_the_service_gets_403_page_with_1c_reason(onec: OneCEmulator) -> None:
    response = rpc_as(onec, ("norights", "norights"), "tools/list")
    assert_html(response, 403)
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "Недостаточно прав для использования HTTP-сервиса mcp" in response.text
    assert "www-authenticate" not in response.headers  # the login is right: asking again will not help
    assert SESSION_COOKIE not in response.cookies
    assert onec.state.user_calls["norights", "HTTP 403"] == 1 and onec.state.calls["tools/list"] == 0


@pytest.mark.parametrize(
    "login",
    [("accountant", "wrong"), ("storekeeper", "accountant"), ("Иванов", "Пароль"), ("nobody", "nobody"),
     ("norights", "wrong")],
)  # fmt: skip
def test_wrong_password_or_unknown_user_gets_401_with_basic_challenge(
    onec: OneCEmulator, login: tuple[str, str]
) -> None:
    response = rpc_as(onec, login, "tools/list")
    assert_html(response, 401)
    assert response.headers["www-authenticate"] == 'Basic realm="1C"'
    assert onec.state.calls["HTTP 401"] == 1 and not onec.state.user_calls


def test_cyrillic_login_is_read_as_utf8(onec: OneCEmulator) -> None:
    assert result_as(onec, ("Иванов", "пароль"), "tools/list")["tools"]
    with httpx.Client(auth=("Иванов", "пароль"), timeout=5) as client:  # the client's own Basic encoding
        assert client.post(onec.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).status_code == 200
    payload = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    in_cp1251 = httpx.post(onec.rpc_url, json=payload, headers=basic("Иванов", "пароль", "cp1251"))
    assert_html(in_cp1251, 401)


def current_user_text(onec: OneCEmulator, login: tuple[str, str], headers: dict[str, str] | None = None) -> str:
    reply = rpc_as(onec, login, "tools/call", {"name": "current_user", "arguments": {}}, headers).json()
    assert reply["result"]["isError"] is False
    return reply["result"]["content"][0]["text"]


def test_current_user_names_the_1c_user_and_its_roles(onec: OneCEmulator) -> None:
    assert current_user_text(onec, ("accountant", "accountant")) == (
        "Пользователь 1С: accountant\nПолное имя: Бухгалтер\nРоли: Бухгалтер"
    )
    assert current_user_text(onec, ("Иванов", "пароль")).splitlines()[:2] == [
        "Пользователь 1С: Иванов",
        "Полное имя: Иванов Иван Иванович",
    ]
    assert current_user_text(onec, ("storekeeper", "storekeeper")).endswith("Роли: Кладовщик")
    assert current_user_text(onec, ("demo", "demo")).endswith("Роли: ПолныеПрава")


def test_current_user_shows_whom_a_service_account_acts_for(onec: OneCEmulator) -> None:
    person = "Петрова Мария Сергеевна"
    headers = {"X-MCP-User": quote(person)}
    assert headers["X-MCP-User"].isascii()
    text = current_user_text(onec, ("demo", "demo"), headers)
    assert text.splitlines() == [
        "Пользователь 1С: demo",
        "Полное имя: Служебная учётная запись MCP",
        "Роли: ПолныеПрава",
        f"Действует от имени: {person}",
    ]
    reply = rpc_as(onec, ("demo", "demo"), "tools/call", {"name": "current_user"}, headers).json()
    assert reply["result"]["structuredContent"]["ДействуетОтИмени"] == person
    assert "Действует от имени" not in current_user_text(onec, ("demo", "demo"), {"X-MCP-User": ""})


def test_current_user_without_authentication(onec: OneCEmulator) -> None:
    onec.state.username = ""
    reply = httpx.post(onec.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                           "params": {"name": "current_user"}}).json()  # fmt: skip
    assert reply["result"]["content"][0]["text"].startswith("Пользователь 1С: не задан")
    assert onec.state.user_calls["", "tools/call"] == 1


def test_calls_are_counted_per_1c_user(onec: OneCEmulator) -> None:
    result_as(onec, ("accountant", "accountant"), "tools/list")
    result_as(onec, ("accountant", "accountant"), "tools/call", {"name": "get_metadata"})
    result_as(onec, ("Иванов", "пароль"), "tools/list")
    httpx.get(onec.url + "/hs/mcp/manifest", auth=("storekeeper", "storekeeper"))
    assert onec.state.calls["tools/list"] == 2
    assert onec.state.user_calls["accountant", "tools/list"] == 1
    assert onec.state.user_calls["Иванов", "tools/list"] == 1
    assert onec.state.calls_as("accountant") == {"tools/list": 1, "tools/call": 1, "session opened": 2}
    assert onec.state.calls_as("storekeeper")["GET manifest"] == 1
    assert onec.state.calls_as("demo").total() == 0
    onec.state.reset_counters()
    assert not onec.state.user_calls and onec.state.calls_as("accountant").total() == 0


def test_a_session_belongs_to_the_user_who_opened_it(onec: OneCEmulator) -> None:
    payload = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}

    def send(login: tuple[str, str], session: str) -> httpx.Response:
        headers = {**basic(*login), "Cookie": f"{SESSION_COOKIE}={session}"}
        return httpx.post(onec.rpc_url, json=payload, headers=headers)

    accountants = httpx.post(onec.rpc_url, json=payload, auth=("accountant", "accountant")).cookies[SESSION_COOKIE]
    storekeepers = send(("storekeeper", "storekeeper"), accountants)  # another user's cookie: a session of its own
    assert storekeepers.json()["result"] and storekeepers.cookies[SESSION_COOKIE] != accountants
    assert SESSION_COOKIE not in send(("accountant", "accountant"), accountants).cookies  # still the accountant's
    onec.state.expire_sessions()
    assert send(("storekeeper", "storekeeper"), accountants).json()["result"]  # not its session: served
    gone = send(("accountant", "accountant"), accountants)
    assert (gone.status_code, gone.text) == (400, NOT_JSON_BODY)
    assert onec.state.user_calls["accountant", "session expired"] == 1


def test_added_tools_can_need_a_right_and_see_the_call_context(onec: OneCEmulator) -> None:
    def whoami(arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        return text_result(f"{context.user.name} / {context.acting_for}")

    definition = {"name": "whoami", "inputSchema": {"type": "object"}}
    onec.state.add_tool(definition, whoami, right=RIGHT_POSTING, takes_context=True)
    reply = rpc_as(onec, ("Иванов", "пароль"), "tools/call", {"name": "whoami"}, {"X-MCP-User": "%D0%AF"}).json()
    assert reply["result"]["content"][0]["text"] == "Иванов / Я"
    names = [tool["name"] for tool in result_as(onec, ("storekeeper", "storekeeper"), "tools/list")["tools"]]
    assert "whoami" not in names
    refused = rpc_as(onec, ("storekeeper", "storekeeper"), "tools/call", {"name": "whoami"}).json()
    assert internal_text(refused) == "Недостаточно прав для выполнения инструмента 'whoami'"


# --- chart.py -------------------------------------------------------------------------------


def png_chunks(png: bytes) -> dict[bytes, bytes]:
    assert png.startswith(PNG_SIGNATURE)
    chunks, position = {}, len(PNG_SIGNATURE)
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind, payload = png[position + 4 : position + 8], png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", png[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + payload)
        chunks[kind] = chunks.get(kind, b"") + payload
        position += 12 + length
    return chunks


@pytest.mark.parametrize("values", [[120.5, 80, 240, 0, -5], [], [0, 0]])
def test_bar_chart_is_a_valid_png(values: list[float]) -> None:
    chunks = png_chunks(bar_chart(values, width=60, height=30))
    assert struct.unpack(">IIBB", chunks[b"IHDR"][:10]) == (60, 30, 8, 2)
    assert len(zlib.decompress(chunks[b"IDAT"])) == 30 * (1 + 60 * 3)
    assert b"IEND" in chunks


def test_encode_png_keeps_pixels() -> None:
    raw = zlib.decompress(png_chunks(encode_png(2, 1, [[(1, 2, 3), (4, 5, 6)]]))[b"IDAT"])
    assert raw == bytes([0, 1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError):
        encode_png(2, 1, [[(1, 2, 3)]])


def test_demo_registry_is_fresh_per_state() -> None:
    first, second = EmulatorState(), EmulatorState()
    first.add_tool({"name": "x", "inputSchema": {"type": "object"}}, lambda arguments: text_result(""))
    assert "x" not in second.tools and set(second.tools) == set(demo_tools())
