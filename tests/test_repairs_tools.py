from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any

import httpx
import jsonschema
import pytest
import respx
from jsonschema.validators import validator_for
from mcp import Client, types
from mcp.server import Server, ServerRequestContext
from pydantic import SecretStr
from referencing import Registry

from py_server.config import Settings
from py_server.extras.repairs import TOOL_NAMES, RepairsExtra, create, formatters
from py_server.extras.repairs.tools import SPECS, tool_definition
from py_server.local_tools import LocalTool, ToolRegistry

API = "http://repairs.test"
KEY = "s3cr3t-repairs-key"
VIN = "XWEG3417BN0009095"
META_KEYS = {"execution_time_ms", "data_source", "record_count", "timestamp", "vin"}

DAYS = {
    "repair_data": [
        {"year_number": 2, "is_current_year": False, "days_in_repair": 34},
        {"year_number": 1, "is_current_year": False, "days_in_repair": 15},
        {"year_number": 3, "is_current_year": True, "days_in_repair": 8},
    ]
}
RECORDS = {
    "records": [
        {
            "serial": "12345",
            "ro_open_date": "2025-10-01",
            "ro_close_date": "2025-10-09",
            "retail_date": "2022-05-20",
            "odometr": 42284,
            "dealer": {"name": 'ООО "Молоток Авто"', "code": 57002, "city": "Москва"},
            "casual_part": "76004Q5001",
            "casual_part_descr": "PANEL ASSY-FRONT DOOR,LH",
            "replaced_parts": [
                {"replace_part": "76004Q5001", "replace_part_descr": "PANEL ASSY-FRONT DOOR,LH"},
                {"replace_part": "76003Q5001", "replace_part_descr": "PANEL ASSY-FRONT DOOR,RH"},
            ],
            "op_codes": [{"op_code": "76000R0B", "op_code_descr": "FRONT DOOR PANEL ASSY, BOTH SIDES, R&R"}],
        },
        {"serial": 777, "ro_close_date": "2024-01-05", "odometr": "31 540", "dealer": {"code": None}},
    ]
}
MAINTENANCE = [
    {"vin": VIN, "maintenance_type": "ТО-1", "ro_date": "2023-08-15", "odometer": 15000,
     "dealer": {"name": "ООО «Автоцентр Нева»", "code": "78015", "city": "Санкт-Петербург"}},
    {"maintenance_type": "ТО-2", "ro_date": "2024-08-20", "odometer": 30100, "dealer": None},
    {"vin": VIN, "maintenance_type": "ТО-1", "ro_date": None},
]  # fmt: skip
DNM = [
    {"dealer_name": 'ООО "Молоток Авто"', "ro_close_date": "2025-10-01", "odometer": 42284,
     "repair_type": "текущий ремонт", "visit_reason": "замена двери по гарантии(КУЗОВНОЙ)",
     "recomendations": "Все работы выполнены в полном объеме."},
    {"dealer_name": "АО «Уралавто-Сервис»", "ro_close_date": "2024-02-20", "repair_type": "гарантийный ремонт"},
    {"repair_type": "текущий ремонт"},
]  # fmt: skip
PATHS = {
    "warranty_days": f"/api/warranty/{VIN}",
    "warranty_history": f"/api/warranty/records/{VIN}",
    "maintenance_history": f"/api/maintenance/{VIN}",
    "vehicle_repairs_history": f"/api/dnm/{VIN}",
}
PAYLOADS = {
    "warranty_days": DAYS,
    "warranty_history": RECORDS,
    "maintenance_history": MAINTENANCE,
    "vehicle_repairs_history": DNM,
}
SOURCES = {
    "warranty_days": "warranty_api",
    "warranty_history": "warranty_api",
    "maintenance_history": "maintenance_api",
    "vehicle_repairs_history": "dnm_api",
}


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"repairs_api_url": API, "repairs_api_key": SecretStr(KEY), **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


DEFINITIONS = {spec.name: tool_definition(spec) for spec in SPECS}


def tool(extra: RepairsExtra, name: str) -> LocalTool:
    return next(t for t in extra.tools if t.name == name)


