"""The HTTP front-end: a FastAPI app over the shared proxy core.

GET  /               name, version, endpoints as JSON (never the 1C URL without the token); a browser
                     (Accept prefers text/html) gets the ops page
GET  /health         readiness: 200 / 503 with a one-line reason; the detail with the token
GET  /health/live    200 while the process serves (no 1C call)
GET  /health/ready   200 when 1C answers, 503 otherwise
GET  /metrics        Prometheus text format (needs the token unless MCP_METRICS_PUBLIC=true)
GET  /sse            legacy HTTP+SSE transport; the client POSTs to /messages/?session_id=...
POST /messages/
/mcp                 Streamable HTTP (both protocol eras)
GET  /.well-known/oauth-protected-resource[/mcp|/sse]   RFC 9728 metadata (with MCP_OAUTH_ISSUER)

Everything a client can hold open (Streamable HTTP sessions, SSE streams, listen streams) counts
against MCP_MAX_SESSIONS; idle ones close after MCP_SESSION_IDLE_TIMEOUT; request bodies are capped
at MCP_MAX_REQUEST_MB; a connection that does not send its request head within
MCP_HEADER_TIMEOUT seconds is closed (see `uvicorn_options`).

app = create_app(proxy)
uvicorn.run(app, host="127.0.0.1", port=8000, **uvicorn_options(settings))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mcp.server import Server
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.auth import ProtectedResourceMetadata
from mcp.types import INTERNAL_ERROR
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import AnyHttpUrl
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .config import Settings
from .health import Health
from .http_connections import head_timeout_protocol
from .http_replies import (
    KEEP_ALIVE_COMMENT,
    AdaptiveSessionManager,
    LateAnswerStream,
    answering_in_one_body,
    asks_for_progress,
    read_body,
)
from .http_security import BASES_PREFIX, METADATA_PATH, RequestGuard, is_authenticated, resource_url, route_path
from .identity.http_auth import Authenticator
from .identity.oauth import JWTVerifier
from .local_tools import warm_up
from .mcp_server import MCPProxy
from .ops_page import page_response, wants_html

__all__ = ["CORS_HEADERS", "create_app", "uvicorn_options"]

CORS_HEADERS = [
    "Authorization",
    "X-OneC-Authorization",
    "Content-Type",
    "Accept",
    "Mcp-Session-Id",
    "Mcp-Protocol-Version",
    "Last-Event-ID",
]
MIB = 1024 * 1024
_STREAM_HEAD = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What uvicorn needs beyond the app, for `main` and for tests alike."""
    return {"http": head_timeout_protocol(settings.header_timeout), "timeout_graceful_shutdown": 5}


def _refusal(message: str) -> JSONResponse:
    """HTTP 503 with a JSON-RPC error body, as the SDK answers at its own session limit."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": INTERNAL_ERROR, "message": message}}
    return JSONResponse(body, status_code=503)


class _ActivityClock:
    """When a stream last carried a message in either direction (for the SSE idle timeout)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last


class _ActiveStream:
    """A stream wrapper that ticks `clock` on every message it carries."""

    def __init__(self, stream: Any, clock: _ActivityClock) -> None:
        self._stream = stream
        self._clock = clock

    async def receive(self) -> Any:
        message = await self._stream.receive()
        self._clock.last = time.monotonic()
        return message

    async def send(self, message: Any) -> None:
        self._clock.last = time.monotonic()
        await self._stream.send(message)

    def __aiter__(self) -> _ActiveStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def __aenter__(self) -> _ActiveStream:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._stream.__aexit__(*exc_info)


