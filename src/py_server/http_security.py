"""One ASGI middleware for the HTTP front-end's request checks.

* Host: only allowed names (loopback by default, plus MCP_ALLOWED_HOSTS) — DNS rebinding.
* Origin: a request that carries one must come from an allowed origin (MCP_ALLOWED_ORIGINS, or
  the proxy's own loopback origin) — DNS rebinding and cross-site use.
* Bearer token: with MCP_AUTH_TOKEN set, the MCP endpoints need `Authorization: Bearer <token>`,
  compared in constant time. `/` and `/health` stay open for ops.
"""

from __future__ import annotations

import hmac
import logging

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings

logger = logging.getLogger(__name__)

MCP_PATHS = ("/sse", "/messages", "/mcp")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
ANY = "*"


def _hostname(host_header: str) -> str:
    """`example.com:8000` -> `example.com`; `[::1]:8000` -> `::1`."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def allowed_hostnames(settings: Settings) -> set[str]:
    names = {name.lower() for name in settings.allowed_hosts}
    names.update(LOOPBACK_NAMES)
    if settings.host not in ("0.0.0.0", "::", ""):
        names.add(settings.host.lower())
    return names


class RequestGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings, protected_paths: tuple[str, ...]) -> None:
        self.app = app
        self.protected_paths = protected_paths
        self.hostnames = allowed_hostnames(settings)
        # The proxy's own pages (same origin on loopback) are always allowed.
        own = {
            f"{scheme}://{name}:{settings.port}"
            for scheme in ("http", "https")
            for name in ("127.0.0.1", "localhost", "[::1]")
        }
        self.origins = set(settings.allowed_origins) | own
        self.token = settings.auth_token.get_secret_value().encode() if settings.auth_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rejection = self._check(scope, headers)
        if rejection is not None:
            await rejection(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: Headers) -> PlainTextResponse | None:
        host = headers.get("host", "")
        if ANY not in self.hostnames and _hostname(host).lower() not in self.hostnames:
            logger.warning("rejected a request with Host %r (allow it with MCP_ALLOWED_HOSTS)", host)
            return PlainTextResponse("Invalid Host header", status_code=421)
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin.rstrip("/")):
            logger.warning("rejected a request from Origin %r (allow it with MCP_ALLOWED_ORIGINS)", origin)
            return PlainTextResponse("Invalid Origin header", status_code=403)
        path: str = scope["path"]
        if self.token is not None and path.startswith(self.protected_paths) and not self._authorized(headers):
            return PlainTextResponse(
                "Missing or invalid bearer token", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return None

    def _origin_allowed(self, origin: str) -> bool:
        return ANY in self.origins or origin in self.origins

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        assert self.token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token)