def call(name: str, arguments: dict[str, Any], settings: Settings | None = None) -> types.CallToolResult:
    async def main() -> types.CallToolResult:
        extra = create(settings or make_settings())
        try:
            return await tool(extra, name).handler(arguments)
        finally:
            await extra.aclose()

    return asyncio.run(main())


def assert_matches_output_schema(name: str, result: types.CallToolResult) -> None:
    schema = DEFINITIONS[name].output_schema
    assert schema is not None
    # Validate the way the SDK client does: no remote registry, "$ref"s resolve inside the schema.
    validator_for(schema)(schema, registry=Registry()).validate(result.structured_content)


def text(result: types.CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def assert_no_secret(result: types.CallToolResult) -> None:
    dumped = result.model_dump_json(by_alias=True)
    assert KEY not in dumped


# --- definitions ----------------------------------------------------------------------------------


def test_not_configured_extra_has_no_tools_and_says_which_setting_to_set() -> None:
    extra = create(Settings(_env_file=None))  # type: ignore[call-arg]
    assert extra.name == "repairs"
    assert list(extra.tools) == []
    status = asyncio.run(extra.status())
    assert status.state == "not configured"
    assert "MCP_REPAIRS_API_URL" in status.detail
    asyncio.run(extra.aclose())  # nothing to close, must not fail


def test_configured_extra_serves_the_four_tools_in_a_registry() -> None:
    extra = create(make_settings())
    registry = ToolRegistry(extra.tools)
    assert registry.names == list(TOOL_NAMES)
    assert registry.names == ["warranty_days", "warranty_history", "maintenance_history", "vehicle_repairs_history"]
    asyncio.run(extra.aclose())


def test_a_missing_key_is_allowed_but_logged(caplog: pytest.LogCaptureFixture) -> None:
    extra = create(make_settings(repairs_api_key=None))
    assert len(extra.tools) == 4
    assert "MCP_REPAIRS_API_KEY is not set" in caplog.text
    asyncio.run(extra.aclose())


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_tool_definitions_are_complete_and_russian(name: str) -> None:
    definition = DEFINITIONS[name]
    assert definition.title and any("а" <= ch <= "я" for ch in definition.title.lower())
    assert definition.description and "VIN" in definition.description and "17 символов" in definition.description
    assert definition.input_schema["type"] == "object"
    assert definition.input_schema["required"] == ["vin"]
    assert definition.input_schema["properties"]["vin"]["type"] == "string"
    assert "17" in definition.input_schema["properties"]["vin"]["description"]
    schema = definition.output_schema
    assert schema is not None and schema["type"] == "object"
    validator_for(schema).check_schema(schema)
    assert definition.annotations == types.ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
    )
    # The wire form uses the spec's camelCase names.
    wire = definition.model_dump(by_alias=True, exclude_none=True)
    assert {"inputSchema", "outputSchema", "annotations", "title"} <= wire.keys()


# --- successful calls -----------------------------------------------------------------------------


@respx.mock
@pytest.mark.parametrize("name", TOOL_NAMES)
def test_each_tool_returns_text_structured_content_and_meta(name: str) -> None:
    route = respx.get(API + PATHS[name]).respond(json=PAYLOADS[name])
    result = call(name, {"vin": " xweg-3417-bn0009095 "})
    assert route.called
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    assert not result.is_error
    assert VIN in text(result)
    assert result.structured_content is not None and result.structured_content["vin"] == VIN
    assert_matches_output_schema(name, result)
    assert result.meta is not None and set(result.meta) == META_KEYS
    assert result.meta["data_source"] == SOURCES[name]
    assert isinstance(result.meta["execution_time_ms"], int)
    assert result.meta["timestamp"].endswith("Z") and len(result.meta["timestamp"]) == 20
    assert result.meta["record_count"] == (2 if name == "warranty_history" else 3)
    assert_no_secret(result)


