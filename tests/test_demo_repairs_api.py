from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from jsonschema.validators import validator_for
from mcp import types
from pydantic import SecretStr
from referencing import Registry

from py_server.config import Settings
from py_server.demo.loopback import LoopbackServer
from py_server.demo.repairs_api import EMPTY_VIN, RICH_VIN, SOME_VIN, create_repairs_api
from py_server.extras.repairs import TOOL_NAMES, RepairsApiClient, RepairsExtra, create
from py_server.extras.repairs.tools import SPECS, tool_definition

KEY = "demo-test-key"
BASE = "http://demo-repairs"


def settings(url: str = BASE, key: str | None = KEY) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        repairs_api_url=url,
        repairs_api_key=SecretStr(key) if key is not None else None,
    )


def asgi_extra(key: str | None = KEY) -> RepairsExtra:
    """The real client and tools, talking to the demo app in memory."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx.AsyncClient(
        base_url=BASE, headers=headers, transport=httpx.ASGITransport(app=create_repairs_api(api_key=KEY))
    )
    return RepairsExtra(settings(key=key), client=RepairsApiClient(http, api_key=key))


def call_all(vin: str, key: str | None = KEY) -> dict[str, types.CallToolResult]:
    async def main() -> dict[str, types.CallToolResult]:
        extra = asgi_extra(key)
        try:
            return {tool.name: await tool.handler({"vin": vin}) for tool in extra.tools}
        finally:
            await extra.aclose()

    results = asyncio.run(main())
    definitions = {spec.name: tool_definition(spec) for spec in SPECS}
    for name, result in results.items():
        if not result.is_error:
            schema = definitions[name].output_schema
            assert schema is not None
            validator_for(schema)(schema, registry=Registry()).validate(result.structured_content)
    return results


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def raw_get(path: str, key: str | None = KEY) -> httpx.Response:
    async def main() -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        transport = httpx.ASGITransport(app=create_repairs_api(api_key=KEY))
        async with httpx.AsyncClient(base_url=BASE, transport=transport, headers=headers) as client:
            return await client.get(path)

    return asyncio.run(main())


def test_the_rich_vin_exercises_every_field() -> None:
    results = call_all(RICH_VIN)
    assert not any(result.is_error for result in results.values())
    days = results["warranty_days"].structured_content or {}
    assert days["total_years"] >= 3 and days["current_year_days"] is not None
    assert any(year["days_in_repair"] > 30 for year in days["repair_years"])
    assert "превышен лимит 30 дней" in text(results["warranty_days"])

    history = results["warranty_history"].structured_content or {}
    assert history["total_records"] >= 3
    codes = {record["dealer"]["code"] for record in history["records"]}
    assert {"57002", "78015", None} <= codes  # sent as int, str and null
    assert all(
        record["fault_part"] and record["replaced_parts"] and record["operations"] for record in history["records"]
    )
    assert history["total_parts_replaced"] > history["total_records"]

    maintenance = results["maintenance_history"].structured_content or {}
    assert maintenance["maintenance_types"][:3] == ["ТО-1", "ТО-2", "ТО-3"]
    assert all(record["odometer"] and record["date"] and record["dealer"]["city"] for record in maintenance["records"])

    repairs = results["vehicle_repairs_history"].structured_content or {}
    assert len(repairs["repair_types"]) >= 3
    assert any(record["recommendations"] for record in repairs["records"])
    assert any(record["recommendations"] is None for record in repairs["records"])


def test_the_second_vin_has_some_data_and_an_empty_maintenance_list() -> None:
    results = call_all(SOME_VIN)
    assert not any(result.is_error for result in results.values())
    assert (results["warranty_history"].structured_content or {})["total_records"] == 1
    assert (results["maintenance_history"].structured_content or {})["records"] == []
    assert "не найдены" in text(results["maintenance_history"])
    assert (results["vehicle_repairs_history"].structured_content or {})["total_records"] == 2


def test_the_empty_vin_is_not_found_everywhere_and_that_is_not_an_error() -> None:
    for name in ("/api/warranty/", "/api/warranty/records/", "/api/maintenance/", "/api/dnm/"):
        assert raw_get(name + EMPTY_VIN).status_code == 404
    results = call_all(EMPTY_VIN)
    assert set(results) == set(TOOL_NAMES)
    for result in results.values():
        assert not result.is_error
        assert "не найдены" in text(result)
        assert result.meta is not None and result.meta["record_count"] == 0


def test_raw_responses_keep_the_contract_spelling() -> None:
    record = raw_get(f"/api/warranty/records/{RICH_VIN}").json()["records"][0]
    assert {"serial", "ro_open_date", "ro_close_date", "retail_date", "odometr", "dealer", "casual_part",
            "casual_part_descr", "replaced_parts", "op_codes"} <= record.keys()  # fmt: skip
    assert {"replace_part", "replace_part_descr"} == record["replaced_parts"][0].keys()
    assert {"op_code", "op_code_descr"} == record["op_codes"][0].keys()
    assert "repair_data" in raw_get(f"/api/warranty/{RICH_VIN}").json()
    maintenance = raw_get(f"/api/maintenance/{RICH_VIN}").json()
    assert isinstance(maintenance, list) and "ro_date" in maintenance[0]
    dnm = raw_get(f"/api/dnm/{RICH_VIN}").json()
    assert isinstance(dnm, list) and {"ro_close_date", "recomendations", "dealer_name"} <= dnm[0].keys()


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_the_demo_api_requires_the_bearer_key(key: str | None) -> None:
    response = raw_get(f"/api/dnm/{RICH_VIN}", key=key)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


def test_a_wrong_key_becomes_an_authentication_error_result() -> None:
    results = call_all(RICH_VIN, key="wrong-key")
    for result in results.values():
        assert result.is_error
        assert result.meta is not None
        assert (result.meta["error_type"], result.meta["http_status"]) == ("authentication_error", 401)
        assert "wrong-key" not in result.model_dump_json(by_alias=True)


def test_over_a_real_socket_status_and_calls_work() -> None:
    async def main(url: str, key: str) -> tuple[str, Any]:
        extra = create(settings(url=url, key=key))
        try:
            status = await extra.status()
            tool = next(t for t in extra.tools if t.name == "warranty_history")
            result = await tool.handler({"vin": "xweg 3417 bn000 9095"})
            return status.state, result
        finally:
            await extra.aclose()

    with LoopbackServer(create_repairs_api(api_key=KEY)) as server:
        state, result = asyncio.run(main(server.url, KEY))
        assert state == "reachable"
        assert not result.is_error and result.structured_content["vin"] == RICH_VIN
        assert "Обращение № 100234" in text(result)
        bad_state, bad = asyncio.run(main(server.url, "wrong-key"))
        assert bad_state == "failing"
        assert bad.is_error
    gone_state, gone = asyncio.run(main(server.url, KEY))  # the server is stopped now
    assert gone_state == "failing"
    assert gone.is_error and gone.meta is not None and gone.meta["error_type"] == "network_error"
