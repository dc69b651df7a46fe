"""HTTP client of the vehicle repairs API (dealer network).

    client = RepairsApiClient.from_settings(settings)
    payload = await client.warranty_records("XWEG3417BN0009095")   # raw JSON, or None on 404
    await client.aclose()

This is the only module that sees httpx: every failure leaves it as `UpstreamError` with an
`error_type` (authentication_error, timeout, network_error, http_error, invalid_response).
Messages are Russian, name the setting to fix, and never contain the API key.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ...config import Settings
from ...errors import UpstreamError

logger = logging.getLogger(__name__)

API_NAME = "API истории ремонтов"
PROBE_VIN = "00000000000000000"  # syntactically valid, never a real vehicle: the probe expects a 404


class RepairsApiClient:
    """GETs the four endpoints of the repairs API over one pooled `httpx.AsyncClient`.

    Args:
        http: a client with `base_url`, the `Authorization` header and the timeout already set;
            injected so tests can swap the transport. This object owns it: `aclose()` closes it.
        api_key: only used to scrub the key from error texts (belt and braces).
    """

    def __init__(self, http: httpx.AsyncClient, *, api_key: str | None = None) -> None:
        self._http = http
        self._api_key = api_key or None

    @classmethod
    def from_settings(cls, settings: Settings) -> RepairsApiClient:
        """Build the client from `MCP_REPAIRS_API_*`. A missing key means no Authorization header."""
        if settings.repairs_api_url is None:
            raise ValueError("repairs_api_url is not set")
        key = settings.repairs_api_key.get_secret_value() if settings.repairs_api_key else ""
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        http = httpx.AsyncClient(
            base_url=settings.repairs_api_url, headers=headers, timeout=settings.repairs_api_timeout
        )
        return cls(http, api_key=key)

    @property
    def base_url(self) -> str:
        """Scheme, host and port only: safe to show even if someone put a token in the path."""
        parts = urlsplit(str(self._http.base_url))
        return f"{parts.scheme}://{parts.netloc}"

    async def warranty_days(self, vin: str) -> Any:
        return await self.get_json(f"/api/warranty/{quote(vin, safe='')}")

    async def warranty_records(self, vin: str) -> Any:
        return await self.get_json(f"/api/warranty/records/{quote(vin, safe='')}")

    async def maintenance(self, vin: str) -> Any:
        return await self.get_json(f"/api/maintenance/{quote(vin, safe='')}")

    async def dnm(self, vin: str) -> Any:
        return await self.get_json(f"/api/dnm/{quote(vin, safe='')}")

    async def get_json(self, path: str, *, time_limit: float | None = None) -> Any:
        """GET `path` and return the decoded JSON body; `None` when the API answers 404 (no records).

        Raises:
            UpstreamError: authentication_error (401/403), timeout, network_error, http_error
                (any other non-2xx status, with `http_status`), invalid_response (not JSON).
        """
        try:
            if time_limit is None:
                response = await self._http.get(path)
            else:  # the health probe: shorter than MCP_REPAIRS_API_TIMEOUT
                response = await self._http.get(path, timeout=time_limit)
        except httpx.TimeoutException as exc:
            limit = time_limit if time_limit is not None else self._http.timeout.read
            within = f" за {limit:g} с" if limit is not None else " вовремя"
            raise UpstreamError(
                f"{API_NAME} ({self.base_url}) не ответил{within}. Попробуйте позже; если ответ "
                "стабильно медленный — увеличьте MCP_REPAIRS_API_TIMEOUT.",
                error_type="timeout",
            ) from exc
        except httpx.HTTPError as exc:  # connect errors, dropped connections, protocol errors
            raise UpstreamError(
                f"Не удалось связаться с {API_NAME} ({self.base_url}): {self._scrub(_describe(exc))}. "
                "Проверьте MCP_REPAIRS_API_URL и что сервис запущен и доступен по сети.",
                error_type="network_error",
            ) from exc
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> Any:
        status = response.status_code
        if status == 404:
            logger.debug(
                "repairs API: 404 for %s (no records)", response.request.url.path
            )  # the health probe asks every time
            return None
        if status in (401, 403):
            reason = "ключ не принят" if status == 401 else "доступ запрещён"
            hint = "Проверьте MCP_REPAIRS_API_KEY." if self._api_key else "Задайте MCP_REPAIRS_API_KEY."
            raise UpstreamError(
                f"{API_NAME} отклонил запрос: {reason} (HTTP {status}). {hint}",
                error_type="authentication_error",
                http_status=status,
            )
        if not 200 <= status < 300:
            detail = self._error_detail(response)
            advice = (
                "Сервис неисправен или перегружен: попробуйте позже, если ошибка повторяется — сообщите "
                "администратору API."
                if status >= 500
                else "Проверьте MCP_REPAIRS_API_URL и версию API."
            )
            raise UpstreamError(
                f"{API_NAME} вернул ошибку HTTP {status}{detail}. {advice}",
                error_type="http_error",
                http_status=status,
            )
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            content_type = response.headers.get("content-type", "не указан")
            raise UpstreamError(
                f"{API_NAME} вернул ответ, который не является JSON (HTTP {status}, Content-Type: "
                f"{content_type}). Проверьте, что MCP_REPAIRS_API_URL указывает на API, а не на сайт.",
                error_type="invalid_response",
                http_status=status,
            ) from exc

    def _error_detail(self, response: httpx.Response) -> str:
        # FastAPI-style {"detail": "..."} helps the admin; anything else (HTML pages) is noise.
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return ""
        detail = body.get("detail") if isinstance(body, dict) else None
        if not isinstance(detail, str) or not detail.strip():
            return ""
        return f": {self._scrub(detail.strip()[:200])}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def aclose(self) -> None:
        await self._http.aclose()


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
