"""The four repair-history tools (the `repairs` extra in `extra.py` serves them).

    tools = [build_tool(spec, client) for spec in SPECS]
    result = await tools[0].handler({"vin": "XWEG3417BN0009095"})

Every handler returns a `CallToolResult`: Russian text, `structuredContent` matching the tool's
`outputSchema`, and `_meta` (execution_time_ms, data_source, record_count, timestamp, vin;
error_type and http_status on failures). Handlers never raise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp import types
from pydantic import BaseModel, Field

from ...errors import UpstreamError
from ...local_tools import LocalTool, error_result, execution_meta
from . import formatters, models
from .client import RepairsApiClient
from .vin import VIN_FORMAT_HINT, InvalidVinError, validate_vin

logger = logging.getLogger(__name__)

ANNOTATIONS = types.ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


class VinArgs(BaseModel):
    # No pattern in the schema: we accept lower case, dashes and Cyrillic look-alikes, then normalise.
    vin: str = Field(description=f"{VIN_FORMAT_HINT}; регистр, пробелы и дефисы не важны.")


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    description: str
    data_source: str
    subject: str  # completes "Не удалось получить ..."
    fetch: Callable[[RepairsApiClient, str], Awaitable[Any]]
    parse: Callable[[str, Any], BaseModel]
    render: Callable[[Any], str]
    output: type[BaseModel]
    count: Callable[[Any], int]


SPECS: tuple[_Spec, ...] = (
    _Spec(
        name="warranty_days",
        title="Дни в ремонте по годам гарантии",
        description=(
            "Статистика дней, проведённых автомобилем в ремонте, по годам владения (гарантийным годам): "
            "дни в каждом году, в текущем году и всего, с отметкой, где превышен лимит 30 дней в году "
            "(ст. 18 Закона РФ «О защите прав потребителей»). Параметр: VIN — 17 символов, латинские "
            "буквы (кроме I, O, Q) и цифры."
        ),
        data_source="warranty_api",
        subject="статистику дней в ремонте",
        fetch=lambda client, vin: client.warranty_days(vin),
        parse=models.parse_warranty_days,
        render=formatters.format_warranty_days_text,
        output=models.WarrantyDaysStructured,
        count=lambda data: len(data.repair_years),
    ),
    _Spec(
        name="warranty_history",
        title="История гарантийных обращений",
        description=(
            "История гарантийных обращений автомобиля: номер и дата обращения, пробег, дилер, "
            "неисправная деталь, заменённые детали и выполненные работы (коды операций), итоги. "
            "Параметр: VIN — 17 символов, латинские буквы (кроме I, O, Q) и цифры."
        ),
        data_source="warranty_api",
        subject="историю гарантийных обращений",
        fetch=lambda client, vin: client.warranty_records(vin),
        parse=models.parse_warranty_history,
        render=formatters.format_warranty_history_text,
        output=models.WarrantyHistoryStructured,
        count=lambda data: data.total_records,
    ),
    _Spec(
        name="maintenance_history",
        title="История технического обслуживания",
        description=(
            "История планового технического обслуживания (ТО-1, ТО-2, …): вид ТО, дата, пробег, дилер, "
            "а также список видов пройденного ТО. Параметр: VIN — 17 символов, латинские буквы "
            "(кроме I, O, Q) и цифры."
        ),
        data_source="maintenance_api",
        subject="историю технического обслуживания",
        fetch=lambda client, vin: client.maintenance(vin),
        parse=models.parse_maintenance_history,
        render=formatters.format_maintenance_history_text,
        output=models.MaintenanceHistoryStructured,
        count=lambda data: data.total_records,
    ),
    _Spec(
        name="vehicle_repairs_history",
        title="История ремонтов в дилерской сети",
        description=(
            "История ремонтов автомобиля в дилерской сети (DNM): дата, пробег, дилер, вид ремонта, "
            "причина обращения и рекомендации, а также список видов ремонта. Параметр: VIN — "
            "17 символов, латинские буквы (кроме I, O, Q) и цифры."
        ),
        data_source="dnm_api",
        subject="историю ремонтов в дилерской сети",
        fetch=lambda client, vin: client.dnm(vin),
        parse=models.parse_vehicle_repairs,
        render=formatters.format_vehicle_repairs_history_text,
        output=models.VehicleRepairsHistoryStructured,
        count=lambda data: data.total_records,
    ),
)
TOOL_NAMES = tuple(spec.name for spec in SPECS)


def tool_definition(spec: _Spec) -> types.Tool:
    """The `types.Tool` served in tools/list (needs no client)."""
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=VinArgs.model_json_schema(),
        # Pydantic keeps nested models in "$defs" with local "$ref"s; the SDK client resolves those
        # within the schema document (verified by tests through mcp.Client), so no inlining.
        output_schema=spec.output.model_json_schema(),
        annotations=ANNOTATIONS,
    )


def build_tool(spec: _Spec, client: RepairsApiClient) -> LocalTool:
    """One LocalTool: definition from the spec, handler bound to `client`."""

    async def handler(arguments: dict[str, Any]) -> types.CallToolResult:
        return await _run(spec, client, arguments)

    return LocalTool(definition=tool_definition(spec), handler=handler)


async def _run(spec: _Spec, client: RepairsApiClient, arguments: dict[str, Any]) -> types.CallToolResult:
    started = time.perf_counter()
    meta: dict[str, Any] = {"data_source": spec.data_source}
    try:
        vin = validate_vin((arguments or {}).get("vin"))
    except InvalidVinError as exc:
        return error_result(str(exc), meta=_finish(meta, started, error_type="invalid_vin"))
    meta["vin"] = vin
    logger.info("%s: VIN %s", spec.name, vin)
    try:
        data = spec.parse(vin, await spec.fetch(client, vin))
    except UpstreamError as exc:
        logger.warning("%s: VIN %s: %s (%s)", spec.name, vin, exc.error_type, exc.http_status or "-")
        if exc.http_status is not None:
            meta["http_status"] = exc.http_status
        text = f"Не удалось получить {spec.subject} для VIN {vin}. {exc}"
        return error_result(text, meta=_finish(meta, started, error_type=exc.error_type))
    except Exception as exc:  # top-level handler: a bug must still come back as a result
        logger.exception("%s: VIN %s failed", spec.name, vin)
        text = (
            f"Не удалось получить {spec.subject} для VIN {vin}: внутренняя ошибка ({type(exc).__name__}). "
            "Сообщите администратору прокси."
        )
        return error_result(text, meta=_finish(meta, started, error_type="unexpected_error"))
    meta["record_count"] = spec.count(data)
    if not meta["record_count"]:
        logger.info("%s: VIN %s: no records", spec.name, vin)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=spec.render(data))],
        structured_content=data.model_dump(mode="json"),
        _meta=_finish(meta, started),
    )


def _finish(meta: dict[str, Any], started: float, *, error_type: str | None = None) -> dict[str, Any]:
    meta.update(execution_meta(started))
    if error_type is not None:
        meta["error_type"] = error_type
    return meta
