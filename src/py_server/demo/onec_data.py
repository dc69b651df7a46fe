"""The demo 1C base "Управление торговлей (демо)": its data, tools, resources and prompts.

Everything here is plain dicts in the shapes the 1C HTTP service sends (see the contract), so the
emulator can serve them as they are. Tool handlers take the `arguments` dict and return the
`tools/call` result dict; a handler raises `ToolError(detail)` for a failure that 1C reports as
`isError: true` ("Ошибка выполнения инструмента '<name>': <detail>"). A tool made with
`takes_context=True` gets a second argument, the `CallContext`: the 1C user the request runs as,
and the person named in the request's `X-MCP-User` header.

The base's 1C users (`demo_users`) have roles; a role grants rights (`ROLE_RIGHTS`), and a tool or
resource that needs a right (`DemoTool.right`, `DemoResource.right`) is hidden from a user without
it. The emulator adds its service account (`EmulatorState.username`, role `ПолныеПрава`).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any, cast

from .chart import bar_chart

BASE_NAME = "Управление торговлей (демо)"


class ToolError(Exception):
    """A tool failure that 1C reports as an `isError` result, not as a JSON-RPC error."""


# --- users and rights -----------------------------------------------------------------------

FULL_RIGHTS = "ПолныеПрава"  # the role that grants every right, as in 1C's typical configurations
RIGHT_POSTING = "Проведение"  # post documents
RIGHT_PERSONAL_DATA = "ПерсональныеДанные"  # see people's and counterparties' personal data
ROLE_RIGHTS: dict[str, frozenset[str]] = {
    "Бухгалтер": frozenset({RIGHT_POSTING, RIGHT_PERSONAL_DATA}),
    "Кладовщик": frozenset(),  # stock and sales only
}


@dataclass(frozen=True)
class DemoUser:
    """A 1C user of the base: login, password, full name and roles."""

    name: str
    password: str = field(repr=False)
    full_name: str
    roles: frozenset[str]
    http_service: bool = True  # False: authenticates, but has no right to the HTTP service (403)

    def may(self, right: str | None) -> bool:
        """Whether one of the user's roles grants `right` (None: needs no right)."""
        if right is None or FULL_RIGHTS in self.roles:
            return True
        return any(right in ROLE_RIGHTS.get(role, frozenset()) for role in self.roles)


def demo_users() -> dict[str, DemoUser]:
    """The base's users besides the service account. Basic auth is UTF-8, so Cyrillic logins work."""
    users = (
        DemoUser("accountant", "accountant", "Бухгалтер", frozenset({"Бухгалтер"})),
        DemoUser("storekeeper", "storekeeper", "Кладовщик", frozenset({"Кладовщик"})),
        DemoUser("Иванов", "пароль", "Иванов Иван Иванович", frozenset({"Бухгалтер"})),
        DemoUser("norights", "norights", "Без права на HTTP-сервис", frozenset(), http_service=False),
    )
    return {user.name: user for user in users}


@dataclass(frozen=True)
class CallContext:
    """What 1C knows about a request: the user it runs as, and whom the caller says it acts for."""

    user: DemoUser
    acting_for: str | None = None  # the `X-MCP-User` header, percent-decoded


ToolHandler = Callable[[dict[str, Any]], dict[str, Any]]
ContextToolHandler = Callable[[dict[str, Any], CallContext], dict[str, Any]]


