"""Russian text (`content`) for the repairs tools, built from the structured models.

    format_warranty_days_text(parse_warranty_days(vin, payload))

Many MCP hosts show the model only the text, so it carries every record (up to a cap), not a
summary; `structuredContent` carries the same data for programs.
"""

from __future__ import annotations

from datetime import datetime

from .models import (
    Dealer,
    MaintenanceHistoryStructured,
    Part,
    VehicleRepairsHistoryStructured,
    WarrantyDaysStructured,
    WarrantyHistoryStructured,
)

# ст. 18 Закона РФ «О защите прав потребителей»: the owner of a technically complex product may
# demand a replacement or a refund if it was unusable "более чем тридцать дней" in a warranty year.
REPAIR_DAYS_LIMIT = 30
LAW = "ст. 18 Закона РФ «О защите прав потребителей»"
MAX_RECORDS_IN_TEXT = 100  # keeps a fleet car's history from flooding the model's context


def plural(n: int, one: str, few: str, many: str) -> str:
    """Russian plural form for `n`: plural(1, "день", "дня", "дней") -> "день"."""
    n = abs(n)
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


def days(n: int) -> str:
    return f"{n} {plural(n, 'день', 'дня', 'дней')}"


def format_date(value: str | None) -> str:
    """ISO date or datetime -> 01.10.2025; anything else is shown as the API sent it."""
    if not value:
        return "дата не указана"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return parsed.strftime("%d.%m.%Y")


def format_odometer(value: int | None) -> str:
    return "пробег не указан" if value is None else f"пробег {value:,} км".replace(",", " ")


def format_dealer(dealer: Dealer | None) -> str:
    if dealer is None:
        return "не указан"
    text = dealer.name or "без названия"
    if dealer.code:
        text += f" (код {dealer.code})"
    if dealer.city:
        text += f", {dealer.city}"
    return text


def format_warranty_days_text(data: WarrantyDaysStructured) -> str:
    if not data.repair_years:
        return f"Данные о днях в ремонте для VIN {data.vin} не найдены."
    lines = [
        f"Статистика ремонтов для VIN {data.vin}:",
        f"Всего лет владения: {data.total_years}",
        f"Общее количество дней в ремонте: {data.total_days_in_repair}",
        "",
    ]
    for year in data.repair_years:
        current = " (текущий)" if year.is_current_year else ""
        spent = f"{days(year.days_in_repair)} в ремонте{_mark(year.days_in_repair)}"
        lines.append(f"Год владения {year.year_number}{current}: {spent}")
    lines.append("")
    if data.current_year_days is None:
        lines.append("Текущий год владения в данных не отмечен.")
    else:
        lines.append(f"В текущем году: {days(data.current_year_days)}{_current_note(data.current_year_days)}")
    over = [str(year.year_number) for year in data.repair_years if year.days_in_repair > REPAIR_DAYS_LIMIT]
    if over:
        lines.append(
            f"Лимит {REPAIR_DAYS_LIMIT} дней в ремонте за гарантийный год превышен в году владения "
            f"{', '.join(over)}: это может давать владельцу право потребовать замены автомобиля или "
            f"возврата уплаченной суммы ({LAW})."
        )
    else:
        lines.append(f"Лимит {REPAIR_DAYS_LIMIT} дней в ремонте за гарантийный год ({LAW}) не превышен.")
    return "\n".join(lines)


def _mark(n: int) -> str:
    if n > REPAIR_DAYS_LIMIT:
        return f" — превышен лимит {REPAIR_DAYS_LIMIT} дней"
    if n == REPAIR_DAYS_LIMIT:
        return f" — достигнут лимит {REPAIR_DAYS_LIMIT} дней"
    return ""


def _current_note(n: int) -> str:
    if n > REPAIR_DAYS_LIMIT:
        return f" (лимит {REPAIR_DAYS_LIMIT} дней превышен на {days(n - REPAIR_DAYS_LIMIT)})"
    if n == REPAIR_DAYS_LIMIT:
        return f" (достигнут лимит {REPAIR_DAYS_LIMIT} дней: следующий день в ремонте превысит его)"
    return f" (до лимита {REPAIR_DAYS_LIMIT} дней осталось {days(REPAIR_DAYS_LIMIT - n)})"


