"""Who is asking: the caller of one MCP request, as policy and the audit log see it.

Over HTTP the name is the credential's name (never the secret), from `scope["user"]` that the
request guard sets; without a token it is "anonymous". Over stdio it is the operating-system user
who runs the proxy: a stdio proxy serves one person, its own client.

    caller = caller_of(ctx)          # Caller(name="ivanov", transport="stdio", session_id=None)
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from starlette.requests import Request

__all__ = ["ANONYMOUS", "Caller", "Transport", "caller_of"]

Transport = Literal["stdio", "sse", "streamable_http"]
ANONYMOUS = "anonymous"
SESSION_HEADER = "mcp-session-id"


@dataclass(frozen=True)
class Caller:
    name: str
    transport: Transport
    session_id: str | None = None


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
        return Caller(_local_user(), "stdio")
    user = request.scope.get("user")
    name = getattr(user, "display_name", None) or ANONYMOUS
    # The route decides, not a header: an SSE client could send any Mcp-Session-Id to /messages/.
    # scope["path"], not request.url: building a URL per call costs more than the rest of this.
    if request.scope["path"].rstrip("/").endswith("/mcp"):
        return Caller(name, "streamable_http", request.headers.get(SESSION_HEADER))
    return Caller(name, "sse", request.query_params.get("session_id"))
