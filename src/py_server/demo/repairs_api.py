"""A demo of the dealer network's repairs API: same endpoints, same raw shapes (typos included).

    app = create_repairs_api(api_key="demo-key")
    LoopbackServer(app).start()          # or httpx.ASGITransport(app=app) in tests

VINs: XWEG3417BN0009095 (rich history: four warranty years, one over the 30-day limit),
Z94C241BBMR221738 (a little data; empty maintenance list), XTA210930Y2796514 (404 everywhere).
Every request needs `Authorization: Bearer <api_key>`, otherwise 401 `{"detail": ...}`.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

RICH_VIN = "XWEG3417BN0009095"
SOME_VIN = "Z94C241BBMR221738"
EMPTY_VIN = "XTA210930Y2796514"
DEMO_VINS = (RICH_VIN, SOME_VIN, EMPTY_VIN)

# Dealer codes come as int, str and null in the real API; the demo keeps all three.
MOLOTOK = {"name": 'ООО "Молоток Авто"', "code": 57002, "city": "Москва"}
NEVA = {"name": "ООО «Автоцентр Нева»", "code": "78015", "city": "Санкт-Петербург"}
URAL = {"name": "АО «Уралавто-Сервис»", "code": None, "city": "Екатеринбург"}
SIBIR = {"name": "ООО «Сибирь-Моторс»", "code": "54021", "city": "Новосибирск"}


def _claim(
    serial: str,
    opened: str,
    closed: str,
    km: int,
    dealer: dict[str, Any],
    fault: tuple[str, str],
    parts: list[tuple[str, str]],
    ops: list[tuple[str, str]],
    retail: str,
) -> dict[str, Any]:
    return {
        "serial": serial,
        "ro_open_date": opened,
        "ro_close_date": closed,
        "retail_date": retail,
        "odometr": km,
        "dealer": dealer,
        "casual_part": fault[0],
        "casual_part_descr": fault[1],
        "replaced_parts": [{"replace_part": n, "replace_part_descr": d} for n, d in parts],
        "op_codes": [{"op_code": c, "op_code_descr": d} for c, d in ops],
    }


def _visit(dealer: dict[str, Any], closed: str, km: int, kind: str, reason: str, advice: str | None) -> dict[str, Any]:
    return {
        "dealer_name": dealer["name"],
        "ro_close_date": closed,
        "odometer": km,
        "repair_type": kind,
        "visit_reason": reason,
        "recomendations": advice,
    }


def _service(vin: str, kind: str, day: str, km: int, dealer: dict[str, Any]) -> dict[str, Any]:
    return {"vin": vin, "maintenance_type": kind, "ro_date": day, "odometer": km, "dealer": dealer}


_RICH_RETAIL = "2022-05-20"
WARRANTY_DAYS: dict[str, dict[str, Any]] = {
    RICH_VIN: {
        "repair_data": [
            {"year_number": 1, "is_current_year": False, "days_in_repair": 7},
            {"year_number": 2, "is_current_year": False, "days_in_repair": 34},
            {"year_number": 3, "is_current_year": False, "days_in_repair": 0},
            {"year_number": 4, "is_current_year": True, "days_in_repair": 8},
        ]
    },
    SOME_VIN: {
        "repair_data": [
            {"year_number": 1, "is_current_year": False, "days_in_repair": 4},
            {"year_number": 2, "is_current_year": True, "days_in_repair": 0},
        ]
    },
}
WARRANTY_RECORDS: dict[str, dict[str, Any]] = {
    RICH_VIN: {
        "records": [
            _claim(
                "100234",
                "2023-03-14",
                "2023-03-20",
                19450,
                MOLOTOK,
                ("54651H5000", "STRUT ASSY-FRONT,LH"),
                [("54651H5000", "STRUT ASSY-FRONT,LH"), ("54610H5000", "INSULATOR ASSY-STRUT")],
                [("54610R01", "FRONT STRUT ASSY, LH, R&R"), ("00000A01", "WHEEL ALIGNMENT, CHECK & ADJUST")],
                _RICH_RETAIL,
            ),
            _claim(
                "100871",
                "2023-09-02",
                "2023-09-06",
                27310,
                NEVA,
                ("391802B000", "SENSOR-CRANKSHAFT POSITION"),
                [("391802B000", "SENSOR-CRANKSHAFT POSITION")],
                [("39180R00", "CRANKSHAFT POSITION SENSOR, R&R")],
                _RICH_RETAIL,
            ),
            _claim(
                "101455",
                "2024-01-22",
                "2024-02-20",
                33540,
                URAL,
                ("97606H5000", "HOSE-DISCHARGE"),
                [("97606H5000", "HOSE-DISCHARGE"), ("97701H5000", "COMPRESSOR ASSY-A/C")],
                [
                    ("97600R10", "A/C DISCHARGE HOSE, R&R"),
                    ("97701R00", "A/C COMPRESSOR, R&R"),
                    ("97000A00", "A/C SYSTEM, EVACUATE & RECHARGE"),
                ],
                _RICH_RETAIL,
            ),
            _claim(
                "102019",
                "2025-10-01",
                "2025-10-09",
                68284,
                MOLOTOK,
                ("76004Q5001", "PANEL ASSY-FRONT DOOR,LH"),
                [("76004Q5001", "PANEL ASSY-FRONT DOOR,LH")],
                [("76000R0B", "FRONT DOOR PANEL ASSY, BOTH SIDES, R&R")],
                _RICH_RETAIL,
            ),
        ]
    },
    SOME_VIN: {
        "records": [
            _claim(
                "204511",
                "2022-02-14",
                "2022-02-18",
                8120,
                SIBIR,
                ("31110H8000", "PUMP ASSY-FUEL"),
                [("31110H8000", "PUMP ASSY-FUEL")],
                [],
                "2021-06-30",
            ),
        ]
    },
}
MAINTENANCE: dict[str, list[dict[str, Any]]] = {
    RICH_VIN: [
        _service(RICH_VIN, "ТО-1", "2022-11-10", 14870, MOLOTOK),
        _service(RICH_VIN, "ТО-2", "2023-10-05", 29960, NEVA),
        _service(RICH_VIN, "ТО-3", "2024-10-15", 44800, NEVA),
        _service(RICH_VIN, "ТО-4", "2025-05-28", 60120, URAL),
    ],
    SOME_VIN: [],  # a 200 with an empty list, unlike the 404 of EMPTY_VIN
}
DNM: dict[str, list[dict[str, Any]]] = {
    RICH_VIN: [
        _visit(
            MOLOTOK,
            "2023-03-20",
            19450,
            "гарантийный ремонт",
            "стук в передней подвеске слева",
            "Рекомендуется проверить развал-схождение через 1000 км.",
        ),
        _visit(
            NEVA,
            "2023-10-05",
            29960,
            "техническое обслуживание",
            "плановое ТО-2",
            "Рекомендована замена тормозной жидкости при следующем ТО.",
        ),
        _visit(
            URAL,
            "2024-02-20",
            33540,
            "гарантийный ремонт",
            "не работает кондиционер",
            "Все работы выполнены в полном объеме.",
        ),
        _visit(NEVA, "2024-07-11", 40115, "текущий ремонт", "замена передних тормозных колодок", None),
        _visit(
            MOLOTOK,
            "2025-10-09",
            68284,
            "кузовной ремонт",
            "замена двери по гарантии(КУЗОВНОЙ)",
            "Все работы выполнены в полном объеме.",
        ),
    ],
    SOME_VIN: [
        _visit(
            SIBIR,
            "2022-02-18",
            8120,
            "гарантийный ремонт",
            "двигатель не запускается",
            "Все работы выполнены в полном объеме.",
        ),
        _visit(
            SIBIR,
            "2022-07-01",
            15030,
            "техническое обслуживание",
            "плановое ТО-1 (сторонний сервис)",
            "Рекомендуется пройти следующее ТО у официального дилера.",
        ),
    ],
}


def create_repairs_api(api_key: str = "demo-key") -> Starlette:
    """The demo API as a Starlette app; every request needs `Authorization: Bearer <api_key>`."""
    expected = f"Bearer {api_key}".encode()

    def lookup(table: dict[str, Any], not_found: str) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            given = request.headers.get("authorization")
            if given is None:
                return _unauthorized("Не передан ключ API: нужен заголовок Authorization: Bearer <ключ>")
            if not hmac.compare_digest(given.encode(), expected):
                return _unauthorized("Неверный ключ API")
            vin = request.path_params["vin"].upper()
            if vin not in table:
                return JSONResponse({"detail": not_found}, status_code=404)
            return JSONResponse(table[vin])

        return endpoint

    return Starlette(
        routes=[
            Route("/api/warranty/records/{vin}", lookup(WARRANTY_RECORDS, "VIN не найден")),
            Route("/api/warranty/{vin}", lookup(WARRANTY_DAYS, "VIN не найден")),
            Route("/api/maintenance/{vin}", lookup(MAINTENANCE, "VIN не найден")),
            Route("/api/dnm/{vin}", lookup(DNM, "Записи не найдены")),
        ]
    )


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