class _SSEEndpoint:
    """GET /sse as a raw ASGI app: the transport writes the response itself.

    Counts its streams for the session cap, closes a stream that carried no message for
    MCP_SESSION_IDLE_TIMEOUT, and keeps idle streams alive with comments every
    MCP_SSE_PING_INTERVAL seconds (per app; sse-starlette's own class-wide ping stays as it is).
    """

    def __init__(self, proxy: MCPProxy, transport: SseServerTransport, server: Server[Any]) -> None:
        self._proxy = proxy
        self._transport = transport
        self._server = server
        self._idle_timeout = proxy.settings.session_idle_timeout
        self._ping_interval = proxy.settings.sse_ping_interval
        self.open_streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self._proxy.sessions
        if not gate.has_room():
            await _refusal(gate.refusal())(scope, receive, send)
            return
        self.open_streams += 1
        try:
            async with (
                _KeepAliveSend(send, self._ping_interval) as keep_alive_send,
                self._transport.connect_sse(scope, receive, keep_alive_send) as (read_stream, write_stream),
            ):
                clock = _ActivityClock()
                reads, writes = _ActiveStream(read_stream, clock), _ActiveStream(write_stream, clock)
                async with anyio.create_task_group() as group:
                    group.start_soon(self._close_when_idle, clock, group.cancel_scope)
                    await self._server.run(reads, writes, self._server.create_initialization_options())
                    group.cancel_scope.cancel()
                await write_stream.aclose()
        finally:
            self.open_streams -= 1

    async def _close_when_idle(self, clock: _ActivityClock, scope: anyio.CancelScope) -> None:
        # Sleeps until the earliest moment the stream could be idle: a deadline that moves with activity.
        while True:
            remaining = self._idle_timeout - clock.idle_for()
            if remaining <= 0:
                scope.cancel()
                return
            await anyio.sleep(remaining)


class _KeepAliveSend:
    """Wraps an ASGI `send` of a streaming response: a comment line after `interval` seconds of silence."""

    def __init__(self, send: Send, interval: float) -> None:
        self._send = send
        self._interval = interval
        self._lock = anyio.Lock()
        self._last = time.monotonic()
        self._streaming = False
        self._group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Send:
        self._group = await anyio.create_task_group().__aenter__()
        return self.send

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        return await self._group.__aexit__(*exc_info)

    async def send(self, message: Message) -> None:
        async with self._lock:
            await self._send(message)
            self._last = time.monotonic()
        if message["type"] == "http.response.start":
            self._streaming = True
            assert self._group is not None
            self._group.start_soon(self._keep_alive)
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            self._streaming = False

    async def _keep_alive(self) -> None:
        while self._streaming:
            await anyio.sleep(max(self._interval - (time.monotonic() - self._last), 0.01))
            if time.monotonic() - self._last < self._interval:
                continue
            async with self._lock:
                if not self._streaming:
                    return
                with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await self._send({"type": "http.response.body", "body": KEEP_ALIVE_COMMENT, "more_body": True})
                self._last = time.monotonic()


