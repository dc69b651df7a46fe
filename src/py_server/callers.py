"""Who is asking: the caller of one MCP request, as policy, the audit log and the 1C connection see it.

Over HTTP the request guard has put the request's `Identity` in `scope["user"]` (a `ProxyUser`):
the OAuth user, the 1C login's user, or the credential's name (never the secret); without any
authentication it is "anonymous". Over stdio it is the operating-system user who runs the proxy,
with the service account: a stdio proxy serves one person, its own client.

    caller = caller_of(ctx)          # Caller(name="ivanov", transport="stdio", session_id=None)
    caller.identity                  # Identity("ivanov"): groups, the 1C login, ...
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.requests import Request

from .identity import Identity

__all__ = ["ANONYMOUS", "Caller", "ProxyUser", "Transport", "caller_of"]

Transport = Literal["stdio", "sse", "streamable_http"]
ANONYMOUS = "anonymous"
SESSION_HEADER = "mcp-session-id"


@dataclass(frozen=True)
class Caller:
    name: str
    transport: Transport
    session_id: str | None = None
    identity: Identity = field(default=None, compare=False)  # type: ignore[assignment]  # set below

    def __post_init__(self) -> None:
        if self.identity is None:
            object.__setattr__(self, "identity", Identity(self.name))


class ProxyUser(AuthenticatedUser):
    """`scope["user"]` of an HTTP request the guard let through: the SDK's user, with our Identity.

    `access_token` is what the SDK binds a session to (client id, issuer, subject): the guard puts
    a credential's fingerprint there, never the credential.
    """

    def __init__(self, token: AccessToken, identity: Identity) -> None:
        super().__init__(token)
        self.proxy_identity = identity  # not `identity`: Starlette's BaseUser has a property of that name

    @property
    def display_name(self) -> str:
        return self.proxy_identity.subject


_ANONYMOUS_IDENTITY = Identity(ANONYMOUS)


@cache
def _local_user() -> str:
    try:
        return getpass.getuser()  # USERNAME on Windows, LOGNAME/USER or the password database elsewhere
    except (OSError, KeyError, ImportError):
        return "local"


def caller_of(ctx: Any) -> Caller:
    """The caller of the request in `ctx` (an SDK `ServerRequestContext`)."""
    request = getattr(ctx, "request", None)
    if not isinstance(request, Request):
        return Caller(_local_user(), "stdio", identity=_stdio_identity())
    user = request.scope.get("user")
    identity = user.proxy_identity if isinstance(user, ProxyUser) else _ANONYMOUS_IDENTITY
    # The route decides, not a header: an SSE client could send any Mcp-Session-Id to /messages/.
    # scope["path"], not request.url: building a URL per call costs more than the rest of this.
    if request.scope["path"].rstrip("/").endswith("/mcp"):
        return Caller(identity.subject, "streamable_http", request.headers.get(SESSION_HEADER), identity)
    return Caller(identity.subject, "sse", request.query_params.get("session_id"), identity)


@cache
def _stdio_identity() -> Identity:
    return Identity(_local_user())