@respx.mock
def test_warranty_days_sums_years_and_flags_the_30_day_limit() -> None:
    respx.get(API + PATHS["warranty_days"]).respond(json=DAYS)
    result = call("warranty_days", {"vin": VIN})
    assert result.structured_content == {
        "vin": VIN,
        "total_years": 3,
        "repair_years": [
            {"year_number": 1, "is_current_year": False, "days_in_repair": 15},
            {"year_number": 2, "is_current_year": False, "days_in_repair": 34},
            {"year_number": 3, "is_current_year": True, "days_in_repair": 8},
        ],
        "current_year_days": 8,
        "total_days_in_repair": 57,
    }
    body = text(result)
    assert "Статистика ремонтов для VIN XWEG3417BN0009095:" in body
    assert "Общее количество дней в ремонте: 57" in body
    assert "Год владения 1: 15 дней в ремонте\n" in body
    assert "Год владения 2: 34 дня в ремонте — превышен лимит 30 дней" in body
    assert "Год владения 3 (текущий): 8 дней в ремонте" in body
    assert "В текущем году: 8 дней (до лимита 30 дней осталось 22 дня)" in body
    assert "превышен в году владения 2" in body and "ст. 18" in body


@respx.mock
def test_warranty_days_without_a_current_year_and_at_exactly_30_days() -> None:
    payload = {"repair_data": [{"year_number": 1, "is_current_year": False, "days_in_repair": 30}]}
    respx.get(API + PATHS["warranty_days"]).respond(json=payload)
    result = call("warranty_days", {"vin": VIN})
    assert result.structured_content is not None and result.structured_content["current_year_days"] is None
    assert "достигнут лимит 30 дней" in text(result)
    assert "Текущий год владения в данных не отмечен" in text(result)
    assert "не превышен" in text(result)


@respx.mock
def test_warranty_history_maps_the_api_spelling_to_the_design_fields() -> None:
    respx.get(API + PATHS["warranty_history"]).respond(json=RECORDS)
    result = call("warranty_history", {"vin": VIN})
    data = result.structured_content
    assert data is not None
    first, second = data["records"]
    assert first == {
        "serial": "12345",
        "date": "2025-10-01",  # ro_open_date
        "odometer": 42284,  # odometr
        "dealer": {"name": 'ООО "Молоток Авто"', "code": "57002", "city": "Москва"},  # int code -> str
        "fault_part": {"part_number": "76004Q5001", "description": "PANEL ASSY-FRONT DOOR,LH"},
        "replaced_parts": [
            {"part_number": "76004Q5001", "description": "PANEL ASSY-FRONT DOOR,LH"},
            {"part_number": "76003Q5001", "description": "PANEL ASSY-FRONT DOOR,RH"},
        ],
        "operations": [{"code": "76000R0B", "description": "FRONT DOOR PANEL ASSY, BOTH SIDES, R&R"}],
    }
    # A sparse record: serial as int, close date as fallback, "31 540" parsed, empty dealer -> null.
    assert second == {
        "serial": "777",
        "date": "2024-01-05",
        "odometer": 31540,
        "dealer": None,
        "fault_part": None,
        "replaced_parts": [],
        "operations": [],
    }
    assert (data["total_records"], data["total_parts_replaced"], data["total_operations"]) == (2, 2, 1)
    body = text(result)
    assert "Обращение № 12345 от 01.10.2025, пробег 42 284 км" in body
    assert 'Дилер: ООО "Молоток Авто" (код 57002), Москва' in body
    assert "76000R0B — FRONT DOOR PANEL ASSY, BOTH SIDES, R&R" in body
    assert "Итого: обращений 2, заменено деталей 2, операций 1." in body


@respx.mock
def test_maintenance_history_lists_unique_types_in_order() -> None:
    respx.get(API + PATHS["maintenance_history"]).respond(json=MAINTENANCE)
    result = call("maintenance_history", {"vin": VIN})
    data = result.structured_content
    assert data is not None
    assert data["maintenance_types"] == ["ТО-1", "ТО-2"]
    assert data["records"][0]["date"] == "2023-08-15"  # ro_date
    assert data["records"][0]["dealer"]["code"] == "78015"
    assert data["records"][1]["vin"] == VIN  # a record without its own VIN belongs to the one asked for
    assert "1. ТО-1 — 15.08.2023, пробег 15 000 км" in text(result)
    assert "Виды обслуживания: ТО-1, ТО-2" in text(result)