class _StreamableHTTPEndpoint:
    """/mcp: the SDK's session manager, behind the shared session cap, answering each POST in one
    JSON body unless it asks for progress (see `http_replies`).

    A request that would open something long-lived (a 2025 session, a 2026 listen stream) is
    refused with 503 when the cap is reached; the manager enforces its own count besides.
    """

    def __init__(self, proxy: MCPProxy, manager: StreamableHTTPSessionManager, max_body: int) -> None:
        self._proxy = proxy
        self._manager = manager
        self._max_body = max_body
        self._ping_interval = proxy.settings.sse_ping_interval
        self._stateless = proxy.settings.stateless_http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await self._manager.handle_request(scope, receive, send)
            return
        headers = Headers(scope=scope)
        opens = self._opens(headers)
        body, receive = await read_body(receive, self._max_body)
        one_body = opens != "listen" and not asks_for_progress(body)
        with answering_in_one_body(one_body):
            # A stream's head goes out before the answer, so it cannot carry the id of a session the
            # request is still opening: such a request (a stateful initialize) waits as plain JSON.
            may_stream = opens is None or self._stateless
            if one_body and may_stream and "text/event-stream" in headers.get("accept", ""):
                stream_headers = _STREAM_HEAD
                if "mcp-session-id" in headers:
                    stream_headers = [*_STREAM_HEAD, (b"mcp-session-id", headers["mcp-session-id"].encode("latin-1"))]
                async with LateAnswerStream(send, after=self._ping_interval, headers=stream_headers) as late_send:
                    await self._admit(opens, scope, receive, late_send)
            else:
                await self._admit(opens, scope, receive, send)

    async def _admit(
        self, opens: Literal["session", "listen"] | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        gate = self._proxy.sessions
        if opens is None:
            await self._manager.handle_request(scope, receive, send)
        elif opens == "listen":  # counted by the listen handler itself, for as long as it streams
            if gate.has_room():
                await self._manager.handle_request(scope, receive, send)
            else:
                await _refusal(gate.refusal())(scope, receive, send)
        else:
            # A 2025 session: held until the opening request ends, when the SDK counts it (the
            # overlap errs towards refusing, never towards passing the cap).
            with gate.reserve() as admitted:
                if admitted:
                    await self._manager.handle_request(scope, receive, send)
                else:
                    await _refusal(gate.refusal())(scope, receive, send)

    @staticmethod
    def _opens(headers: Headers) -> Literal["session", "listen"] | None:
        """What long-lived thing this POST would open, if any."""
        version = headers.get("mcp-protocol-version")
        if version is None or version in HANDSHAKE_PROTOCOL_VERSIONS:
            return "session" if "mcp-session-id" not in headers else None
        return "listen" if headers.get("mcp-method") == "subscriptions/listen" else None

    @property
    def open_sessions(self) -> int:
        # The manager keeps no public count; its session table is the truth.
        return len(self._manager._server_instances)


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


class _MCPEndpoints:
    """One view's MCP endpoints under `prefix`: {prefix}/sse + {prefix}/messages/ and {prefix}/mcp."""

    def __init__(self, proxy: MCPProxy, prefix: str, server: Server[Any]) -> None:
        settings = proxy.settings
        max_body = int(settings.max_request_mb * MIB)
        self.prefix = prefix
        self.transport = SseServerTransport(f"{prefix}/messages/", max_request_body_size=max_body)
        self.manager = AdaptiveSessionManager(
            app=server,
            # Stateless: every request gets a fresh transport, so any replica can answer it (the
            # SDK refuses an idle timeout in this mode: there are no sessions to time out).
            stateless=settings.stateless_http,
            session_idle_timeout=None if settings.stateless_http else settings.session_idle_timeout,
            max_sessions=settings.max_sessions,
            max_request_body_size=max_body,
        )
        self.sse = _SSEEndpoint(proxy, self.transport, server)
        self.mcp = _StreamableHTTPEndpoint(proxy, self.manager, max_body)
        self.streamable = _FinishStreams(self.mcp)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{self.prefix}/sse", endpoint=_FinishStreams(self.sse), methods=["GET"]),
            Mount(f"{self.prefix}/messages/", app=self.transport.handle_post_message),
            # Route, not Mount: clients POST to exactly /mcp, with no redirect to /mcp/.
            Route(f"{self.prefix}/mcp", endpoint=self.streamable),
        ]

    def per_call_paths(self) -> dict[str, ASGIApp]:
        """The paths every MCP call is posted to (a client's GET /sse is once per stream)."""
        return {f"{self.prefix}/mcp": self.streamable, f"{self.prefix}/messages/": self.transport.handle_post_message}


class _ProxyApp(FastAPI):
    """FastAPI, with the paths every MCP call is posted to served straight behind the proxy's own
    middleware (the guard, CORS), past FastAPI's error, exception and exit-stack layers and its
    router: those endpoints answer their own errors, and the layers cost more per call than the
    guard itself. Every other path, and any other spelling of these, goes through FastAPI as before.
    """

    def __init__(self, *, per_call: dict[str, ASGIApp], **options: Any) -> None:
        super().__init__(**options)
        self._per_call = per_call

    def build_middleware_stack(self) -> ASGIApp:
        everything = super().build_middleware_stack()
        per_call: ASGIApp = self._dispatch_per_call
        for cls, args, kwargs in reversed(self.user_middleware):  # as Starlette wraps its router
            per_call = cls(per_call, *args, **kwargs)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and route_path(scope) in self._per_call:
                await per_call(scope, receive, send)
            else:
                await everything(scope, receive, send)

        return app

    async def _dispatch_per_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._per_call[route_path(scope)](scope, receive, send)


