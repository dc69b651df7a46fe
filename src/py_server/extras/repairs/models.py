"""Structured output of the repairs tools (`structuredContent`) and the mapping from the raw API.

    model = parse_warranty_history("XWEG3417BN0009095", payload)   # payload: decoded JSON or None (404)
    model.model_dump(mode="json")                                   # -> structuredContent
    WarrantyHistoryStructured.model_json_schema()                   # -> the tool's outputSchema

The output uses the design's names (`odometer`, `recommendations`, `date`, `fault_part`,
`operations`), not the API's spelling (`odometr`, `recomendations`, `ro_*_date`, `casual_part`,
`op_codes`). Records are tolerant: a missing, null or oddly typed field becomes null. A response
of the wrong overall shape raises `UpstreamError(error_type="invalid_response")`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from ...errors import UpstreamError


class Dealer(BaseModel):
    name: str | None = Field(None, description="Наименование дилера")
    code: str | None = Field(None, description="Код дилера (строка; API присылает число или строку)")
    city: str | None = Field(None, description="Город дилера")


class Part(BaseModel):
    part_number: str | None = Field(None, description="Каталожный номер детали")
    description: str | None = Field(None, description="Описание детали")


class Operation(BaseModel):
    code: str | None = Field(None, description="Код операции (работы)")
    description: str | None = Field(None, description="Описание операции")


class RepairYear(BaseModel):
    year_number: int = Field(description="Номер года владения (гарантийного года), с 1")
    is_current_year: bool = Field(description="Текущий год владения")
    days_in_repair: int = Field(description="Дней в ремонте за этот год")


class WarrantyDaysStructured(BaseModel):
    vin: str
    total_years: int = Field(description="Лет владения в данных")
    repair_years: list[RepairYear]
    current_year_days: int | None = Field(description="Дней в ремонте в текущем году; null — год не отмечен")
    total_days_in_repair: int = Field(description="Всего дней в ремонте за все годы")


class WarrantyRecord(BaseModel):
    serial: str | None = Field(None, description="Номер гарантийного обращения")
    date: str | None = Field(None, description="Дата открытия заказ-наряда (ro_open_date)")
    odometer: int | None = Field(None, description="Пробег, км")
    dealer: Dealer | None = None
    fault_part: Part | None = Field(None, description="Деталь, вызвавшая неисправность")
    replaced_parts: list[Part] = Field(default_factory=list, description="Заменённые детали")
    operations: list[Operation] = Field(default_factory=list, description="Выполненные работы")


class WarrantyHistoryStructured(BaseModel):
    vin: str
    records: list[WarrantyRecord]
    total_records: int
    total_parts_replaced: int
    total_operations: int


class MaintenanceRecord(BaseModel):
    vin: str | None = None
    maintenance_type: str | None = Field(None, description="Вид ТО, например «ТО-1»")
    date: str | None = Field(None, description="Дата заказ-наряда (ro_date)")
    odometer: int | None = Field(None, description="Пробег, км")
    dealer: Dealer | None = None


class MaintenanceHistoryStructured(BaseModel):
    vin: str
    records: list[MaintenanceRecord]
    total_records: int
    maintenance_types: list[str] = Field(description="Уникальные виды ТО в порядке появления")


class RepairRecord(BaseModel):
    dealer_name: str | None = None
    date: str | None = Field(None, description="Дата закрытия заказ-наряда (ro_close_date)")
    odometer: int | None = Field(None, description="Пробег, км")
    repair_type: str | None = Field(None, description="Вид ремонта")
    visit_reason: str | None = Field(None, description="Причина обращения")
    recommendations: str | None = Field(None, description="Рекомендации дилера")


class VehicleRepairsHistoryStructured(BaseModel):
    vin: str
    records: list[RepairRecord]
    total_records: int
    repair_types: list[str] = Field(description="Уникальные виды ремонта в порядке появления")


# --- mapping from the raw API ---------------------------------------------------------------------


def parse_warranty_days(vin: str, payload: Any) -> WarrantyDaysStructured:
    """`{"repair_data": [{year_number, is_current_year, days_in_repair}]}`; None (404) is empty."""
    items = [] if payload is None else _records(_field(payload, "repair_data"), "repair_data")
    years = [
        RepairYear(
            # A year without a number keeps its place in the list, which the API sends in order.
            year_number=_int(item.get("year_number")) or position,
            is_current_year=item.get("is_current_year") is True,
            days_in_repair=max(_int(item.get("days_in_repair")) or 0, 0),
        )
        for position, item in enumerate(items, start=1)
    ]
    years.sort(key=lambda year: year.year_number)
    current = [year.days_in_repair for year in years if year.is_current_year]
    return WarrantyDaysStructured(
        vin=vin,
        total_years=max((year.year_number for year in years), default=0),
        repair_years=years,
        current_year_days=current[-1] if current else None,
        total_days_in_repair=sum(year.days_in_repair for year in years),
    )


def parse_warranty_history(vin: str, payload: Any) -> WarrantyHistoryStructured:
    """`{"records": [...]}` with `casual_part`, `replaced_parts`, `op_codes`; None (404) is empty."""
    items = [] if payload is None else _records(_field(payload, "records"), "records")
    records = [
        WarrantyRecord(
            serial=_text(item.get("serial")),
            # The claim is dated by when the car came in; the close date is the fallback.
            date=_text(item.get("ro_open_date")) or _text(item.get("ro_close_date")),
            odometer=_int(item.get("odometr", item.get("odometer"))),
            dealer=_dealer(item.get("dealer")),
            fault_part=_part(item.get("casual_part"), item.get("casual_part_descr")),
            replaced_parts=[
                part
                for raw in _objects(item.get("replaced_parts"))
                if (part := _part(raw.get("replace_part"), raw.get("replace_part_descr"))) is not None
            ],
            operations=[
                Operation(code=_text(raw.get("op_code")), description=_text(raw.get("op_code_descr")))
                for raw in _objects(item.get("op_codes"))
            ],
        )
        for item in items
    ]
    return WarrantyHistoryStructured(
        vin=vin,
        records=records,
        total_records=len(records),
        total_parts_replaced=sum(len(record.replaced_parts) for record in records),
        total_operations=sum(len(record.operations) for record in records),
    )


def parse_maintenance_history(vin: str, payload: Any) -> MaintenanceHistoryStructured:
    """A JSON list of `{vin, maintenance_type, ro_date, odometer, dealer}`; None (404) is empty."""
    items = [] if payload is None else _records(payload, "maintenance")
    records = [
        MaintenanceRecord(
            vin=_text(item.get("vin")) or vin,
            maintenance_type=_text(item.get("maintenance_type")),
            date=_text(item.get("ro_date")) or _text(item.get("date")),
            odometer=_int(item.get("odometer", item.get("odometr"))),
            dealer=_dealer(item.get("dealer")),
        )
        for item in items
    ]
    types = _unique(record.maintenance_type for record in records)
    return MaintenanceHistoryStructured(vin=vin, records=records, total_records=len(records), maintenance_types=types)


def parse_vehicle_repairs(vin: str, payload: Any) -> VehicleRepairsHistoryStructured:
    """A JSON list of DNM records (`ro_close_date`, `recomendations`); None (404) is empty."""
    items = [] if payload is None else _records(payload, "dnm")
    records = [
        RepairRecord(
            dealer_name=_text(item.get("dealer_name")),
            date=_text(item.get("ro_close_date")) or _text(item.get("date")),
            odometer=_int(item.get("odometer", item.get("odometr"))),
            repair_type=_text(item.get("repair_type")),
            visit_reason=_text(item.get("visit_reason")),
            recommendations=_text(item.get("recomendations", item.get("recommendations"))),
        )
        for item in items
    ]
    types = _unique(record.repair_type for record in records)
    return VehicleRepairsHistoryStructured(vin=vin, records=records, total_records=len(records), repair_types=types)


def _invalid(what: str) -> UpstreamError:
    return UpstreamError(
        f"API истории ремонтов вернул данные неожиданной структуры ({what}). "
        "Возможно, изменилась версия API: сообщите администратору сервиса.",
        error_type="invalid_response",
    )


def _field(payload: Any, key: str) -> Any:
    if not isinstance(payload, dict) or key not in payload:
        raise _invalid(f"ожидался объект с полем «{key}», получено: {_kind(payload)}")
    return payload[key]


def _records(value: Any, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(f"{what}: ожидался список записей, получено: {_kind(value)}")
    if not all(isinstance(item, dict) for item in value):
        raise _invalid(f"{what}: в списке есть элементы, которые не являются объектами")
    return value


def _objects(value: Any) -> list[dict[str, Any]]:
    # Nested lists are best-effort: a stray non-object entry is skipped, not fatal.
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _kind(value: Any) -> str:
    return {dict: "объект", list: "список", str: "строка"}.get(type(value), type(value).__name__)


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # dealer code 57002.0 -> "57002"
    if isinstance(value, str | int | float):
        text = str(value).strip()
        return text or None
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return round(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.replace(" ", "").replace("\u00a0", "")  # "42 284" as typed in a DMS
        try:
            return int(text)
        except ValueError:
            try:
                return _int(float(text))
            except ValueError:
                return None
    return None


def _dealer(value: Any) -> Dealer | None:
    if isinstance(value, str):  # some exports send just the dealer's name
        return Dealer(name=_text(value))
    if not isinstance(value, dict):
        return None
    dealer = Dealer(name=_text(value.get("name")), code=_text(value.get("code")), city=_text(value.get("city")))
    return dealer if any((dealer.name, dealer.code, dealer.city)) else None


def _part(number: Any, description: Any) -> Part | None:
    part = Part(part_number=_text(number), description=_text(description))
    return part if part.part_number or part.description else None


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))
