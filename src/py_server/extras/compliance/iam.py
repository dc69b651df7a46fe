"""Cloud.ru IAM access tokens for Managed RAG, cached in memory.

Two token endpoints exist in the field (see contracts/local-extras-upstreams.md):

* "iam" (documented): POST JSON {"keyId", "secret"} to https://iam.api.cloud.ru/api/v1/auth/token;
* "openid" (legacy, the design's AUTH_URL): POST a form with grant_type/client_id/client_secret to
  https://auth.iam.sbercloud.ru/auth/system/openid/token.

Both answer {"access_token", "expires_in", ...}. The token is fetched on first use (never a
placeholder), shared by concurrent callers through one asyncio.Lock, refreshed `margin` seconds
before it expires, and dropped by `invalidate()` when the service answers 401.

    tokens = IamTokenProvider(client, auth_url=url, key_id=kid, key_secret=SecretStr(s))
    token = await tokens.get_token()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from ...errors import UpstreamError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
AuthStyle = Literal["auto", "iam", "openid"]
DEFAULT_LIFETIME = 3600.0  # Cloud.ru tokens live one hour; used when expires_in is missing
AUTH_ERROR = "authentication_error"
_CHECK_KEYS = "Проверьте MCP_RAG_KEY_ID и MCP_RAG_KEY_SECRET"


def resolve_style(style: AuthStyle, auth_url: str) -> Literal["iam", "openid"]:
    """Style "auto" is "openid" for an OpenID token endpoint (the legacy URL), else "iam"."""
    if style != "auto":
        return style
    return "openid" if "openid" in urlsplit(auth_url).path.lower() else "iam"


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # clock() time after which the token is renewed before use


class IamTokenProvider:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        auth_url: str,
        key_id: str,
        key_secret: SecretStr,
        style: AuthStyle = "auto",
        grant_type: str = "client_credentials",
        timeout: float = 20.0,
        margin: float = 60.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self.auth_url = auth_url
        self.style = resolve_style(style, auth_url)
        self._key_id = key_id
        self._key_secret = key_secret
        self._grant_type = grant_type
        self._timeout = timeout
        self._margin = margin
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.requests = 0  # token requests sent; for /health details and tests

    async def get_token(self) -> str:
        """A valid access token: the cached one, or a new one (one request for all waiters).

        Raises:
            UpstreamError: error_type "authentication_error"; the text says which setting to check.
        """
        async with self._lock:
            token = self._token
            if token is None or self._clock() >= token.refresh_at:
                token = self._token = await self._fetch()
            return token.value

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (after a 401).

        With `token`, forget it only if it is still the cached one: when several calls got a 401
        with the same old token, the first refresh is kept instead of fetching one per call.
        """
        if token is None or (self._token is not None and self._token.value == token):
            self._token = None

    async def _fetch(self) -> _Token:
        self.requests += 1
        secret = self._key_secret.get_secret_value()
        try:
            if self.style == "openid":
                form = {"grant_type": self._grant_type, "client_id": self._key_id, "client_secret": secret}
                response = await self._client.post(self.auth_url, data=form, timeout=self._timeout)
            else:
                body = {"keyId": self._key_id, "secret": secret}
                response = await self._client.post(self.auth_url, json=body, timeout=self._timeout)
        except httpx.TimeoutException:
            raise self._error(f"сервер авторизации {self.auth_url} не ответил за {self._timeout:g} с") from None
        except httpx.TransportError as exc:
            # str(exc) of a transport error holds no request body, but the type name is enough here.
            raise self._error(
                f"сервер авторизации {self.auth_url} недоступен ({type(exc).__name__}). "
                "Проверьте MCP_RAG_AUTH_URL и сетевой доступ"
            ) from None
        if response.status_code >= 400:
            raise self._status_error(response.status_code)
        token, lifetime = self._parse(response)
        # A short-lived token must not be "due for refresh" the moment it arrives.
        margin = min(self._margin, lifetime / 2)
        logger.debug("IAM token received (style %s, expires in %.0f s)", self.style, lifetime)
        return _Token(value=token, refresh_at=self._clock() + lifetime - margin)

    def _parse(self, response: httpx.Response) -> tuple[str, float]:
        try:
            payload: Any = response.json()
        except ValueError:
            raise self._error(f"сервер авторизации {self.auth_url} вернул не JSON") from None
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise self._error(
                f"в ответе {self.auth_url} нет access_token. Проверьте MCP_RAG_AUTH_URL и MCP_RAG_AUTH_STYLE"
            )
        expires_in = payload.get("expires_in")
        try:
            lifetime = float(expires_in) if expires_in is not None else DEFAULT_LIFETIME
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        return token, lifetime if lifetime > 0 else DEFAULT_LIFETIME

    def _status_error(self, status: int) -> UpstreamError:
        if status in (400, 401, 403):
            hint = f"ключ отклонён (HTTP {status}). {_CHECK_KEYS}"
            if self.style == "iam":
                hint += "; для адреса вида .../openid/token задайте MCP_RAG_AUTH_STYLE=openid"
        elif status in (404, 405):
            hint = f"адрес не найден (HTTP {status}). Проверьте MCP_RAG_AUTH_URL={self.auth_url}"
        else:
            hint = f"сервер авторизации {self.auth_url} вернул HTTP {status}. Попробуйте позже"
        return self._error(hint, http_status=status)

    @staticmethod
    def _error(detail: str, *, http_status: int | None = None) -> UpstreamError:
        logger.warning("Cloud.ru IAM token request failed: %s", detail)
        return UpstreamError(
            f"Не удалось получить токен доступа к базе знаний Cloud.ru: {detail}.",
            error_type=AUTH_ERROR,
            http_status=http_status,
        )
