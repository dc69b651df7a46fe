"""The 1C HTTP client: JSON-RPC 2.0 over one pooled httpx.AsyncClient.

This is the only module that catches httpx and JSON exceptions. It turns them into the
`errors.OneCError` tree, with messages a 1C admin can act on; they never hold the password.

    async with OneCClient.from_settings(settings) as onec:
        await onec.discover()
        tools = await onec.list_tools()
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from . import __version__
from .config import Settings, require_onec_url
from .errors import (
    OneCAuthError,
    OneCConnectionError,
    OneCError,
    OneCHTTPError,
    OneCProtocolError,
    OneCRedirectError,
    OneCRpcError,
    OneCTimeoutError,
)

__all__ = ["READ_ONLY_METHODS", "Discovery", "OneCClient", "create_http_client", "strip_module_prefix"]

logger = logging.getLogger(__name__)

# They change nothing in 1C, so one retry after a broken connection is safe. Never tools/call.
READ_ONLY_METHODS = frozenset({"tools/list", "resources/list", "prompts/list", "resources/read", "prompts/get", "ping"})
_DISCOVERY_PATHS: tuple[Literal["manifest", "health"], ...] = ("manifest", "health")
_POST_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
# 1C's "{ОбщийМодуль.mcp_APIBackend.Модуль(263)}: " (newer platforms add a column: "(263,5)").
_MODULE_PREFIX = re.compile(r"\{[^{}\s]+\(\d+(?:,\s*\d+)?\)\}:\s*")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_INVISIBLE = re.compile(r"<(head|script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Discovery:
    """What `OneCClient.discover` found.

    `source` names the endpoint that answered ("rpc": neither manifest nor health, only POST rpc).
    `capabilities` comes from a JSON manifest ({"tools": bool, "resources": bool, "prompts": bool});
    None when unknown.
    """

    source: Literal["manifest", "health", "rpc"]
    capabilities: dict[str, bool] | None


def strip_module_prefix(message: str) -> str:
    """Remove 1C's `{Module(line)}: ` prefixes: users need the error, not the BSL location."""
    return _MODULE_PREFIX.sub("", message)


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one pooled HTTP client for 1C: base URL, Basic auth, timeouts, no redirects, cookies.

    Raises:
        ConfigError: MCP_ONEC_URL is not set.
    """
    size = settings.onec_max_concurrency
    auth = None
    if settings.onec_username:
        auth = httpx.BasicAuth(settings.onec_username, settings.onec_password.get_secret_value())
    return httpx.AsyncClient(
        base_url=require_onec_url(settings) + "/",
        auth=auth,
        timeout=httpx.Timeout(settings.onec_timeout, connect=settings.onec_connect_timeout),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        headers={"Accept": "application/json", "User-Agent": f"onec-mcp-proxy/{__version__}"},
    )


class OneCClient:
    """JSON-RPC calls to the 1C HTTP service, at most `max_concurrency` at a time.

    Every call raises only `OneCError` subclasses for 1C failures: `OneCConnectionError`
    (`OneCTimeoutError`), `OneCHTTPError` (`OneCAuthError`, `OneCRedirectError`),
    `OneCProtocolError`, `OneCRpcError`. After `aclose()` every call raises `RuntimeError`.
    The client owns `http` and closes it.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        rpc_path: str = "rpc",
        max_concurrency: int = 4,
        timeout: float = 120.0,
        username: str = "",
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._http = http
        self._base_url = str(http.base_url.copy_with(userinfo=b"")).rstrip("/")  # used in every message
        self._rpc_path = rpc_path.strip("/")
        self._timeout = timeout
        self._username = username
        self._slots = asyncio.Semaphore(max_concurrency)
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._ping_path: str | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> OneCClient:
        return cls(
            create_http_client(settings),
            rpc_path=settings.onec_rpc_path,
            max_concurrency=settings.onec_max_concurrency,
            timeout=settings.onec_timeout,
            username=settings.onec_username,
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def rpc_url(self) -> str:
        return f"{self.base_url}/{self._rpc_path}"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def __repr__(self) -> str:
        return f"<OneCClient {self.rpc_url} user={self._username!r} in_flight={self._in_flight}>"

    async def __aenter__(self) -> OneCClient:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._http.aclose()

    # --- public calls ---------------------------------------------------------------------

    async def discover(self) -> Discovery:
        """Find which discovery endpoint the backend has: manifest, then health, else rpc only.

        Raises:
            OneCConnectionError, OneCAuthError, OneCRedirectError, OneCHTTPError (5xx).
        """
        for source in _DISCOVERY_PATHS:
            response = await self._exchange("GET", source, f"GET {source}", retry=True, tolerate_4xx=True)
            if response.is_success:
                self._ping_path = source
                caps = _manifest_capabilities(response.content) if source == "manifest" else None
                return Discovery(source, caps)
        self._ping_path = None
        return Discovery("rpc", None)

    async def ping(self) -> float:
        """One light round trip; returns its duration in seconds. Any JSON-RPC reply means alive."""
        started = time.perf_counter()
        if self._ping_path is not None:
            await self._exchange("GET", self._ping_path, f"GET {self._ping_path}", retry=True)
        else:
            await self._rpc("ping", None)
        return time.perf_counter() - started

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON-RPC call; returns its `result` object.

        Raises:
            OneCRpcError: 1C answered with a JSON-RPC error (`.code`, `.detail`).
            OneCProtocolError, OneCHTTPError, OneCConnectionError: see the class docstring.
        """
        reply = await self._rpc(method, params)
        if "error" in reply:
            error = reply["error"]
            logger.warning("1C returned error %s for %s: %s", error["code"], method, error["message"])
            message = f"1C returned error {error['code']}: {strip_module_prefix(error['message'])}"
            raise OneCRpcError(message, code=error["code"], detail=error["message"])
        result = reply["result"]
        if not isinstance(result, dict):
            raise OneCProtocolError(f"1C answered {method} with a non-object result: {_short(result)}")
        return result

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """A JSON-RPC notification (no id). 1C answers 204, the MCP spec says 202; 200 is fine too."""
        body = _encode({"jsonrpc": "2.0", "method": method}, params)
        response = await self._exchange("POST", self._rpc_path, method, content=body)
        if response.status_code not in (200, 202, 204):
            raise OneCProtocolError(
                f"1C answered the notification {method} with HTTP {response.status_code}, "
                f"expected 204, 202 or 200: {_excerpt(response.content)}"
            )

    async def list_tools(self) -> list[dict[str, Any]]:
        return await self._list("tools/list", "tools")

    async def list_resources(self) -> list[dict[str, Any]]:
        return await self._list("resources/list", "resources")

    async def list_prompts(self) -> list[dict[str, Any]]:
        return await self._list("prompts/list", "prompts")

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments})

    async def read_resource(self, uri: str) -> dict[str, Any]:
        return await self.request("resources/read", {"uri": uri})

    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> dict[str, Any]:
        return await self.request("prompts/get", {"name": name, "arguments": arguments or {}})

    # --- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("OneCClient is closed")

    async def _list(self, method: str, key: str) -> list[dict[str, Any]]:
        result = await self.request(method, {})
        items = result.get(key)
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise OneCProtocolError(f"1C's {method} result has no '{key}' list of objects: {_short(result)}")
        return items

    async def _rpc(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """Send one request; return the checked reply envelope (with `result` or `error`)."""
        rpc_id = next(self._ids)
        body = _encode({"jsonrpc": "2.0", "id": rpc_id, "method": method}, params)
        retry = method in READ_ONLY_METHODS
        response = await self._exchange("POST", self._rpc_path, method, rpc_id, content=body, retry=retry)
        try:
            reply = json.loads(response.content.decode("utf-8-sig"))
        except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError
            raise OneCProtocolError(
                f"1C answered {method} at {self.rpc_url} with HTTP {response.status_code} but not JSON: "
                f"{_excerpt(response.content)}. Check MCP_ONEC_URL and MCP_ONEC_RPC_PATH."
            ) from exc
        return _check_envelope(reply, rpc_id, method)

    async def _exchange(
        self,
        verb: str,
        path: str,
        what: str,
        rpc_id: int | None = None,
        *,
        content: bytes | None = None,
        retry: bool = False,
        tolerate_4xx: bool = False,
    ) -> httpx.Response:
        """One HTTP exchange in a concurrency slot, every failure translated; `retry` once if dropped."""
        self._check_open()
        url = f"{self.base_url}/{path}"
        for attempt in (1, 2):
            try:
                response = await self._send(verb, path, what, rpc_id, content)
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if not (retry and attempt == 1):
                    raise self._transport_error(exc, url, what) from exc
                logger.debug("1C %s: %s, retrying once", what, _reason(exc))  # a dropped keep-alive
            except httpx.RequestError as exc:
                raise self._transport_error(exc, url, what) from exc
            else:
                self._check_status(response, url, what, tolerate_4xx=tolerate_4xx)
                return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, verb: str, path: str, what: str, rpc_id: int | None, content: bytes | None) -> httpx.Response:
        headers = _POST_HEADERS if content is not None else None
        timeout = httpx.Timeout(self._timeout, connect=self._http.timeout.connect)
        async with self._slots:
            self._in_flight += 1
            started = time.perf_counter()
            try:
                response = await self._http.request(verb, path, content=content, headers=headers, timeout=timeout)
            finally:
                self._in_flight -= 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        status, size = response.status_code, len(response.content)
        logger.debug("1C %s id=%s: HTTP %d, %d bytes, %.0f ms", what, rpc_id, status, size, elapsed_ms)
        return response

    def _transport_error(self, exc: httpx.RequestError, url: str, what: str) -> OneCError:
        reason = _reason(exc)
        unreachable = "Is the web server running and the base published? Check MCP_ONEC_URL."
        if isinstance(exc, httpx.ConnectTimeout):
            connect = self._http.timeout.connect or 0
            return OneCConnectionError(
                f"Cannot connect to 1C at {url}: no connection within {connect:g} s "
                f"(MCP_ONEC_CONNECT_TIMEOUT). {unreachable}"
            )
        if isinstance(exc, httpx.TimeoutException):  # read, write, pool
            return OneCTimeoutError(
                f"1C did not answer {what} within {self._timeout:g} s (MCP_ONEC_TIMEOUT). If the operation "
                "is long, raise MCP_ONEC_TIMEOUT; otherwise check that the 1C server is not overloaded "
                "or waiting on a lock."
            )
        if isinstance(exc, httpx.ConnectError):
            return OneCConnectionError(f"Cannot connect to 1C at {url}: {reason}. {unreachable}")
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            return OneCConnectionError(
                f"1C at {url} dropped the connection during {what}: {reason}. "
                "The web server or the 1C server may have restarted; try again."
            )
        if isinstance(exc, httpx.DecodingError):
            return OneCProtocolError(f"1C's answer to {what} at {url} could not be decoded: {reason}")
        return OneCConnectionError(f"Request to 1C at {url} failed: {reason}. Check MCP_ONEC_URL.")

    def _check_status(self, response: httpx.Response, url: str, what: str, *, tolerate_4xx: bool) -> None:
        status, user = response.status_code, self._username
        if response.is_success or (tolerate_4xx and 400 <= status < 500 and status not in (401, 403)):
            return
        if 300 <= status < 400:
            raise OneCRedirectError(
                f"1C answered HTTP {status} (redirect to {response.headers.get('Location', '?')}) for {url}. "
                "The publication name in MCP_ONEC_URL is case-sensitive: check the case of the base name.",
                status_code=status,
            )
        if status == 401:
            who = f"for user '{user}'" if user else "(no user set)"
            raise OneCAuthError(
                f"1C rejected the login {who} (HTTP 401). Check MCP_ONEC_USERNAME and MCP_ONEC_PASSWORD.",
                status_code=status,
            )
        if status == 403:
            raise OneCAuthError(
                f"1C user '{user}' has no right to use the HTTP service (HTTP 403) at {url}: "
                "grant the user rights in the 1C configurator.",
                status_code=status,
            )
        hint = (
            "Check MCP_ONEC_SERVICE_ROOT and MCP_ONEC_RPC_PATH and that the HTTP service is published."
            if status == 404
            else "See the web server and 1C server logs."
        )
        raise OneCHTTPError(
            f"1C answered {what} at {url} with HTTP {status}: {_excerpt(response.content)}. {hint}",
            status_code=status,
        )


def _check_envelope(reply: Any, rpc_id: int, method: str) -> dict[str, Any]:
    if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0":
        raise OneCProtocolError(f"1C's answer to {method} is not a JSON-RPC 2.0 reply: {_short(reply)}")
    if ("result" in reply) == ("error" in reply):
        raise OneCProtocolError(f"1C's answer to {method} must hold either result or error: {_short(reply)}")
    reply_id = reply.get("id")
    # JSON-RPC sends an error with id null when the server could not read the request's id.
    if not ("error" in reply and reply_id is None) and (reply_id != rpc_id or isinstance(reply_id, bool)):
        raise OneCProtocolError(f"1C answered {method} with id {reply_id!r}, but the request had id {rpc_id}")
    error = reply.get("error")
    if "error" in reply and not (
        isinstance(error, dict)
        and isinstance(error.get("code"), int)
        and not isinstance(error.get("code"), bool)
        and isinstance(error.get("message"), str)
    ):
        raise OneCProtocolError(f"1C's error answer to {method} lacks a code or message: {_short(reply)}")
    return reply


def _manifest_capabilities(content: bytes) -> dict[str, bool] | None:
    try:
        manifest = json.loads(content.decode("utf-8-sig"))
    except ValueError:  # early builds answered an empty body: not fatal
        return None
    caps = manifest.get("capabilities") if isinstance(manifest, dict) else None
    if not isinstance(caps, dict):
        return None
    return {key: caps.get(key) not in (None, False) for key in ("tools", "resources", "prompts")}


def _encode(message: dict[str, Any], params: dict[str, Any] | None) -> bytes:
    if params is not None:
        message["params"] = params
    return json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    return _clip(json.dumps(value, ensure_ascii=False))


def _squash(text: str) -> str:
    return " ".join(html.unescape(text).split())


def _excerpt(body: bytes) -> str:
    """A short readable excerpt of an error body: an HTML page's title and visible text."""
    text = body.decode("utf-8-sig", errors="replace")
    match = _TITLE.search(text)
    title = _squash(match.group(1)) if match else ""
    visible = _squash(_TAG.sub(" ", _INVISIBLE.sub(" ", text))).rstrip(". ")
    if title and title not in visible:
        visible = f"{title}: {visible}" if visible else title
    return _clip(visible) if visible else "(empty body)"