def format_warranty_history_text(data: WarrantyHistoryStructured) -> str:
    if not data.records:
        return f"Записи о гарантийных обращениях для VIN {data.vin} не найдены."
    lines = [f"История гарантийных обращений для VIN {data.vin} (всего: {data.total_records}):"]
    for number, record in enumerate(data.records[:MAX_RECORDS_IN_TEXT], start=1):
        serial = f" № {record.serial}" if record.serial else ""
        lines += [
            "",
            f"{number}. Обращение{serial} от {format_date(record.date)}, {format_odometer(record.odometer)}",
            f"   Дилер: {format_dealer(record.dealer)}",
            f"   Неисправная деталь: {_part(record.fault_part)}",
        ]
        lines += _listing("Заменённые детали", [_part(part) for part in record.replaced_parts])
        lines += _listing("Работы", [_pair(op.code, op.description) for op in record.operations])
    lines += _more(data.total_records)
    lines += [
        "",
        f"Итого: обращений {data.total_records}, заменено деталей {data.total_parts_replaced}, "
        f"операций {data.total_operations}.",
    ]
    return "\n".join(lines)


def format_maintenance_history_text(data: MaintenanceHistoryStructured) -> str:
    if not data.records:
        return f"Записи о техническом обслуживании для VIN {data.vin} не найдены."
    lines = [f"История технического обслуживания для VIN {data.vin} (всего: {data.total_records}):", ""]
    for number, record in enumerate(data.records[:MAX_RECORDS_IN_TEXT], start=1):
        kind = record.maintenance_type or "вид ТО не указан"
        lines.append(f"{number}. {kind} — {format_date(record.date)}, {format_odometer(record.odometer)}")
        lines.append(f"   Дилер: {format_dealer(record.dealer)}")
    lines += _more(data.total_records)
    if data.maintenance_types:
        lines += ["", f"Виды обслуживания: {', '.join(data.maintenance_types)}"]
    return "\n".join(lines)


def format_vehicle_repairs_history_text(data: VehicleRepairsHistoryStructured) -> str:
    if not data.records:
        return f"Записи о ремонтах в дилерской сети для VIN {data.vin} не найдены."
    lines = [f"История ремонтов в дилерской сети для VIN {data.vin} (всего: {data.total_records}):"]
    for number, record in enumerate(data.records[:MAX_RECORDS_IN_TEXT], start=1):
        kind = record.repair_type or "вид ремонта не указан"
        lines += [
            "",
            f"{number}. {format_date(record.date)}, {format_odometer(record.odometer)} — {kind}",
            f"   Дилер: {record.dealer_name or 'не указан'}",
        ]
        if record.visit_reason:
            lines.append(f"   Причина обращения: {record.visit_reason}")
        if record.recommendations:
            lines.append(f"   Рекомендации: {record.recommendations}")
    lines += _more(data.total_records)
    if data.repair_types:
        lines += ["", f"Виды ремонта: {', '.join(data.repair_types)}"]
    return "\n".join(lines)


def _pair(code: str | None, description: str | None) -> str:
    return " — ".join(text for text in (code, description) if text) or "не указано"


def _part(part: Part | None) -> str:
    return "не указана" if part is None else _pair(part.part_number, part.description)


def _listing(title: str, items: list[str]) -> list[str]:
    if not items:
        return [f"   {title}: нет"]
    return [f"   {title}:", *(f"     - {item}" for item in items)]


def _more(total: int) -> list[str]:
    if total <= MAX_RECORDS_IN_TEXT:
        return []
    rest = total - MAX_RECORDS_IN_TEXT
    records = plural(rest, "запись", "записи", "записей")
    return ["", f"… и ещё {rest} {records} (полный список — в structuredContent)."]