@dataclass(frozen=True)
class DemoTool:
    definition: dict[str, Any]
    handler: ToolHandler | ContextToolHandler
    right: str | None = None  # the right a user needs to see and run the tool
    takes_context: bool = False  # the handler takes (arguments, context)

    @property
    def name(self) -> str:
        return str(self.definition["name"])

    def run(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        if self.takes_context:
            return cast(ContextToolHandler, self.handler)(arguments, context)
        return cast(ToolHandler, self.handler)(arguments)


@dataclass(frozen=True)
class DemoResource:
    uri: str
    name: str
    description: str
    mime_type: str
    text: str | None = None
    blob: bytes | None = None
    right: str | None = None  # the right a user needs to see and read the resource

    def listing(self) -> dict[str, Any]:
        return {"uri": self.uri, "name": self.name, "description": self.description}  # no mimeType: 1C

    def contents(self) -> dict[str, Any]:
        # `type` is the 1C extension's own discriminator, MCP has no such key.
        if self.blob is not None:
            blob = base64.b64encode(self.blob).decode("ascii")
            return {"type": "blob", "uri": self.uri, "mimeType": self.mime_type, "blob": blob}
        return {"type": "text", "uri": self.uri, "mimeType": self.mime_type, "text": self.text or ""}


@dataclass(frozen=True)
class DemoPrompt:
    name: str
    description: str
    arguments: tuple[dict[str, Any], ...]
    messages: tuple[tuple[str, str], ...]  # (role, template with {argument} fields)
    fallbacks: Mapping[str, str] | None = None  # text for an optional argument left out

    def listing(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "arguments": list(self.arguments)}

    def render(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        values = {**(self.fallbacks or {}), **{k: str(v) for k, v in arguments.items() if v not in (None, "")}}
        for argument in self.arguments:
            if argument["required"] and argument["name"] not in values:
                raise ValueError(f"Не заполнен обязательный аргумент '{argument['name']}' промпта '{self.name}'")
        messages = [
            {"role": role, "content": {"type": "text", "text": text.format_map(values)}} for role, text in self.messages
        ]
        return {"description": self.description, "messages": messages}


# --- the base's content ---------------------------------------------------------------------

# name -> (code, unit, price)
PRODUCTS: dict[str, tuple[str, str, float]] = {
    "Бумага офисная А4 (500 л.)": ("00-00000001", "пач", 450.0),
    "Картридж HP 85A": ("00-00000002", "шт", 3900.0),
    "Ручка шариковая синяя": ("00-00000003", "шт", 25.0),
    "Степлер №24/6": ("00-00000004", "шт", 320.0),
    "Папка-регистратор 75 мм": ("00-00000005", "шт", 210.0),
    "Кофе в зёрнах 1 кг": ("00-00000006", "кг", 1450.0),
    "Вода питьевая 19 л": ("00-00000007", "бут", 380.0),
    'Монитор 24" Philips 243V7': ("00-00000008", "шт", 11900.0),
}


@dataclass(frozen=True)
class Bank:
    name: str
    bic: str
    corr_account: str  # к/с, keyed with the BIC like the real ones


@dataclass(frozen=True)
class Counterparty:
    """A counterparty's details as 1C keeps them. Invented, with valid check digits (ИНН, ОГРН, account key)."""

    name: str
    inn: str
    kpp: str  # "" for a sole trader (ИП), who has none
    ogrn: str  # ОГРНИП (15 digits) for a sole trader
    address: str
    bank: Bank
    account: str  # р/с
    phone: str
    email: str
    contact: str  # the contact person: ФИО, position
    contact_phone: str
    contact_email: str

    def details(self) -> dict[str, Any]:
        """The card as structuredContent: 1C's attribute names as keys."""
        return {
            "Наименование": self.name, "ИНН": self.inn, "КПП": self.kpp, "ОГРН": self.ogrn,
            "ЮридическийАдрес": self.address, "Телефон": self.phone, "Email": self.email,
            "Банк": self.bank.name, "БИК": self.bank.bic, "РасчетныйСчет": self.account,
            "КоррСчет": self.bank.corr_account,
            "КонтактноеЛицо": {"Представление": self.contact, "Телефон": self.contact_phone,
                               "Email": self.contact_email},
        }  # fmt: skip

    def card(self) -> str:
        """The card as 1C prints it (Markdown)."""
        tax = f"ИНН/КПП {self.inn}/{self.kpp}" if self.kpp else f"ИНН {self.inn}"
        return "\n".join([
            f"# {self.name}", "",
            f"- **{tax}**, ОГРН{'ИП' if not self.kpp else ''} {self.ogrn}",
            f"- Юридический адрес: {self.address}",
            f"- Телефон: {self.phone}, e-mail: {self.email}",
            f"- Банк: {self.bank.name}, БИК {self.bank.bic}",
            f"- р/с {self.account}, к/с {self.bank.corr_account}",
            f"- Контактное лицо: {self.contact}, тел. {self.contact_phone}, {self.contact_email}",
        ])  # fmt: skip


_BANK_MOSCOW = Bank("ПАО «Банк Пример», г. Москва", "044525974", "30101810900000000974")
_BANK_SPB = Bank("АО «Балтийский Пример Банк», г. Санкт-Петербург", "044030786", "30101810600000000786")
_BANK_NSK = Bank("ПАО «Сибирский Пример Банк», г. Новосибирск", "045004763", "30101810200000000763")
_BANK_URAL = Bank("АО «Уральский Пример Банк», г. Екатеринбург", "046577974", "30101810200000000974")
# Invented people and organisations; any likeness to a real one is chance.
COUNTERPARTY_DETAILS: tuple[Counterparty, ...] = (
    Counterparty("ООО «Ромашка»", "7762096653", "776201001", "1027766392334",
                 "125009, г. Москва, ул. Тверская, д. 7, оф. 12", _BANK_MOSCOW, "40702810927365791706",
                 "+7 (495) 788-12-34", "info@romashka.example.ru",
                 "Иванова Светлана Петровна, менеджер по закупкам", "+7 (916) 482-17-35",
                 "s.ivanova@romashka.example.ru"),
    Counterparty("ИП Сидоров Алексей Викторович", "503704505286", "", "304504806358178",
                 "141070, Московская обл., г. Королёв, ул. Ленина, д. 3, кв. 41", _BANK_MOSCOW,
                 "40802810117429247411", "8 (903) 774-20-19", "sidorov.av@mail.example.ru",
                 "Сидоров Алексей Викторович, индивидуальный предприниматель", "+79852604471",
                 "sidorov.av@mail.example.ru"),
    Counterparty("АО «Вектор»", "7866773733", "786601001", "1167821468814",
                 "196084, г. Санкт-Петербург, Московский пр-т, д. 97, лит. А", _BANK_SPB, "40702810286140831600",
                 "+7 (812) 336-45-90", "office@vector.example.ru",
                 "Орлова Наталья Викторовна, главный бухгалтер", "+7 921 305-66-14",
                 "n.orlova@vector.example.ru"),
    Counterparty("ООО «ТехноСнаб»", "5486993464", "548601001", "1165497369938",
                 "630099, г. Новосибирск, ул. Советская, д. 18, оф. 305", _BANK_NSK, "40702810163237245511",
                 "+7 (383) 209-14-77", "info@tehnosnab.example.ru",
                 "Кузнецов Павел Андреевич, коммерческий директор", "8-913-204-77-15",
                 "p.kuznetsov@tehnosnab.example.ru"),
    Counterparty("ООО «Северный ветер»", "2920020876", "292001001", "1022956327294",
                 "163000, г. Архангельск, наб. Северной Двины, д. 30", _BANK_SPB, "40702810783020291067",
                 "8 (8182) 20-45-67", "zakaz@sev-veter.example.ru",
                 "Белов Сергей Николаевич, начальник отдела снабжения", "+7 (911) 550-31-08",
                 "s.belov@sev-veter.example.ru"),
    Counterparty("ЗАО «Гранит»", "6621219519", "662101001", "1026651817565",
                 "620014, г. Екатеринбург, ул. Малышева, д. 51, оф. 1204", _BANK_URAL, "40702810097627113486",
                 "+7 (343) 371-92-40", "granit@granit.example.ru",
                 "Волков Игорь Семёнович, генеральный директор", "+7 (922) 118-55-33",
                 "i.volkov@granit.example.ru"),
)  # fmt: skip
COUNTERPARTIES: dict[str, str] = {counterparty.name: counterparty.inn for counterparty in COUNTERPARTY_DETAILS}


@dataclass(frozen=True)
class Employee:
    """A person on the staff list. Invented, with valid check digits (СНИЛС, ИНН)."""

    number: str  # табельный номер
    name: str
    position: str
    department: str
    born: str  # ISO date
    snils: str
    inn: str
    passport: str  # серия и номер
    phone: str
    email: str

    def as_json(self) -> dict[str, Any]:
        return {
            "ТабельныйНомер": self.number, "ФИО": self.name, "Должность": self.position,
            "Подразделение": self.department, "ДатаРождения": self.born, "СНИЛС": self.snils, "ИНН": self.inn,
            "Паспорт": self.passport, "Телефон": self.phone, "Email": self.email,
        }  # fmt: skip


STAFF: tuple[Employee, ...] = (
    Employee("0000000001", "Соколов Андрей Михайлович", "Генеральный директор", "Администрация", "1975-04-18",
             "046-962-420 81", "776284809735", "45 03 417293", "+7 (916) 201-33-45", "a.sokolov@demo-trade.example.ru"),
    Employee("0000000002", "Петрова Мария Сергеевна", "Главный бухгалтер", "Бухгалтерия", "1985-11-03",
             "705-786-222 14", "771027344491", "45 10 582016", "+7 (903) 774-20-19", "m.petrova@demo-trade.example.ru"),
    Employee("0000000003", "Никитина Ольга Андреевна", "Бухгалтер", "Бухгалтерия", "1993-02-27",
             "563-357-148 02", "506480346113", "46 13 730145", "8 (926) 118-40-52", "o.nikitina@demo-trade.example.ru"),
    Employee("0000000004", "Фёдоров Кирилл Игоревич", "Менеджер по продажам", "Отдел продаж", "1990-07-09",
             "334-402-717 40", "777050443572", "45 11 264908", "+7 (985) 260-44-71", "k.fedorov@demo-trade.example.ru"),
    Employee("0000000005", "Лебедева Анна Викторовна", "Менеджер по продажам", "Отдел продаж", "1996-12-15",
             "625-112-133 35", "500575752200", "46 17 905371", "8-912-640-33-87", "a.lebedeva@demo-trade.example.ru"),
    Employee("0000000006", "Смирнов Дмитрий Олегович", "Кладовщик", "Склад", "1998-06-05",
             "290-599-706 26", "779470049170", "45 19 602318", "+7 (915) 730-04-12", "d.smirnov@demo-trade.example.ru"),
)  # fmt: skip
WAREHOUSES = ("Основной склад", "Склад «Южный»", "Розничный магазин")

_P = list(PRODUCTS)
_C = list(COUNTERPARTIES)
_W = WAREHOUSES
# (number, date, counterparty, warehouse, [(product, quantity)]) — prices come from PRODUCTS.
DOCUMENTS: tuple[tuple[str, str, str, str, tuple[tuple[str, float], ...]], ...] = (
    ("ТД00-000001", "2024-01-09", _C[0], _W[0], ((_P[0], 20), (_P[2], 100), (_P[4], 15))),
    ("ТД00-000002", "2024-01-11", _C[1], _W[2], ((_P[5], 3), (_P[6], 4))),
    ("ТД00-000003", "2024-01-15", _C[2], _W[0], ((_P[7], 3), (_P[1], 5))),
    ("ТД00-000004", "2024-01-22", _C[3], _W[1], ((_P[0], 50), (_P[3], 10), (_P[2], 200))),
    ("ТД00-000005", "2024-01-29", _C[0], _W[0], ((_P[1], 2), (_P[6], 10))),
    ("ТД00-000006", "2024-02-02", _C[4], _W[1], ((_P[0], 30), (_P[4], 40))),
    ("ТД00-000007", "2024-02-07", _C[5], _W[0], ((_P[7], 6), (_P[3], 12), (_P[2], 150))),
    ("ТД00-000008", "2024-02-14", _C[1], _W[2], ((_P[5], 5), (_P[6], 6))),
    ("ТД00-000009", "2024-02-20", _C[2], _W[0], ((_P[1], 8), (_P[0], 40))),
    ("ТД00-000010", "2024-02-28", _C[3], _W[1], ((_P[4], 25), (_P[3], 5))),
    ("ТД00-000011", "2024-03-04", _C[0], _W[0], ((_P[0], 25), (_P[5], 2), (_P[6], 8))),
    ("ТД00-000012", "2024-03-12", _C[4], _W[1], ((_P[7], 2), (_P[2], 300))),
    ("ТД00-000013", "2024-03-18", _C[5], _W[0], ((_P[1], 4), (_P[4], 20), (_P[0], 60))),
    ("ТД00-000014", "2024-03-25", _C[2], _W[0], ((_P[7], 4), (_P[3], 8))),
    ("ТД00-000015", "2024-03-29", _C[1], _W[2], ((_P[5], 4), (_P[6], 12), (_P[2], 50))),
)


@dataclass(frozen=True)
class SaleRow:
    date: date
    number: str
    counterparty: str
    warehouse: str
    product: str
    quantity: float
    price: float

    @property
    def amount(self) -> float:
        return round(self.quantity * self.price, 2)

    def as_json(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(), "number": self.number, "counterparty": self.counterparty,
            "warehouse": self.warehouse, "product": self.product, "quantity": self.quantity,
            "price": self.price, "amount": self.amount,
        }  # fmt: skip


SALES: tuple[SaleRow, ...] = tuple(
    SaleRow(date.fromisoformat(day), number, counterparty, warehouse, product, float(qty), PRODUCTS[product][2])
    for number, day, counterparty, warehouse, lines in DOCUMENTS
    for product, qty in lines
)

_REF = "СправочникСсылка"
METADATA: dict[str, dict[str, tuple[str, list[tuple[str, str]]]]] = {
    "Справочники": {
        "Номенклатура": ("Номенклатура", [("Код", "Строка(11)"), ("Наименование", "Строка(100)"),
                                          ("ЕдиницаИзмерения", "Строка(10)"), ("Цена", "Число(15,2)")]),
        "Контрагенты": ("Контрагенты", [("Код", "Строка(9)"), ("Наименование", "Строка(150)"),
                                        ("ИНН", "Строка(12)")]),
        "Склады": ("Склады", [("Код", "Строка(9)"), ("Наименование", "Строка(100)")]),
    },
    "Документы": {
        "РеализацияТоваровУслуг": ("Реализация товаров и услуг", [
            ("Номер", "Строка(11)"), ("Дата", "Дата"), ("Контрагент", f"{_REF}.Контрагенты"),
            ("Склад", f"{_REF}.Склады"), ("СуммаДокумента", "Число(15,2)"),
            ("Товары.Номенклатура", f"{_REF}.Номенклатура"), ("Товары.Количество", "Число(15,3)"),
            ("Товары.Цена", "Число(15,2)"), ("Товары.Сумма", "Число(15,2)")]),
    },
    "РегистрыНакопления": {
        "Продажи": ("Продажи", [("Период", "Дата"), ("Номенклатура", f"{_REF}.Номенклатура"),
                                ("Контрагент", f"{_REF}.Контрагенты"), ("Количество", "Число(15,3)"),
                                ("Сумма", "Число(15,2)")]),
        "ТоварыНаСкладах": ("Товары на складах", [("Период", "Дата"), ("Склад", f"{_REF}.Склады"),
                                                  ("Номенклатура", f"{_REF}.Номенклатура"),
                                                  ("ВНаличии", "Число(15,3)")]),
    },
}  # fmt: skip
SINGULAR = {"Справочники": "Справочник", "Документы": "Документ", "РегистрыНакопления": "РегистрНакопления"}


# --- helpers --------------------------------------------------------------------------------


def text_result(text: str, **extra: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": False, **extra}


def money(value: float) -> str:
    """1C's number format: "12 345,50"."""
    return f"{value:,.2f}".replace(",", " ").replace(".", ",")


def parse_date(value: Any, argument: str) -> date:
    """Accept ISO dates, 1C's ISO date-times and the Russian ДД.ММ.ГГГГ, as 1C's XMLЗначение would."""
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ToolError(f"Неверный формат даты '{text}' в параметре '{argument}': ожидается ГГГГ-ММ-ДД")


def select_sales(arguments: Mapping[str, Any]) -> list[SaleRow]:
    start = parse_date(arguments["period_start"], "period_start") if arguments.get("period_start") else None
    end = parse_date(arguments["period_end"], "period_end") if arguments.get("period_end") else None
    counterparty = str(arguments.get("counterparty") or "").casefold()
    product = str(arguments.get("product") or "").casefold()
    return [  # substring filters, like ПОДОБНО "%...%" in a 1C query
        row for row in SALES
        if (start is None or row.date >= start) and (end is None or row.date <= end)
        and counterparty in row.counterparty.casefold() and product in row.product.casefold()
    ]  # fmt: skip


def find_document(number: Any) -> tuple[str, str, str, str, tuple[tuple[str, float], ...]]:
    for document in DOCUMENTS:
        if document[0].casefold() == str(number).strip().casefold():
            return document
    raise ToolError(f"Документ '{number}' не найден")


@lru_cache(maxsize=64)
def chart_png(values: tuple[float, ...], width: int = 320, height: int = 160) -> bytes:
    return bar_chart(values, width, height)  # cached: the pure-Python encoder is the slow part


def beep_wav(seconds: float = 0.1, frequency: float = 440.0, rate: int = 8000) -> bytes:
    """A tiny valid WAV (8-bit mono PCM) for the audio content item."""
    samples = bytes(128 + round(100 * math.sin(2 * math.pi * frequency * i / rate)) for i in range(int(rate * seconds)))
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    return (
        b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", len(samples)) + samples
    )  # fmt: skip


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def b64(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def positive_int(value: Any, argument: str) -> int:
    # 1C converts loosely (Число("20")), so "20" and 20.0 are as good as 20.
    try:
        number = float(str(value).strip().replace(",", "."))
    except ValueError:
        number = math.nan
    if not number.is_integer() or number < 1:
        raise ToolError(f"Параметр '{argument}' должен быть целым положительным числом, получено '{value}'")
    return int(number)


def schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


def string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


# --- tools ----------------------------------------------------------------------------------


def resolve_object(name: Any) -> tuple[str, str]:
    """ "Справочник.Номенклатура", "Справочники.Номенклатура" or just "Номенклатура"."""
    text = str(name).strip()
    prefix, _, short = text.rpartition(".")
    for kind, objects in METADATA.items():
        if short in objects and prefix in ("", kind, SINGULAR[kind]):
            return kind, short
    raise ToolError(f"Объект метаданных '{text}' не найден")


def describe_text(kind: str, name: str) -> str:
    synonym, attributes = METADATA[kind][name]
    lines = [f"{SINGULAR[kind]}.{name} «{synonym}»", "Реквизиты:"]
    return "\n".join(lines + [f"  {attribute}: {kind_}" for attribute, kind_ in attributes])


def get_metadata(arguments: dict[str, Any]) -> dict[str, Any]:
    kind = arguments.get("type")
    if kind and kind not in METADATA:
        raise ToolError(f"Неизвестный вид метаданных '{kind}'. Допустимые значения: {', '.join(METADATA)}")
    lines: list[str] = []
    for current in [kind] if kind else list(METADATA):
        lines.append(f"{current}:")
        lines += [f"  {SINGULAR[current]}.{name} — {syn}" for name, (syn, _) in METADATA[current].items()]
    return text_result("\n".join(lines))


def describe_object(arguments: dict[str, Any]) -> dict[str, Any]:
    return text_result(describe_text(*resolve_object(arguments["name"])))


SALES_HEADER = "Дата | Документ | Контрагент | Склад | Номенклатура | Количество | Цена | Сумма"


def sales_line(row: SaleRow) -> str:
    return (
        f"{row.date:%d.%m.%Y} | {row.number} | {row.counterparty} | {row.warehouse} | {row.product} | "
        f"{row.quantity:g} | {money(row.price)} | {money(row.amount)}"
    )


def query_sales(arguments: dict[str, Any]) -> dict[str, Any]:
    rows = select_sales(arguments)
    shown = rows[: positive_int(arguments.get("limit", QUERY_SALES_LIMIT), "limit")]
    total = round(sum(row.amount for row in rows), 2)
    footer = f"Показано строк: {len(shown)} из {len(rows)}; сумма по отбору: {money(total)} руб."
    structured = {
        "rows": [row.as_json() for row in shown],
        "count": len(shown),
        "total_rows": len(rows),
        "total_amount": total,
    }
    meta = {"ru.1c.demo/truncated": len(shown) < len(rows)}
    return text_result(
        "\n".join([SALES_HEADER, *map(sales_line, shown), footer]), structuredContent=structured, _meta=meta
    )


CHART_GROUPS = ("Номенклатура", "Контрагенты")


def sales_chart(arguments: dict[str, Any]) -> dict[str, Any]:
    group_by = arguments.get("group_by") or CHART_GROUPS[0]
    if group_by not in CHART_GROUPS:
        raise ToolError(f"Недопустимое значение group_by '{group_by}'. Допустимые значения: {', '.join(CHART_GROUPS)}")
    totals: dict[str, float] = {}
    for row in select_sales(arguments):
        key = row.product if group_by == "Номенклатура" else row.counterparty
        totals[key] = round(totals.get(key, 0.0) + row.amount, 2)
    if not totals:
        return text_result("Нет продаж за указанный период")
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    text = f"Продажи в разрезе «{group_by}» (столбцы слева направо):\n" + "\n".join(
        f"{place}. {name} — {money(value)} руб." for place, (name, value) in enumerate(ranked, 1)
    )
    image = {"type": "image", "data": b64(chart_png(tuple(value for _, value in ranked))), "mimeType": "image/png"}
    return {"content": [{"type": "text", "text": text}, image], "isError": False}


def printed_form(number: str) -> str:
    number, day, counterparty, warehouse, lines = find_document(number)
    rows = [f"  {product}: {qty:g} × {money(PRODUCTS[product][2])}" for product, qty in lines]
    total = sum(qty * PRODUCTS[product][2] for product, qty in lines)
    header = f"Реализация товаров и услуг {number} от {date.fromisoformat(day):%d.%m.%Y}"
    buyer = f"Покупатель: {counterparty}, ИНН {COUNTERPARTIES[counterparty]}"
    return "\n".join([header, buyer, f"Склад: {warehouse}", "Товары:", *rows,
                      f"Итого: {money(total)} руб."])  # fmt: skip


def get_document_attachments(arguments: dict[str, Any]) -> dict[str, Any]:
    number = find_document(arguments["number"])[0]
    folder = f"file:///Вложения/РеализацияТоваровУслуг/{number}"
    text = f"Вложения документа {number}: голосовой комментарий менеджера, скан договора, печатная форма."
    link = {"type": "resource_link", "uri": f"{folder}/Договор_поставки.pdf", "name": "Договор_поставки.pdf",
            "description": "Скан договора поставки", "mimeType": "application/pdf"}  # fmt: skip
    printed = {"uri": f"metadata://Документы/РеализацияТоваровУслуг/{number}", "mimeType": "text/plain",
               "text": printed_form(number)}  # fmt: skip
    content = [
        {"type": "text", "text": text},
        {"type": "audio", "data": b64(beep_wav()), "mimeType": "audio/wav"},
        link,
        {"type": "resource", "resource": printed},
    ]
    return {"content": content, "isError": False}


def post_document(arguments: dict[str, Any]) -> dict[str, Any]:
    find_document(arguments["number"])
    raise ToolError("Документ заблокирован другим пользователем")


def find_counterparty(arguments: Mapping[str, Any]) -> Counterparty:
    inn = str(arguments.get("inn") or "").strip()
    name = str(arguments.get("name") or "").strip().casefold()
    if not inn and not name:
        raise ToolError("Укажите наименование (name) или ИНН (inn) контрагента")
    found = [
        counterparty for counterparty in COUNTERPARTY_DETAILS
        if (not inn or counterparty.inn == inn) and name in counterparty.name.casefold()
    ]  # fmt: skip
    if not found:
        raise ToolError(f"Контрагент '{inn or arguments.get('name')}' не найден")
    if len(found) > 1:
        raise ToolError("Найдено несколько контрагентов: " + "; ".join(c.name for c in found) + ". Уточните отбор")
    return found[0]


def get_counterparty(arguments: dict[str, Any]) -> dict[str, Any]:
    counterparty = find_counterparty(arguments)
    return text_result(counterparty.card(), structuredContent=counterparty.details())


STAFF_HEADER = "| Таб. № | ФИО | Должность | Подразделение | Дата рождения | СНИЛС | ИНН | Паспорт | Телефон | E-mail |"


def staff_line(employee: Employee) -> str:
    born = date.fromisoformat(employee.born)
    cells = (employee.number, employee.name, employee.position, employee.department, f"{born:%d.%m.%Y}",
             employee.snils, employee.inn, employee.passport, employee.phone, employee.email)  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def list_staff(arguments: dict[str, Any]) -> dict[str, Any]:
    department = str(arguments.get("department") or "").casefold()
    staff = [employee for employee in STAFF if department in employee.department.casefold()]
    rule = "|" + "---|" * STAFF_HEADER.count(" | ") + "---|"
    text = "\n".join([STAFF_HEADER, rule, *map(staff_line, staff), f"Всего сотрудников: {len(staff)}"])
    structured = {"Сотрудники": [employee.as_json() for employee in staff], "Всего": len(staff)}
    return text_result(text, structuredContent=structured)


def current_user(arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
    """1C's ИмяПользователя(), ПолноеИмяПользователя() and roles, and whom the caller acts for."""
    user = context.user
    roles = sorted(user.roles)
    lines = [
        f"Пользователь 1С: {user.name or 'не задан (база опубликована без аутентификации)'}",
        f"Полное имя: {user.full_name or '—'}",
        f"Роли: {', '.join(roles) or 'нет'}",
    ]
    structured: dict[str, Any] = {"Имя": user.name, "ПолноеИмя": user.full_name, "Роли": roles}
    if context.acting_for is not None:
        lines.append(f"Действует от имени: {context.acting_for}")
        structured["ДействуетОтИмени"] = context.acting_for
    return text_result("\n".join(lines), structuredContent=structured)


QUERY_SALES_LIMIT = 20
_ROW_FIELDS = {"date": "string", "number": "string", "counterparty": "string", "warehouse": "string",
               "product": "string", "quantity": "number", "price": "number", "amount": "number"}  # fmt: skip
QUERY_SALES_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rows": {"type": "array", "items": {
            "type": "object", "properties": {key: {"type": kind} for key, kind in _ROW_FIELDS.items()},
            "required": list(_ROW_FIELDS), "additionalProperties": False}},
        "count": {"type": "integer"},
        "total_rows": {"type": "integer"},
        "total_amount": {"type": "number"},
    },
    "required": ["rows", "count", "total_rows", "total_amount"],
    "additionalProperties": False,
}  # fmt: skip
_PERIOD = {
    "period_start": string("Начало периода, дата в формате ГГГГ-ММ-ДД"),
    "period_end": string("Конец периода включительно, дата в формате ГГГГ-ММ-ДД"),
}
_NUMBER = {"number": string("Номер документа, например ТД00-000003")}

_TOOLS: tuple[DemoTool, ...] = (
    DemoTool({
        "name": "get_metadata",
        "description": "Возвращает список объектов метаданных конфигурации (справочники, документы, регистры)",
        "inputSchema": schema({"type": string("Вид объектов метаданных", enum=list(METADATA))}),
    }, get_metadata),
    DemoTool({
        "name": "describe_object",
        "description": "Возвращает реквизиты объекта метаданных, например Справочник.Номенклатура",
        "inputSchema": schema({"name": string("Полное или краткое имя объекта метаданных")}, ("name",)),
    }, describe_object),
    DemoTool({
        "name": "query_sales",
        "title": "Продажи за период",
        "description": "Выполняет запрос к продажам (документы Реализация товаров и услуг) за период "
                       "с отбором по контрагенту и номенклатуре, возвращает таблицу",
        "inputSchema": schema({
            **_PERIOD,
            "counterparty": string("Отбор по контрагенту (часть наименования)"),
            "product": string("Отбор по номенклатуре (часть наименования)"),
            "limit": {"type": "integer", "description": "Максимальное число строк", "default": QUERY_SALES_LIMIT},
        }, ("period_start", "period_end")),
        "outputSchema": QUERY_SALES_OUTPUT_SCHEMA,
        "annotations": {"title": "Продажи за период", "readOnlyHint": True, "openWorldHint": False},
        "icons": [{"src": data_uri(chart_png((2, 4, 3), 16, 16)), "mimeType": "image/png", "sizes": ["16x16"]}],
        "_meta": {"ru.1c.demo/source": "Документ.РеализацияТоваровУслуг.Товары"},
    }, query_sales),
    DemoTool({
        "name": "sales_chart",
        "description": "Строит диаграмму продаж за период в разрезе номенклатуры или контрагентов",
        "inputSchema": schema({
            **_PERIOD,
            "group_by": string("Разрез диаграммы", enum=list(CHART_GROUPS), default=CHART_GROUPS[0]),
        }),
    }, sales_chart),
    DemoTool({
        "name": "get_document_attachments",
        "description": "Возвращает вложения документа реализации: голосовой комментарий, сканы, печатную форму",
        "inputSchema": schema(_NUMBER, ("number",)),
    }, get_document_attachments),
    DemoTool({
        "name": "post_document",
        "description": "Проводит документ реализации товаров и услуг",
        "inputSchema": schema(_NUMBER, ("number",)),
    }, post_document, right=RIGHT_POSTING),
    DemoTool({
        "name": "get_counterparty",
        "description": "Возвращает карточку контрагента: ИНН, КПП, ОГРН, адрес, банковские реквизиты, "
                       "телефон, e-mail и контактное лицо",
        "inputSchema": schema({
            "name": string("Наименование контрагента или его часть"),
            "inn": string("ИНН контрагента (10 или 12 цифр)"),
        }),
    }, get_counterparty),
    DemoTool({
        "name": "list_staff",
        "description": "Возвращает список сотрудников с табельными номерами, СНИЛС, ИНН, паспортными данными "
                       "и контактами, с отбором по подразделению",
        "inputSchema": schema({"department": string("Отбор по подразделению (часть наименования)")}),
    }, list_staff, right=RIGHT_PERSONAL_DATA),
    DemoTool({
        "name": "current_user",
        "title": "Текущий пользователь 1С",
        "description": "Возвращает пользователя 1С, от имени которого выполняется запрос: имя, полное имя, "
                       "роли, а также от чьего имени действует клиент MCP, если прокси это передал",
        "inputSchema": schema({}),
        "annotations": {"title": "Текущий пользователь 1С", "readOnlyHint": True, "openWorldHint": False},
    }, current_user, takes_context=True),
)  # fmt: skip


def demo_tools() -> dict[str, DemoTool]:
    return {tool.name: tool for tool in _TOOLS}


# --- resources ------------------------------------------------------------------------------

GUIDE_MD = """# Демо-база «Управление торговлей»

Учебная информационная база для проверки MCP-прокси без настоящей 1С.

## Что есть в базе

- справочники **Номенклатура**, **Контрагенты**, **Склады**;
- документы **Реализация товаров и услуг** за январь–март 2024 года;
- регистры накопления **Продажи** и **Товары на складах**.

## Инструменты

| Инструмент | Назначение |
|---|---|
| `query_sales` | продажи за период с отборами |
| `sales_chart` | диаграмма продаж |
| `describe_object` | структура объекта метаданных |
| `get_counterparty` | карточка контрагента (персональные данные для проверки маскирования) |
| `list_staff` | список сотрудников (СНИЛС, паспорт, телефон) |
| `current_user` | пользователь 1С, от имени которого выполняется запрос, и его роли |

## Пользователи

| Пользователь | Роль | Что недоступно |
|---|---|---|
| `accountant` | Бухгалтер | — |
| `storekeeper` | Кладовщик | `post_document`, `list_staff`, ресурс с карточкой контрагента |
| `Иванов` | Бухгалтер | — |
| `norights` | — | HTTP-сервис целиком (ответ 403) |
"""


def nomenclature_json() -> str:
    items = [
        {"Код": code, "Наименование": name, "ЕдиницаИзмерения": unit, "Цена": price}
        for name, (code, unit, price) in PRODUCTS.items()
    ]
    return json.dumps(items, ensure_ascii=False, indent=2)


def demo_resources() -> dict[str, DemoResource]:
    resources = (
        DemoResource("metadata://Справочники/Номенклатура", "Номенклатура",
                     "Справочник номенклатуры: коды, наименования, единицы измерения и цены",
                     "application/json", text=nomenclature_json()),
        DemoResource("metadata://Документы/РеализацияТоваровУслуг", "Реализация товаров и услуг",
                     "Структура документа реализации", "text/plain",
                     text=describe_text("Документы", "РеализацияТоваровУслуг")),
        DemoResource("file:///Отчёты/Логотип.png", "Логотип.png", "Логотип организации для печатных форм",
                     "image/png", blob=chart_png((3, 5, 4, 6), 64, 64)),
        # 1C has no Markdown type: the reference extension serves it as text/plain.
        DemoResource("file:///Документация/Руководство.md", "Руководство.md",
                     "Руководство пользователя демо-базы (Markdown)", "text/plain", text=GUIDE_MD),
        DemoResource("file:///Контрагенты/Ромашка.md", "Ромашка.md",
                     "Карточка контрагента ООО «Ромашка»: реквизиты, банк, контактное лицо (Markdown)",
                     "text/plain", text=COUNTERPARTY_DETAILS[0].card(), right=RIGHT_PERSONAL_DATA),
    )  # fmt: skip
    return {resource.uri: resource for resource in resources}


# --- prompts --------------------------------------------------------------------------------


def _argument(name: str, description: str, required: bool) -> dict[str, Any]:
    return {"name": name, "description": description, "required": required}


def demo_prompts() -> dict[str, DemoPrompt]:
    prompts = (
        DemoPrompt(
            "sales_analysis",
            "Анализ продаж за период",
            (_argument("period_start", "Начало периода (ГГГГ-ММ-ДД)", True),
             _argument("period_end", "Конец периода (ГГГГ-ММ-ДД)", True),
             _argument("counterparty", "Контрагент (необязательно)", False)),
            (("system", "Ты — аналитик отдела продаж. Отвечай по-русски, суммы указывай в рублях, "
                        "данные бери только из базы 1С через инструменты."),
             ("user", "Проанализируй продажи с {period_start} по {period_end}, контрагент: {counterparty}. "
                      "Используй инструмент query_sales, найди самые продаваемые позиции и крупнейших "
                      "покупателей, сравни месяцы между собой.")),
            fallbacks={"counterparty": "все контрагенты"},
        ),
        DemoPrompt(
            "explain_object",
            "Описание объекта метаданных",
            (_argument("name", "Имя объекта метаданных, например Документ.РеализацияТоваровУслуг", True),),
            (("user", "Опиши назначение объекта «{name}» конфигурации «" + BASE_NAME + "»: реквизиты, "
                      "табличные части, связи с другими объектами. Структуру получи инструментом "
                      "describe_object."),),
        ),
        DemoPrompt(
            "monthly_report",
            "Сводка продаж за последний месяц",
            (),
            (("user", "Подготовь краткую сводку по продажам за последний месяц, который есть в базе: "
                      "выручка, число документов, три самых продаваемых товара. Построй диаграмму "
                      "инструментом sales_chart."),),
        ),
    )  # fmt: skip
    return {prompt.name: prompt for prompt in prompts}