@respx.mock
def test_vehicle_repairs_history_maps_recomendations_and_close_date() -> None:
    respx.get(API + PATHS["vehicle_repairs_history"]).respond(json=DNM)
    result = call("vehicle_repairs_history", {"vin": VIN})
    data = result.structured_content
    assert data is not None
    assert data["records"][0]["recommendations"] == "Все работы выполнены в полном объеме."
    assert data["records"][0]["date"] == "2025-10-01"
    assert data["records"][2] == {
        "dealer_name": None,
        "date": None,
        "odometer": None,
        "repair_type": "текущий ремонт",
        "visit_reason": None,
        "recommendations": None,
    }
    assert data["repair_types"] == ["текущий ремонт", "гарантийный ремонт"]
    assert "Рекомендации: Все работы выполнены в полном объеме." in text(result)


# --- empty results --------------------------------------------------------------------------------

EMPTY_TEXT = {
    "warranty_days": "Данные о днях в ремонте для VIN XWEG3417BN0009095 не найдены",
    "warranty_history": "Записи о гарантийных обращениях для VIN XWEG3417BN0009095 не найдены",
    "maintenance_history": "Записи о техническом обслуживании для VIN XWEG3417BN0009095 не найдены",
    "vehicle_repairs_history": "Записи о ремонтах в дилерской сети для VIN XWEG3417BN0009095 не найдены",
}
EMPTY_BODIES = {
    "warranty_days": {"repair_data": []},
    "warranty_history": {"records": []},
    "maintenance_history": [],
    "vehicle_repairs_history": [],
}


@respx.mock
@pytest.mark.parametrize("name", TOOL_NAMES)
@pytest.mark.parametrize("how", ["404", "empty"])
def test_no_records_is_a_successful_empty_result(name: str, how: str) -> None:
    route = respx.get(API + PATHS[name])
    if how == "404":
        route.respond(404, json={"detail": "VIN не найден"})
    else:
        route.respond(json=EMPTY_BODIES[name])
    result = call(name, {"vin": VIN})
    assert not result.is_error
    assert text(result).startswith(EMPTY_TEXT[name])
    assert_matches_output_schema(name, result)
    assert result.meta is not None and result.meta["record_count"] == 0
    data = result.structured_content
    assert data is not None
    if name == "warranty_days":
        assert data == {"vin": VIN, "total_years": 0, "repair_years": [], "current_year_days": None,
                        "total_days_in_repair": 0}  # fmt: skip
    else:
        assert data["records"] == [] and data["total_records"] == 0


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOOL_NAMES)
@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"vin": "XWEG3417BNI009O95"}, "недопустимые символы: I, O"),
        ({"vin": "XWEG3417BN000909"}, "длина 16 вместо 17"),
        ({}, "VIN должен быть строкой"),
        ({"vin": ""}, "VIN не указан"),
    ],
)
def test_an_invalid_vin_is_an_error_and_no_request_is_sent(name: str, arguments: dict[str, Any], fragment: str) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.route().respond(json={})
        result = call(name, arguments)
        assert mock.calls.call_count == 0
    assert result.is_error
    assert fragment in text(result)
    assert result.structured_content is None
    assert result.meta is not None and result.meta["error_type"] == "invalid_vin"
    assert {"execution_time_ms", "timestamp", "data_source"} <= set(result.meta)


@respx.mock
@pytest.mark.parametrize(
    ("respond", "error_type", "http_status", "fragment"),
    [
        ({"status_code": 401, "json": {"detail": "bad token"}}, "authentication_error", 401, "HTTP 401"),
        ({"status_code": 403}, "authentication_error", 403, "доступ запрещён"),
        ({"status_code": 500}, "http_error", 500, "HTTP 500"),
        ({"status_code": 200, "text": "<html>"}, "invalid_response", 200, "не является JSON"),
        ({"status_code": 200, "json": {"records": []}}, "invalid_response", None, "неожиданной структуры"),
    ],
)
def test_upstream_failures_become_error_results_with_meta(
    respond: dict[str, Any], error_type: str, http_status: int | None, fragment: str
) -> None:
    respx.get(API + PATHS["maintenance_history"]).respond(**respond)
    result = call("maintenance_history", {"vin": VIN})
    assert result.is_error
    body = text(result)
    assert body.startswith("Не удалось получить историю технического обслуживания для VIN XWEG3417BN0009095.")
    assert fragment in body
    assert result.meta is not None
    assert result.meta["error_type"] == error_type
    assert result.meta.get("http_status") == http_status
    assert "record_count" not in result.meta
    assert_no_secret(result)