def create_app(proxy: MCPProxy, *, verifier: JWTVerifier | None = None) -> FastAPI:
    """The HTTP front-end of `proxy`. `verifier` checks OAuth tokens; made from the settings when
    MCP_OAUTH_ISSUER is set and none is given."""
    settings = proxy.settings
    if verifier is None and settings.oauth_enabled:
        verifier = JWTVerifier.from_settings(settings)
    authenticator = Authenticator.from_settings(
        settings,
        verifier=verifier,
        group_claim=getattr(proxy.policies, "claim", None),
        admits=getattr(proxy.policies, "admits", None),
        verify_login=proxy.verify_login,
    )
    # The default endpoints (/mcp, /sse) serve the default view; /bases/<name>/... one base each.
    endpoints = [_MCPEndpoints(proxy, "", proxy.server)]
    endpoints += [_MCPEndpoints(proxy, f"{BASES_PREFIX}{name}", proxy.server_for(name)) for name in proxy.bases]
    proxy.sessions.add_counter("sse", lambda: sum(endpoint.sse.open_streams for endpoint in endpoints))
    proxy.sessions.add_counter("streamable_http", lambda: sum(endpoint.mcp.open_sessions for endpoint in endpoints))
    health = Health(proxy)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with proxy.running(), contextlib.AsyncExitStack() as managers:
                for endpoint in endpoints:
                    await managers.enter_async_context(endpoint.manager.run())
                # The extras' slow parts (the local knowledge base's index) are built in the background
                # once the app serves, never before.
                warming = asyncio.create_task(warm_up(proxy.extras), name="warm-up-extras")
                try:
                    yield
                finally:
                    warming.cancel()
        finally:
            if verifier is not None:
                await verifier.aclose()

    per_call = {path: app for endpoint in endpoints for path, app in endpoint.per_call_paths().items()}
    app = _ProxyApp(
        per_call=per_call,
        title="onec-mcp-proxy",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def may_see_detail(request: Request) -> bool:
        return not authenticator.required or is_authenticated(request.scope)

    @app.get("/", response_model=None)
    async def index(request: Request) -> dict[str, Any] | Response:
        if wants_html(request):  # a browser: the ops page (see ops_page)
            return page_response()
        info: dict[str, Any] = {
            "name": settings.server_name,
            "version": __version__,
            "endpoints": {
                "health": "/health",
                "live": "/health/live",
                "ready": "/health/ready",
                "sse": "/sse",
                "messages": "/messages/",
                "streamable_http": "/mcp",
            },
            "bases": {name: f"{BASES_PREFIX}{name}/mcp" for name in proxy.bases},
            "auth": _auth_scheme(settings),
        }
        if may_see_detail(request):
            info["onec_url"] = proxy.client.base_url
            if len(proxy.bases) > 1:
                info["onec_urls"] = {name: base.upstreams.service.client.base_url for name, base in proxy.bases.items()}
        return info

    @app.get("/health")
    async def health_report(request: Request) -> JSONResponse:
        status, body = await health.report(detail=may_see_detail(request))
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = proxy.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        status, body = await health.report(detail=False)
        return JSONResponse(body, status_code=status)

    if verifier is not None:
        oauth_verifier = verifier

        async def protected_resource_metadata(request: Request) -> JSONResponse:
            endpoint = request.path_params.get("endpoint", "")
            resource = resource_url(settings, request.scope, f"/{endpoint}" if endpoint else "")
            metadata = ProtectedResourceMetadata(
                resource=AnyHttpUrl(resource),
                authorization_servers=[AnyHttpUrl(oauth_verifier.metadata_issuer)],
                scopes_supported=settings.oauth_scopes or None,
                resource_name=settings.server_name,
            ).model_dump(mode="json", exclude_none=True)
            # Validated by the SDK's model, sent as written: a URL type would add a "/" to a bare-host
            # issuer, and clients compare the issuer byte for byte with the provider's own metadata.
            metadata.update(resource=resource, authorization_servers=[oauth_verifier.metadata_issuer])
            return JSONResponse(metadata, headers={"Cache-Control": "public, max-age=3600"})

        app.router.routes.append(Route(METADATA_PATH, protected_resource_metadata, methods=["GET"]))
        app.router.routes.append(
            Route(METADATA_PATH + "/{endpoint:path}", protected_resource_metadata, methods=["GET"])
        )
    for endpoint in endpoints:
        app.router.routes.extend(endpoint.routes())

    app.add_middleware(RequestGuard, settings=settings, authenticator=authenticator)
    if settings.allowed_origins:  # added last = outermost, so preflights never reach the guard
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=CORS_HEADERS,
            expose_headers=["Mcp-Session-Id"],
        )
    return app


def _auth_scheme(settings: Settings) -> str:
    """How clients authenticate, for `/` (names only, never a value)."""
    bearer = "oauth" if settings.oauth_enabled else "bearer" if settings.auth_token else None
    login = "onec-basic" if settings.onec_auth == "passthrough" else None
    return "+".join(part for part in (bearer, login) if part) or "none"
