"""The HTTP front-end: a FastAPI app over the shared proxy core.

GET  /            name, version, endpoints, 1C URL (never credentials)
GET  /health      200 healthy / 503 unhealthy, with 1C's round-trip time or the reason
GET  /sse         legacy HTTP+SSE transport; the client POSTs to /messages/?session_id=...
POST /messages/
/mcp              Streamable HTTP (both protocol eras)

app = create_app(proxy)
uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from sse_starlette import EventSourceResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .http_security import MCP_PATHS, RequestGuard
from .mcp_server import MCPProxy

CORS_HEADERS = ["Authorization", "Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-ID"]


class _SSEEndpoint:
    """GET /sse as a raw ASGI app: the transport writes the response itself."""

    def __init__(self, proxy: MCPProxy, transport: SseServerTransport) -> None:
        self._proxy = proxy
        self._transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._transport.connect_sse(scope, receive, send) as (read_stream, write_stream):
            await self._proxy.server.run(read_stream, write_stream, self._proxy.initialization_options())


class _FinishStreams:
    """Close a streaming response that its transport left open (at shutdown, the SSE and Streamable
    HTTP streams end without their final body frame, which uvicorn reports as an ERROR)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = finished = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, finished
            started = started or message["type"] == "http.response.start"
            finished = finished or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            if started and not finished:
                with contextlib.suppress(Exception):  # the client may be gone already
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


def create_app(proxy: MCPProxy) -> FastAPI:
    settings = proxy.settings
    # The SDK's SSE responses take sse-starlette's default keep-alive interval.
    EventSourceResponse.DEFAULT_PING_INTERVAL = settings.sse_ping_interval
    sse = SseServerTransport("/messages/")
    sessions = StreamableHTTPSessionManager(app=proxy.server)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with proxy.running(), sessions.run():
            yield

    app = FastAPI(title="onec-mcp-proxy", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {
            "name": settings.server_name,
            "version": __version__,
            "onec_url": proxy.client.base_url,
            "endpoints": {
                "health": "/health",
                "sse": "/sse",
                "messages": "/messages/",
                "streamable_http": "/mcp",
            },
            "auth": "bearer" if settings.auth_token else "none",
        }

    @app.get("/health")
    async def health() -> JSONResponse:
        healthy, report = await proxy.health()
        return JSONResponse(report, status_code=200 if healthy else 503)

    app.router.routes.append(Route("/sse", endpoint=_FinishStreams(_SSEEndpoint(proxy, sse)), methods=["GET"]))
    app.router.routes.append(Mount("/messages/", app=sse.handle_post_message))
    # Route, not Mount: clients POST to exactly /mcp, with no redirect to /mcp/.
    app.router.routes.append(Route("/mcp", endpoint=_FinishStreams(StreamableHTTPASGIApp(sessions))))

    app.add_middleware(RequestGuard, settings=settings, protected_paths=MCP_PATHS)
    if settings.allowed_origins:  # added last = outermost, so preflights never reach the guard
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=CORS_HEADERS,
            expose_headers=["Mcp-Session-Id"],
        )
    return app
