"""One ASGI middleware for the HTTP front-end's request checks, in front of every route.

* Host: only allowed names (loopback by default, plus MCP_ALLOWED_HOSTS), against DNS rebinding.
* Origin: a request that carries one must come from an allowed origin (MCP_ALLOWED_ORIGINS, or the
  proxy's own loopback origin); `Origin: null` (sandboxed frames, file pages) is foreign.
* Who: the `identity.http_auth.Authenticator` (the bearer token or an OAuth JWT, and with
  passthrough the person's 1C login). Deny by default: whatever path spelling, method or mount a
  request uses (`/mcp/`, `HEAD`, `/messages`), if it is not one of the public paths it needs the
  credentials, so a route added later cannot open a door.

A request that passes carries `scope["user"]` (a `ProxyUser`, the SDK's `AuthenticatedUser` with
our `Identity`): the SDK then binds each Streamable HTTP and SSE session to the credential that
opened it, `/health` shows its detail, and handlers know who asks. Rejections are logged; the
logging setup rate-limits this logger against floods.
"""

from __future__ import annotations

import logging
import re

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .callers import ProxyUser
from .config import Settings
from .identity.http_auth import Authenticator, Refusal

__all__ = [
    "LOOPBACK_NAMES",
    "METADATA_PATH",
    "PUBLIC_PATHS",
    "RequestGuard",
    "allowed_hostnames",
    "is_authenticated",
    "metadata_url",
]

logger = logging.getLogger(__name__)

# Open without credentials: the index and the health endpoints (which show only a status and a
# one-line reason unless the caller is authenticated), and the OAuth protected resource metadata.
PUBLIC_PATHS = frozenset({"/", "/health", "/health/live", "/health/ready"})
METADATA_PATH = "/.well-known/oauth-protected-resource"
METRICS_PATH = "/metrics"  # public only with MCP_METRICS_PUBLIC=true
BASES_PREFIX = "/bases/"  # per-base endpoints: /bases/<name>/mcp, /bases/<name>/sse
PUBLIC_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
ANY = "*"
_HOST_SYNTAX = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?")


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


def is_public(scope: Scope) -> bool:
    if scope["method"] not in PUBLIC_METHODS:
        return False
    path = route_path(scope)
    return path in PUBLIC_PATHS or path == METADATA_PATH or path.startswith(METADATA_PATH + "/")


def base_of(path: str) -> str | None:
    """The base a per-base endpoint serves (`/bases/<name>/...`), else None."""
    if not path.startswith(BASES_PREFIX):
        return None
    return path[len(BASES_PREFIX) :].split("/", 1)[0] or None


def endpoint_of(path: str) -> str:
    """The MCP endpoint a path belongs to ("/mcp", "/sse", "/bases/erp/mcp", ...), or "" for the whole server."""
    base = base_of(path)
    prefix = f"{BASES_PREFIX}{base}" if base is not None else ""
    rest = path[len(prefix) :].rstrip("/")
    if rest.startswith("/messages") or rest == "/sse":
        return f"{prefix}/sse"
    return f"{prefix}/mcp" if rest == "/mcp" else ""


def resource_url(settings: Settings, scope: Scope, endpoint: str) -> str:
    """This server's resource URL (RFC 8707/9728) for `endpoint`: MCP_OAUTH_RESOURCE, else as requested.

    MCP_OAUTH_RESOURCE names the /mcp endpoint as clients reach it (behind a reverse proxy); another
    endpoint (a base's, /sse) is announced at the same origin, since a client accepts metadata only
    for a resource its own URL falls under."""
    if settings.oauth_resource:
        resource = settings.oauth_resource.rstrip("/")
        if endpoint in ("", "/mcp"):
            return resource
        scheme, _, rest = resource.partition("://")
        host, _, path = rest.partition("/")
        mount = ("/" + path).removesuffix("/mcp") if path else ""  # a reverse proxy's path prefix, if any
        return f"{scheme}://{host}{mount}{endpoint}"
    headers = Headers(scope=scope)
    host = headers.get("host") or "localhost"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{endpoint}"


def metadata_url(settings: Settings, scope: Scope) -> str:
    """Where a client finds the protected resource metadata for the endpoint it asked (RFC 9728 §3.1)."""
    resource = resource_url(settings, scope, endpoint_of(route_path(scope)))
    scheme, _, rest = resource.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host}{METADATA_PATH}{slash}{path}".rstrip("/")


class RequestGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings, authenticator: Authenticator | None = None) -> None:
        self.app = app
        self.settings = settings
        self.hostnames = allowed_hostnames(settings)
        # The proxy's own pages (same origin on loopback) are always allowed.
        own = {
            f"{scheme}://{name}:{settings.port}"
            for scheme in ("http", "https")
            for name in ("127.0.0.1", "localhost", "[::1]")
        }
        self.origins = set(settings.allowed_origins) | own
        self.auth = authenticator or Authenticator.from_settings(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rejection = self._check_origin(headers)
        if rejection is None and self.auth.required:
            rejection = await self._authenticate(scope, headers)
        if rejection is not None:
            await rejection(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope, headers: Headers) -> ASGIApp | None:
        where = metadata_url(self.settings, scope) if self.auth.uses_oauth else None
        outcome = await self.auth.authenticate(headers, where, base_of(route_path(scope)))
        if isinstance(outcome, ProxyUser):
            scope["user"] = outcome
            return None
        if outcome is None or is_public(scope) or (self.settings.metrics_public and route_path(scope) == METRICS_PATH):
            return None
        assert isinstance(outcome, Refusal)
        logger.warning("rejected a request (HTTP %d): %s", outcome.status_code, outcome.message)
        return outcome.response()

    def _check_origin(self, headers: Headers) -> PlainTextResponse | None:
        host = headers.get("host", "")
        # A name and a port, nothing else: the Host ends up in URLs the proxy hands out (the OAuth
        # challenge and metadata), so `name:80@evil` or quotes must not pass even with MCP_ALLOWED_HOSTS=*.
        if not _HOST_SYNTAX.fullmatch(host) or (
            ANY not in self.hostnames and _hostname(host).lower() not in self.hostnames
        ):
            logger.warning("rejected a request with a Host that is not allowed (allow it with MCP_ALLOWED_HOSTS)")
            logger.debug("rejected Host %r", host[:200])
            return PlainTextResponse("Invalid Host header", status_code=421)
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin.rstrip("/"), host):
            logger.warning("rejected a request from an Origin that is not allowed (allow it with MCP_ALLOWED_ORIGINS)")
            logger.debug("rejected Origin %r", origin[:200])
            return PlainTextResponse("Invalid Origin header", status_code=403)
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        # Same origin: the page the proxy served itself (the ops page), at a Host already allowed.
        same_origin = origin.partition("://")[2] == host and origin.partition("://")[0] in ("http", "https")
        return same_origin or ANY in self.origins or origin in self.origins