@respx.mock
@pytest.mark.parametrize(
    ("exception", "error_type"),
    [(httpx.ConnectTimeout("slow"), "timeout"), (httpx.ConnectError("refused"), "network_error")],
)
def test_transport_failures_become_error_results(exception: Exception, error_type: str) -> None:
    respx.get(API + PATHS["warranty_days"]).mock(side_effect=exception)
    result = call("warranty_days", {"vin": VIN})
    assert result.is_error
    assert result.meta is not None and result.meta["error_type"] == error_type
    assert "http_status" not in result.meta
    assert_no_secret(result)


@respx.mock
@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("warranty_days", [{"year_number": 1}]),  # list where an object is expected
        ("warranty_days", {"days": []}),  # object without repair_data
        ("warranty_history", {"records": {"serial": "1"}}),  # object where a list is expected
        ("vehicle_repairs_history", {"records": []}),
        ("vehicle_repairs_history", ["not a record"]),
        ("maintenance_history", "ТО-1"),
    ],
)
def test_a_response_of_the_wrong_shape_is_invalid_response(name: str, payload: Any) -> None:
    respx.get(API + PATHS[name]).respond(json=payload)
    result = call(name, {"vin": VIN})
    assert result.is_error
    assert result.meta is not None and result.meta["error_type"] == "invalid_response"
    assert "неожиданной структуры" in text(result)


def test_a_bug_in_a_handler_is_an_unexpected_error_result(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Any, vin: str) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr("py_server.extras.repairs.client.RepairsApiClient.dnm", broken)
    result = call("vehicle_repairs_history", {"vin": VIN})
    assert result.is_error
    assert result.meta is not None and result.meta["error_type"] == "unexpected_error"
    assert "KeyError" in text(result)


# --- status ---------------------------------------------------------------------------------------


def status_with(respond: dict[str, Any] | None = None, side_effect: Exception | None = None) -> tuple[str, str]:
    async def main() -> tuple[str, str]:
        extra = create(make_settings())
        try:
            status = await extra.status()
        finally:
            await extra.aclose()
        assert status.name == "repairs" and status.tools == list(TOOL_NAMES)
        return status.state, status.detail

    with respx.mock() as mock:
        route = mock.get(url__startswith=f"{API}/api/dnm/")
        if side_effect is not None:
            route.mock(side_effect=side_effect)
        else:
            route.respond(**(respond or {}))
        outcome = asyncio.run(main())
        assert route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in outcome[1]
    return outcome


@pytest.mark.parametrize(
    "respond", [{"status_code": 404}, {"status_code": 200, "json": []}, {"status_code": 422}, {"text": "<html>"}]
)
def test_status_is_reachable_when_the_api_answers(respond: dict[str, Any]) -> None:
    assert status_with(respond) == ("reachable", API)


@pytest.mark.parametrize(("status_code", "fragment"), [(401, "HTTP 401"), (403, "HTTP 403"), (503, "HTTP 503")])
def test_status_is_failing_on_auth_errors_and_5xx(status_code: int, fragment: str) -> None:
    state, detail = status_with({"status_code": status_code})
    assert state == "failing" and fragment in detail


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_status_is_failing_when_the_api_is_unreachable(error: Exception) -> None:
    state, detail = status_with(side_effect=error)
    assert state == "failing" and API in detail


@respx.mock
def test_status_of_a_keyless_setup_says_so() -> None:
    respx.get(url__startswith=f"{API}/api/dnm/").respond(404)

    async def main() -> tuple[str, str]:
        extra = create(make_settings(repairs_api_key=None))
        status = await extra.status()
        await extra.aclose()
        return status.state, status.detail

    assert asyncio.run(main()) == ("reachable", f"{API} (no MCP_REPAIRS_API_KEY)")


def test_status_probe_uses_a_short_timeout() -> None:
    async def main() -> float:
        seen: list[float] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.extensions["timeout"]["read"])
            return httpx.Response(404)

        http = httpx.AsyncClient(base_url=API, transport=httpx.MockTransport(handler), timeout=30.0)
        from py_server.extras.repairs.client import RepairsApiClient

        extra = RepairsExtra(make_settings(), client=RepairsApiClient(http))
        assert (await extra.status()).state == "reachable"
        await extra.aclose()
        return seen[0]

    assert asyncio.run(main()) <= 5.0


