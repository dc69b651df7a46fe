"""One ASGI middleware for the HTTP front-end's request checks, in front of every route.

* Host: only allowed names (loopback by default, plus MCP_ALLOWED_HOSTS), against DNS rebinding.
* Origin: a request that carries one must come from an allowed origin (MCP_ALLOWED_ORIGINS, or the
  proxy's own loopback origin); `Origin: null` (sandboxed frames, file pages) is foreign.
* Bearer token: with MCP_AUTH_TOKEN set, every path needs `Authorization: Bearer <token>` (compared
  in constant time) except the few public ones, matched exactly. Deny by default: whatever path
  spelling, method or mount a request uses (`/mcp/`, `HEAD`, `/messages`), if it is not one of the
  public paths it needs the token, so a route added later cannot open a door.

A request with a valid token carries `scope["user"]` (the SDK's `AuthenticatedUser`): the SDK then
binds each Streamable HTTP and SSE session to the credential that opened it, and `/health` shows
its detail. Rejections are logged; the logging setup rate-limits this logger against floods.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings

__all__ = ["LOOPBACK_NAMES", "PUBLIC_PATHS", "RequestGuard", "allowed_hostnames", "is_authenticated"]

logger = logging.getLogger(__name__)

# Open without the token: the index and the health endpoints (which show only a status and a
# one-line reason unless the caller is authenticated).
PUBLIC_PATHS = frozenset({"/", "/health", "/health/live", "/health/ready"})
PUBLIC_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
ANY = "*"
TOKEN_CLIENT_ID = "bearer-token"  # the credential's name in logs and session ownership; never the secret


def _hostname(host_header: str) -> str:
    """`example.com:8000` -> `example.com`; `[::1]:8000` -> `::1`."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def allowed_hostnames(settings: Settings) -> set[str]:
    # Names are compared without the port: "proxy.corp:8000" and "proxy.corp:*" (the SDK's
    # spelling) both mean the name proxy.corp.
    names = {_hostname(name.removesuffix(":*")).lower() for name in settings.allowed_hosts}
    names.update(LOOPBACK_NAMES)
    if settings.host not in ("0.0.0.0", "::", ""):
        names.add(settings.host.lower())
    return names


def route_path(scope: Scope) -> str:
    """The path the router matches: `path` without the app's `root_path` (as Starlette routes)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def is_authenticated(scope: Scope) -> bool:
    return isinstance(scope.get("user"), AuthenticatedUser)


class RequestGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.hostnames = allowed_hostnames(settings)
        # The proxy's own pages (same origin on loopback) are always allowed.
        own = {
            f"{scheme}://{name}:{settings.port}"
            for scheme in ("http", "https")
            for name in ("127.0.0.1", "localhost", "[::1]")
        }
        self.origins = set(settings.allowed_origins) | own
        self.token = settings.auth_token.get_secret_value().encode() if settings.auth_token else None
        if self.token is not None:
            # Who opened a session, for the SDK's session binding; a digest, so the token is never kept twice.
            fingerprint = hashlib.sha256(self.token).hexdigest()[:16]
            self.user = AuthenticatedUser(AccessToken(token=fingerprint, client_id=TOKEN_CLIENT_ID, scopes=[]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rejection = self._check(scope, Headers(scope=scope))
        if rejection is not None:
            await rejection(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: Headers) -> PlainTextResponse | None:
        host = headers.get("host", "")
        if ANY not in self.hostnames and _hostname(host).lower() not in self.hostnames:
            logger.warning("rejected a request with a Host that is not allowed (allow it with MCP_ALLOWED_HOSTS)")
            logger.debug("rejected Host %r", host[:200])
            return PlainTextResponse("Invalid Host header", status_code=421)
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin.rstrip("/")):
            logger.warning("rejected a request from an Origin that is not allowed (allow it with MCP_ALLOWED_ORIGINS)")
            logger.debug("rejected Origin %r", origin[:200])
            return PlainTextResponse("Invalid Origin header", status_code=403)
        if self.token is None:
            return None
        if self._token_matches(headers):
            scope["user"] = self.user
            return None
        if route_path(scope) in PUBLIC_PATHS and scope["method"] in PUBLIC_METHODS:
            return None
        logger.warning("rejected a request without a valid bearer token")
        return PlainTextResponse(
            "Missing or invalid bearer token", status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    def _origin_allowed(self, origin: str) -> bool:
        return ANY in self.origins or origin in self.origins

    def _token_matches(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        assert self.token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token)
