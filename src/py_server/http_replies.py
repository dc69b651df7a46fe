"""How a Streamable HTTP POST is answered: one JSON body when it can be, an SSE stream when it must.

The SDK answers either every request of a manager as an SSE stream or every one as a JSON body
(`json_response`, fixed when the manager is made). A stream costs a streaming response and its
tasks, and clients that close the stream as soon as they have the result lose the keep-alive
connection with it, so every call opens a new TCP connection. Here the choice is made per request:

* a request whose `params._meta` carries a progress token is answered as a stream, because its
  progress notifications need one;
* every other request is answered with one JSON body (all the proxy's handlers send nothing else
  about a request unless it asked for progress);
* a JSON answer that is not ready after MCP_SSE_PING_INTERVAL seconds turns into a stream that
  carries keep-alive comments and then the answer as its one event, so a reverse proxy's idle
  timeout does not cut a long 1C call (`LateAnswerStream`; the SDK's 2026 path does the same).

The choice is recorded as the task that serves the request (`answering_in_one_body`): the SDK reads
it on the request's own task, while a session's message router, whose context was copied from the
request that opened the session, runs on another task and so keeps routing as for a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from starlette.types import Message, Receive, Send

__all__ = ["AdaptiveSessionManager", "LateAnswerStream", "answering_in_one_body", "asks_for_progress", "read_body"]

_ONE_BODY_TASK: ContextVar[asyncio.Task[Any] | None] = ContextVar("mcp_one_body_task", default=None)
_PROGRESS_TOKEN = b'"progressToken"'
KEEP_ALIVE_COMMENT = b": ping\r\n\r\n"


def asks_for_progress(body: bytes) -> bool:
    """Whether a JSON-RPC request body carries `params._meta.progressToken`.

    Most bodies are decided by a substring test; only one that names the key is parsed.
    """
    if _PROGRESS_TOKEN not in body:
        return False
    try:
        message = json.loads(body)
    except ValueError:
        return False  # the SDK answers the parse error
    return isinstance(message, dict) and progress_token_from_params(message.get("params")) is not None


@contextlib.contextmanager
def answering_in_one_body(one_body: bool) -> Any:
    """Within this block, the current task's request is answered as `one_body` says."""
    token = _ONE_BODY_TASK.set(asyncio.current_task() if one_body else None)
    try:
        yield
    finally:
        _ONE_BODY_TASK.reset(token)


def _in_one_body() -> bool:
    task = _ONE_BODY_TASK.get()
    return task is not None and task is asyncio.current_task()


class _AdaptiveTransport(StreamableHTTPServerTransport):
    """The SDK's transport, answering each request as `answering_in_one_body` decided for it."""

    @property  # type: ignore[override]
    def is_json_response_enabled(self) -> bool:
        return _in_one_body()

    @is_json_response_enabled.setter
    def is_json_response_enabled(self, value: bool) -> None:
        pass  # the constructor's value is replaced by the per-request choice


class AdaptiveSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager with the per-request choice, for stateful and stateless requests of
    both protocol eras (the stateless and 2026 paths read `json_response` on the request's task)."""

    @property  # type: ignore[override]
    def json_response(self) -> bool:
        return _in_one_body()

    @json_response.setter
    def json_response(self, value: bool) -> None:
        pass

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None:
            # The SDK makes the session's transport itself and offers no factory; the subclass only
            # replaces one property, so switching the class of the fresh instance is safe.
            transport.__class__ = _AdaptiveTransport
        return transport


async def read_body(receive: Receive, limit: int) -> tuple[bytes, Receive]:
    """The request body (read up to `limit` bytes) and a `receive` that replays it to the app.

    A body over the limit is not read further: the replay hands the app what was read and then the
    rest of the stream, so the app's own limit answers it (413) as it would have.
    """
    chunks: list[bytes] = []
    size = 0
    more = True
    disconnect: Message | None = None
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            disconnect = message
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            if disconnect is not None and not chunks:
                return disconnect
            return {"type": "http.request", "body": body, "more_body": more}
        if disconnect is not None:
            return disconnect
        return await receive()

    return body, replay


class LateAnswerStream:
    """Wraps the `send` of a request answered in one JSON body: if the answer has not started after
    `after` seconds, the response becomes an SSE stream with a keep-alive comment every `after`
    seconds, and the JSON answer, when it comes, is sent as the stream's one `message` event.

        async with LateAnswerStream(send, after=15.0, headers=...) as wrapped_send:
            await app(scope, receive, wrapped_send)

    Until then it costs one timer: the keep-alive task is made only when the timer fires.
    """

    def __init__(self, send: Send, *, after: float, headers: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._after = after
        self._headers = headers  # of the stream, if it comes to one
        self._lock = asyncio.Lock()
        self._started = False  # a response start went out, the app's or the stream's
        self._streaming = False  # ... and it was the stream's, which has not ended yet
        self._answer: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._pinger: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Callable[[Message], Awaitable[None]]:
        self._timer = asyncio.get_running_loop().call_later(self._after, self._start_pinging)
        return self.send

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._timer is not None
        self._timer.cancel()
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger

    def _start_pinging(self) -> None:
        if not self._started:
            self._pinger = asyncio.create_task(self._keep_alive(), name="mcp-late-answer-ping")

    async def send(self, message: Message) -> None:
        async with self._lock:
            if not self._streaming:
                self._started = self._started or message["type"] == "http.response.start"
                await self._send(message)
                return
            # The stream is open: the app's JSON response (its start is dropped) becomes its event.
            if message["type"] == "http.response.body":
                self._answer.append(message.get("body", b""))
                if not message.get("more_body", False):
                    event = b"event: message\r\ndata: " + b"".join(self._answer) + b"\r\n\r\n"
                    self._streaming = False
                    await self._send({"type": "http.response.body", "body": event, "more_body": False})

    async def _keep_alive(self) -> None:
        async with self._lock:
            if self._started:
                return
            self._started = self._streaming = True
            await self._send({"type": "http.response.start", "status": 200, "headers": self._headers})
        while True:
            async with self._lock:
                if not self._streaming:
                    return
                with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await self._send({"type": "http.response.body", "body": KEEP_ALIVE_COMMENT, "more_body": True})
            await asyncio.sleep(self._after)