# --- through the SDK client: outputSchema ($defs and $ref included) is enforced -------------------


def serve(tools: Sequence[LocalTool]) -> Server[Any]:
    registry = ToolRegistry(tools)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=registry.definitions())

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        return await registry.call(params.name, params.arguments or {})

    return Server("repairs-test", on_list_tools=list_tools, on_call_tool=call_tool)


@respx.mock
@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_sdk_client_accepts_every_tool_result(mode: str) -> None:
    for name in TOOL_NAMES:
        respx.get(API + PATHS[name]).respond(json=PAYLOADS[name])

    async def main() -> None:
        extra = create(make_settings())
        async with Client(serve(extra.tools), mode=mode) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert "$defs" in (listed["warranty_history"].output_schema or {})
            for name in TOOL_NAMES:
                result = await client.call_tool(name, {"vin": VIN})  # raises if it breaks outputSchema
                assert not result.is_error and result.structured_content is not None
                assert result.meta is not None and result.meta["data_source"] == SOURCES[name]
            bad = await client.call_tool("warranty_days", {"vin": "nope"})
            assert bad.is_error and bad.meta is not None and bad.meta["error_type"] == "invalid_vin"
        await extra.aclose()

    asyncio.run(main())


@respx.mock
def test_the_sdk_client_resolves_refs_and_rejects_a_wrong_nested_type() -> None:
    respx.get(API + PATHS["warranty_history"]).respond(json=RECORDS)

    async def main() -> None:
        extra = create(make_settings())
        good = tool(extra, "warranty_history")

        async def corrupt(arguments: dict[str, Any]) -> types.CallToolResult:
            result = await good.handler(arguments)
            broken = copy.deepcopy(result.structured_content) or {}
            broken["records"][0]["dealer"]["code"] = 57002  # Dealer.code is a string, behind a $ref
            return result.model_copy(update={"structured_content": broken})

        tools = [LocalTool(definition=good.definition, handler=corrupt)]
        async with Client(serve(tools), mode="legacy") as client:
            with pytest.raises(RuntimeError, match="Invalid structured content"):
                await client.call_tool("warranty_history", {"vin": VIN})
        await extra.aclose()

    asyncio.run(main())


def test_jsonschema_rejects_structured_content_missing_a_required_field() -> None:
    schema = DEFINITIONS["warranty_days"].output_schema
    assert schema is not None
    with pytest.raises(jsonschema.ValidationError):
        validator_for(schema)(schema, registry=Registry()).validate({"vin": VIN, "repair_years": []})


# --- text details ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, "0 дней"), (1, "1 день"), (2, "2 дня"), (5, "5 дней"), (11, "11 дней"), (12, "12 дней"),
     (21, "21 день"), (22, "22 дня"), (111, "111 дней"), (104, "104 дня")],
)  # fmt: skip
def test_days_uses_russian_plural_forms(n: int, expected: str) -> None:
    assert formatters.days(n) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2025-10-01", "01.10.2025"), ("2025-10-01T10:20:00", "01.10.2025"), ("2025-10-01T10:20:00Z", "01.10.2025"),
     ("01.10.2025", "01.10.2025"), ("когда-то", "когда-то"), (None, "дата не указана")],
)  # fmt: skip
def test_dates_are_shown_the_russian_way_or_as_sent(value: str | None, expected: str) -> None:
    assert formatters.format_date(value) == expected


@respx.mock
def test_a_long_history_is_capped_in_the_text_but_complete_in_structured_content() -> None:
    many = [{"repair_type": "текущий ремонт", "ro_close_date": "2024-01-01"}] * (formatters.MAX_RECORDS_IN_TEXT + 5)
    respx.get(API + PATHS["vehicle_repairs_history"]).respond(json=many)
    result = call("vehicle_repairs_history", {"vin": VIN})
    assert result.structured_content is not None
    assert len(result.structured_content["records"]) == formatters.MAX_RECORDS_IN_TEXT + 5
    assert "… и ещё 5 записей" in text(result)
    assert f"\n{formatters.MAX_RECORDS_IN_TEXT + 1}. " not in text(result)
