"""The 1C HTTP client: JSON-RPC 2.0 over one pooled httpx.AsyncClient.

This is the only module that catches httpx and JSON exceptions. It turns them into the
`errors.OneCError` tree, with messages a 1C admin can act on; they never hold the password, and
every piece of text that comes from 1C passes the `Redactor` first.

    async with OneCClient.from_settings(settings) as onec:
        await onec.discover()
        tools = await onec.list_tools()

Limits: at most `max_concurrency` exchanges run in 1C at once. A caller that is cancelled gets
its cancellation at once, but the exchange it started keeps its slot until 1C answers or the
1C timeout ends it, so the cap bounds what 1C really runs. `probe()` never waits for a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import itertools
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from . import __version__
from .config import DISCOVERY_PATHS, Settings, require_onec_url
from .errors import (
    METHOD_NOT_FOUND,
    ConfigError,
    InvalidRequestError,
    OneCAuthError,
    OneCBusyError,
    OneCConnectionError,
    OneCError,
    OneCHTTPError,
    OneCProtocolError,
    OneCRedirectError,
    OneCResponseTooLarge,
    OneCRpcError,
    OneCTimeoutError,
    OneCTLSError,
)
from .identity import OneCLogin
from .redaction import Redactor, clip

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "MCP_PROTOCOL_VERSION",
    "READ_ONLY_METHODS",
    "SESSION_GONE_MARKERS",
    "Discovery",
    "OneCClient",
    "TotalSlots",
    "create_http_client",
    "strip_module_prefix",
]

logger = logging.getLogger(__name__)

# They change nothing in 1C, so one retry after a broken connection is safe. Never tools/call.
READ_ONLY_METHODS = frozenset(
    {"tools/list", "resources/list", "resources/templates/list", "prompts/list"}
    | {"resources/read", "prompts/get", "ping"}
)
# What 1C writes instead of JSON when the session in the `ibsession` cookie is gone (compared casefolded).
SESSION_GONE_MARKERS = ("сеанс отсутствует или удален", "сеанс отсутствует или удалён")
MCP_PROTOCOL_VERSION = "2025-11-25"  # what the handshake offers full-MCP 1C backends
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20
MIB = 2**20
# An error page is only shown as a 200-character excerpt: its first KB are enough.
ERROR_BODY_LIMIT = 8 * 1024
KEEPALIVE_EXPIRY = 3.0  # seconds an idle connection to 1C is kept for reuse
_POST_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
_BOM = b"\xef\xbb\xbf"
# 1C's "{ОбщийМодуль.mcp_APIBackend.Модуль(263)}: " (newer platforms add a column: "(263,5)").
_MODULE_PREFIX = re.compile(r"\{[^{}\s]+\(\d+(?:,\s*\d+)?\)\}:\s*")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_INVISIBLE = re.compile(r"<(head|script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


@dataclass(frozen=True)
class Discovery:
    """What `OneCClient.discover` found.

    `source` names the endpoint that answered ("rpc": neither manifest nor health, only POST rpc).
    `capabilities` comes from a JSON manifest ({"tools": bool, "resources": bool, "prompts": bool});
    None when unknown. `server_info` and `protocol_version` come from 1C's answer to the MCP
    `initialize` handshake; None when the backend does not serve it.
    """

    source: Literal["manifest", "health", "rpc"]
    capabilities: dict[str, bool] | None
    server_info: dict[str, Any] | None = None
    protocol_version: str | None = None


@dataclass(frozen=True)
class _Answer:
    """1C's HTTP answer, read: the whole body of a 2xx (within the cap), the first KB of any other."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


ExchangeObserver = Callable[[str, str, float], None]


class TotalSlots(asyncio.Semaphore):
    """The concurrency slots every identity's client shares: what 1C runs at once, in total."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def strip_module_prefix(message: str) -> str:
    """Remove 1C's `{Module(line)}: ` prefixes: users need the error, not the BSL location."""
    return _MODULE_PREFIX.sub("", message)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of a 1C client with these settings, shared by every client with the same CA settings.

    Loading the CA certificates costs 2-5 MB, which a context per person (passthrough) would pay again
    for each. trust_env=False on the client would drop SSL_CERT_FILE / SSL_CERT_DIR, which a 1C with a
    company CA may rely on, so they are read here and are part of the key.

    Raises:
        ConfigError: MCP_ONEC_CA_BUNDLE is not a readable PEM file of certificates.
    """
    return _tls_context_for(
        settings.onec_ca_bundle,
        settings.onec_verify_tls,
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("SSL_CERT_DIR"),
    )


@functools.cache
def _tls_context_for(
    ca_bundle: Path | None, verify: bool, cert_file: str | None, cert_dir: str | None
) -> ssl.SSLContext:
    """Made once per key (a failure is not cached, so a fixed file is read on the next try).

    MCP_ONEC_CA_BUNDLE is trusted in addition to the default store (certifi, or SSL_CERT_FILE /
    SSL_CERT_DIR): an internal 1C and public services then work side by side, and a bundle that holds
    only the company CA is enough.
    """
    if not verify:
        # Made once per process start, so this is said once at every start, before any 1C call.
        logger.warning(
            "MCP_ONEC_VERIFY_TLS=false: the certificate of an HTTPS 1C is not checked, so anyone on the "
            "network path can pose as 1C and read the 1C login. Set MCP_ONEC_CA_BUNDLE to the PEM file "
            "of the CA that signed it instead."
        )
        return httpx.create_ssl_context(verify=False)
    context = httpx.create_ssl_context(trust_env=True)
    if ca_bundle is not None:
        _load_ca_bundle(context, ca_bundle)
    return context


def _load_ca_bundle(context: ssl.SSLContext, path: Path) -> None:
    """Add the PEM certificates of `path` to `context`; raises ConfigError with one line naming the file."""
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise ConfigError(
            f"MCP_ONEC_CA_BUNDLE: {path} does not exist; set it to the PEM file of the CA that signed "
            "1C's HTTPS certificate"
        ) from None
    except ssl.SSLError:  # read, but no PEM certificate in it (a DER .cer, a key, some other file)
        raise ConfigError(
            f"MCP_ONEC_CA_BUNDLE: {path} holds no valid PEM certificate (-----BEGIN CERTIFICATE-----); "
            "export the CA certificate as Base-64 (PEM), or convert a DER .cer with "
            "'openssl x509 -inform der -in ca.cer -out ca.pem'"
        ) from None
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"MCP_ONEC_CA_BUNDLE: cannot read {path}: {exc.strerror or exc}") from None


def create_http_client(
    settings: Settings, *, login: OneCLogin | None = None, max_concurrency: int | None = None
) -> httpx.AsyncClient:
    """The pooled HTTP client of one 1C identity: base URL, Basic auth, timeouts, no redirects, cookies.

    `login` is a person's own 1C login (passthrough); None means the service account of the settings.

    Raises:
        ConfigError: MCP_ONEC_URL is not set, or MCP_ONEC_CA_BUNDLE is not a readable PEM file.
    """
    # One connection beyond the cap: the health probe never waits for a connection held by tool calls.
    size = (max_concurrency or settings.onec_max_concurrency) + 1
    auth = None
    if login is not None:
        auth = httpx.BasicAuth(login.username, login.password.get_secret_value())
    elif settings.onec_username:
        auth = httpx.BasicAuth(settings.onec_username, settings.onec_password.get_secret_value())
    return httpx.AsyncClient(
        base_url=require_onec_url(settings) + "/",
        auth=auth,
        timeout=httpx.Timeout(settings.onec_timeout, connect=settings.onec_connect_timeout),
        follow_redirects=False,
        # An idle connection is dropped before the web server's own keep-alive ends it (Apache: 5 s,
        # as httpx's default): otherwise a call sent on it just as the server closes it fails, and a
        # tools/call is never retried.
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=KEEPALIVE_EXPIRY),
        headers={"Accept": "application/json", "User-Agent": f"onec-mcp-proxy/{__version__}"},
        # 1C is usually on the LAN: HTTP(S)_PROXY and the system proxy are meant for other traffic and
        # would send the 1C login through a proxy. Only MCP_ONEC_HTTP_PROXY puts one in between.
        trust_env=False,
        proxy=settings.onec_http_proxy,
        verify=_tls_context(settings),
    )


class OneCClient:
    """JSON-RPC calls to the 1C HTTP service, at most `max_concurrency` at a time.

    Every call raises only `OneCError` subclasses for 1C failures: `OneCConnectionError`
    (`OneCTimeoutError`), `OneCBusyError`, `OneCHTTPError` (`OneCAuthError`, `OneCRedirectError`),
    `OneCProtocolError` (`OneCResponseTooLarge`), `OneCRpcError`; and `InvalidRequestError` when
    the parameters are not JSON values. After `aclose()` every call raises `RuntimeError`.
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
        queue_timeout: float = 60.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        redactor: Redactor | None = None,
        total_slots: TotalSlots | None = None,
        login_source: str = "MCP_ONEC_USERNAME and MCP_ONEC_PASSWORD",
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if queue_timeout <= 0:
            raise ValueError(f"queue_timeout must be positive, got {queue_timeout}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be at least 1, got {max_response_bytes}")
        self._http = http
        self._base_url = str(http.base_url.copy_with(userinfo=b"")).rstrip("/")  # used in every message
        self._rpc_path = rpc_path.strip("/")
        self._timeout = timeout
        self._username = username
        self._max_concurrency = max_concurrency
        self._queue_timeout = queue_timeout
        self._max_response_bytes = max_response_bytes
        self._redact = (redactor or Redactor()).redact
        self._slots = asyncio.Semaphore(max_concurrency)
        self._total = total_slots  # shared with the other identities' clients: what 1C runs in total
        self._login_source = login_source
        # Set when 1C refuses the login (401) or the user's right to the service (403): the
        # connection registry then makes a new connection and checks the login again.
        self.login_refused = False
        # Told of every JSON-RPC exchange and probe: (method, outcome, seconds). Metrics set it.
        self.observer: ExchangeObserver | None = None
        self._in_flight = 0
        self._queued = 0
        # Exchanges holding a slot. Kept here so that they outlive a cancelled caller and aclose() can end them.
        self._exchanges: set[asyncio.Task[_Answer]] = set()
        self._ids = itertools.count(1)
        self._ping_path: str | None = None
        self._closed = False
        # What every exchange would otherwise rebuild from the client's settings (httpx merges the base
        # URL, headers, cookies and timeout anew for each request: a large share of a call's CPU).
        self._urls: dict[str, httpx.URL] = {}
        self._call_timeout = httpx.Timeout(timeout, connect=http.timeout.connect).as_dict()
        self._post_headers = http.headers.copy()
        self._post_headers.update(_POST_HEADERS)
        # The Cookie header per path, worked out from the jar (the stdlib's cookie matching is slow) and
        # forgotten whenever 1C sets a cookie or the jar is cleared.
        self._cookie_headers: dict[str, str] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, login: OneCLogin | None = None, total_slots: TotalSlots | None = None
    ) -> OneCClient:
        """The service account's client, or with `login` a person's own (capped per identity, and in
        total by `total_slots`)."""
        if login is None:
            username, password = settings.onec_username, settings.onec_password.get_secret_value()
            cap, source = settings.onec_max_concurrency, "MCP_ONEC_USERNAME and MCP_ONEC_PASSWORD"
            if settings.bases_file is not None:
                source = f"the base's username and password_env in {settings.bases_file}"
        else:
            username, password = login.username, login.password.get_secret_value()
            cap, source = settings.identity_concurrency, "the 1C login your MCP client sends"
        return cls(
            create_http_client(settings, login=login, max_concurrency=cap),
            rpc_path=settings.onec_rpc_path,
            max_concurrency=cap,
            timeout=settings.onec_timeout,
            username=username,
            queue_timeout=settings.onec_queue_timeout,
            max_response_bytes=max(1, int(settings.onec_max_response_mb * MIB)),
            redactor=Redactor(basic_logins=[(username, password)]),
            total_slots=total_slots,
            login_source=source,
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def rpc_url(self) -> str:
        return f"{self.base_url}/{self._rpc_path}"

    @property
    def total_slots(self) -> TotalSlots | None:
        """The slots this client shares with the other identities' clients, if any."""
        return self._total

    @property
    def in_flight(self) -> int:
        """Exchanges holding a slot: running in 1C, including those whose caller was cancelled."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Calls waiting for a slot; they have not reached 1C."""
        return self._queued

    def __repr__(self) -> str:
        return f"<OneCClient {self.rpc_url} user={self._username!r} in_flight={self._in_flight} queued={self._queued}>"

    async def __aenter__(self) -> OneCClient:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client: exchanges still running (their callers may be gone) are cancelled."""
        self._closed = True
        running = list(self._exchanges)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)  # before the pool under them closes
        await self._http.aclose()

    # --- public calls ---------------------------------------------------------------------

    async def discover(self) -> Discovery:
        """Find the discovery endpoint (manifest, then health, else rpc only), then do the MCP handshake.

        A backend without the handshake is normal: its JSON-RPC errors and odd answers to
        `initialize` are logged, not raised.

        Raises:
            OneCConnectionError, OneCAuthError, OneCRedirectError, OneCHTTPError (5xx), OneCBusyError.
        """
        source: Literal["manifest", "health", "rpc"] = "rpc"
        caps = None
        for path in DISCOVERY_PATHS:
            answer = await self._exchange("GET", path, f"GET {path}", retry=True, tolerate_4xx=True)
            if answer.is_success:
                source = path
                caps = _manifest_capabilities(answer.content) if path == "manifest" else None
                break
        self._ping_path = None if source == "rpc" else source
        server_info, protocol_version = await self._handshake()
        return Discovery(source, caps, server_info, protocol_version)

    async def ping(self) -> float:
        """One light round trip in a concurrency slot; returns its duration in seconds.

        Any JSON-RPC reply means alive. For health checks use `probe`, which never waits for a slot.
        """
        started = time.perf_counter()
        if self._ping_path is not None:
            await self._exchange("GET", self._ping_path, f"GET {self._ping_path}", retry=True)
        else:
            await self._rpc("ping", None)
        return time.perf_counter() - started

    async def probe(self, timeout: float) -> float:  # noqa: ASYNC109 - its own bound, not the caller's
        """One light round trip that never waits for a concurrency slot; returns seconds.

        The discovery GET when discovery found one, else JSON-RPC `ping` (any JSON-RPC reply means
        alive). It uses the pool's spare connection, so busy tool calls do not delay it, and the
        whole round trip is bounded by `timeout`.

        Raises:
            OneCTimeoutError: no answer within `timeout`.
            OneCError: any other failure, as for every call.
        """
        self._check_open()
        what = f"GET {self._ping_path}" if self._ping_path is not None else "ping"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                if self._ping_path is not None:
                    await self._exchange("GET", self._ping_path, what, retry=True, probe_timeout=timeout)
                else:
                    await self._rpc("ping", None, probe_timeout=timeout)
        except TimeoutError:
            self._observe("ping", "timeout", started)
            raise OneCTimeoutError(self._probe_timeout_message(what, timeout)) from None
        except OneCError as exc:
            self._observe("ping", _outcome_of(exc), started)
            raise
        self._observe("ping", "ok", started)
        return time.perf_counter() - started

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """One JSON-RPC call; returns its `result` object. `headers` are added to this one request.

        Raises:
            OneCRpcError: 1C answered with a JSON-RPC error (`.code`, `.detail`).
            InvalidRequestError: `params` hold a value JSON cannot carry (NaN, Infinity); nothing was sent.
            OneCBusyError, OneCProtocolError, OneCHTTPError, OneCConnectionError: see the class docstring.
        """
        started = time.perf_counter()
        try:
            reply = await self._rpc(method, params, headers=headers)
        except OneCError as exc:
            self._observe(method, _outcome_of(exc), started)
            raise
        if "error" in reply:
            self._observe(method, "rpc_error", started)
            error = self._rpc_error(reply["error"])
            # -32601 is how 1C says it lacks an optional method (templates, prompts): the caller decides
            # whether that is news, so it is no warning here.
            level = logging.DEBUG if error.method_not_found else logging.WARNING
            logger.log(level, "1C returned error %s for %s: %s", error.code, method, error.detail)
            raise error
        self._observe(method, "ok", started)
        result = reply["result"]
        if not isinstance(result, dict):
            raise OneCProtocolError(f"1C answered {method} with a non-object result: {self._show(result)}")
        return result

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """A JSON-RPC notification (no id). 1C answers 204, the MCP spec says 202; 200 is fine too."""
        body = _encode({"jsonrpc": "2.0", "method": method}, params)
        answer = await self._exchange("POST", self._rpc_path, method, content=body)
        if answer.status_code not in (200, 202, 204):
            raise OneCProtocolError(
                f"1C answered the notification {method} with HTTP {answer.status_code}, "
                f"expected 204, 202 or 200: {self._excerpt(answer.content)}"
            )

    async def list_tools(self) -> list[dict[str, Any]]:
        return await self._list("tools/list", "tools")

    async def list_resources(self) -> list[dict[str, Any]]:
        return await self._list("resources/list", "resources")

    async def list_prompts(self) -> list[dict[str, Any]]:
        return await self._list("prompts/list", "prompts")

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        """1C's `resources/templates/list`; the reference extension answers -32601 (`OneCRpcError`)."""
        return await self._list("resources/templates/list", "resourceTemplates")

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments}, headers=headers)

    async def read_resource(self, uri: str, *, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.request("resources/read", {"uri": uri}, headers=headers)

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None, *, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return await self.request("prompts/get", {"name": name, "arguments": arguments or {}}, headers=headers)

    # --- internals: JSON-RPC --------------------------------------------------------------

    def _observe(self, method: str, outcome: str, started: float) -> None:
        if self.observer is not None:
            self.observer(method, outcome, time.perf_counter() - started)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("OneCClient is closed")

    async def _list(self, method: str, key: str) -> list[dict[str, Any]]:
        result = await self.request(method, {})
        items = result.get(key)
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise OneCProtocolError(f"1C's {method} result has no '{key}' list of objects: {self._show(result)}")
        return items

    async def _handshake(self) -> tuple[dict[str, Any] | None, str | None]:
        """MCP's `initialize` + `notifications/initialized`, which full-MCP 1C backends expect.

        Returns 1C's serverInfo and protocolVersion (None, None without a handshake). Only a lost
        connection, a refused login or a redirect is raised: the rest of 1C serves without it.
        """
        params = {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "onec-mcp-proxy", "version": __version__},
        }
        try:
            reply = await self._rpc("initialize", params, retry=True)  # a fixed answer in 1C: safe to repeat
        except (OneCAuthError, OneCRedirectError):
            raise
        except (OneCProtocolError, OneCHTTPError) as exc:
            logger.info("1C did not accept the MCP handshake (initialize); going on without it: %s", exc)
            return None, None
        if "error" in reply:
            error = reply["error"]
            level = logging.DEBUG if error["code"] == METHOD_NOT_FOUND else logging.INFO
            logger.log(level, "1C has no MCP handshake: initialize answered %s", self._rpc_error(error))
            return None, None
        result = reply["result"] if isinstance(reply["result"], dict) else {}
        server_info = result.get("serverInfo") if isinstance(result.get("serverInfo"), dict) else None
        version = result.get("protocolVersion") if isinstance(result.get("protocolVersion"), str) else None
        logger.debug("1C MCP handshake: %s, protocol %s", self._show(server_info), version)
        try:
            await self.notify("notifications/initialized")
        except (OneCAuthError, OneCRedirectError):
            raise
        except (OneCProtocolError, OneCHTTPError) as exc:
            logger.info("1C did not accept notifications/initialized; going on: %s", exc)
        return server_info, version

    async def _rpc(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        retry: bool | None = None,
        probe_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send one request; return the checked reply envelope (with `result` or `error`)."""
        rpc_id = next(self._ids)
        body = _encode({"jsonrpc": "2.0", "id": rpc_id, "method": method}, params)
        retry = method in READ_ONLY_METHODS if retry is None else retry
        answer = await self._exchange(
            "POST",
            self._rpc_path,
            method,
            rpc_id,
            content=body,
            retry=retry,
            probe_timeout=probe_timeout,
            headers=headers,
        )
        try:
            reply = json.loads(answer.content.decode("utf-8-sig"))
        except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError
            raise OneCProtocolError(
                f"1C answered {method} at {self.rpc_url} with HTTP {answer.status_code} but not JSON: "
                f"{self._excerpt(answer.content)}. Check MCP_ONEC_URL and MCP_ONEC_RPC_PATH."
            ) from exc
        return self._check_envelope(reply, rpc_id, method)

    def _rpc_error(self, error: dict[str, Any]) -> OneCRpcError:
        detail = self._redact(error["message"])  # 1C's text may quote a request header or a password
        message = f"1C returned error {error['code']}: {strip_module_prefix(detail)}"
        return OneCRpcError(message, code=error["code"], detail=detail)

    def _check_envelope(self, reply: Any, rpc_id: int, method: str) -> dict[str, Any]:
        if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0":
            raise OneCProtocolError(f"1C's answer to {method} is not a JSON-RPC 2.0 reply: {self._show(reply)}")
        if ("result" in reply) == ("error" in reply):
            raise OneCProtocolError(f"1C's answer to {method} must hold either result or error: {self._show(reply)}")
        reply_id = reply.get("id")
        # JSON-RPC sends an error with id null when the server could not read the request's id.
        if not ("error" in reply and reply_id is None) and (reply_id != rpc_id or isinstance(reply_id, bool)):
            raise OneCProtocolError(
                f"1C answered {method} with id {self._redact(repr(reply_id))}, but the request had id {rpc_id}"
            )
        error = reply.get("error")
        if "error" in reply and not (
            isinstance(error, dict)
            and isinstance(error.get("code"), int)
            and not isinstance(error.get("code"), bool)
            and isinstance(error.get("message"), str)
        ):
            raise OneCProtocolError(f"1C's error answer to {method} lacks a code or message: {self._show(reply)}")
        return reply

    def _show(self, value: Any) -> str:
        """A short, secret-free rendering of a JSON value 1C sent."""
        return clip(self._redact(json.dumps(value, ensure_ascii=False)))

    def _excerpt(self, body: bytes) -> str:
        return clip(self._redact(_readable(body))) or "(empty body)"

    # --- internals: HTTP exchanges and slots ----------------------------------------------

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
        probe_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        """One HTTP exchange, every failure translated. In a concurrency slot unless it is a probe.

        The exchange runs in a task of its own, shielded from the caller: a caller that is cancelled
        leaves at once, while the exchange keeps its slot until 1C answers or the timeout ends it.
        """
        self._check_open()
        if probe_timeout is not None:
            return await self._attempts(verb, path, what, rpc_id, content, retry, tolerate_4xx, probe_timeout, headers)
        await self._take_slot()
        if self._closed:  # closed while this call waited: it must not start
            self._slots.release()
            if self._total is not None:
                self._total.release()
            self._check_open()
        self._in_flight += 1
        exchange = asyncio.create_task(
            self._attempts(verb, path, what, rpc_id, content, retry, tolerate_4xx, None, headers), name=f"1C {what}"
        )
        self._exchanges.add(exchange)
        exchange.add_done_callback(self._exchange_done)
        try:
            return await asyncio.shield(exchange)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if exchange.cancelled() and (current is None or not current.cancelling()):
                raise RuntimeError(f"OneCClient was closed while {what} was running") from None
            if not exchange.done():
                logger.info(
                    "The caller of 1C %s was cancelled; 1C goes on running it, and it keeps its concurrency slot "
                    "until 1C answers or MCP_ONEC_TIMEOUT (%g s) ends it",
                    what,
                    self._timeout,
                )
                exchange.add_done_callback(functools.partial(_log_orphan_outcome, what, time.perf_counter()))
            raise

    async def _take_slot(self) -> None:
        """This client's slot, then one of the shared total, both within MCP_ONEC_QUEUE_TIMEOUT."""
        self._queued += 1
        own = False
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.acquire()
                own = True
                if self._total is not None:
                    await self._total.acquire()
        except TimeoutError:
            if own:
                self._slots.release()
            raise self._busy(waiting_for_total=own) from None
        except BaseException:
            if own:
                self._slots.release()
            raise
        finally:
            self._queued -= 1

    def _busy(self, *, waiting_for_total: bool) -> OneCBusyError:
        waited = f"this one waited {self._queue_timeout:g} s (MCP_ONEC_QUEUE_TIMEOUT); try again later"
        if waiting_for_total and self._total is not None:
            return OneCBusyError(
                f"1C is busy: {self._total.limit} calls of all users are in flight "
                f"(MCP_ONEC_MAX_CONCURRENCY={self._total.limit}) and {waited}"
            )
        calls = "1 call" if self._in_flight == 1 else f"{self._in_flight} calls"
        setting = "MCP_ONEC_MAX_CONCURRENCY" if self._total is None else "MCP_ONEC_IDENTITY_CONCURRENCY"
        return OneCBusyError(f"1C is busy: {calls} in flight ({setting}={self._max_concurrency}) and {waited}")

    def _exchange_done(self, exchange: asyncio.Task[_Answer]) -> None:
        # A done callback, not a `finally` in the task: it runs even for a task cancelled before it started.
        self._exchanges.discard(exchange)
        self._in_flight -= 1
        self._slots.release()
        if self._total is not None:
            self._total.release()
        if not exchange.cancelled():
            exchange.exception()  # retrieved: a caller that left must not cause "exception was never retrieved"

    async def _attempts(
        self,
        verb: str,
        path: str,
        what: str,
        rpc_id: int | None,
        content: bytes | None,
        retry: bool,
        tolerate_4xx: bool,
        probe_timeout: float | None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        """The exchange with its retries: once after a dropped connection, once after an expired session."""
        url = f"{self.base_url}/{path}"
        dropped = expired = False
        while True:
            try:
                answer = await self._send(verb, path, what, rpc_id, content, probe_timeout, headers)
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                # A refused certificate fails the same way again: it is no dropped connection.
                if not retry or dropped or _tls_refusal(exc):
                    raise self._transport_error(exc, url, what, probe_timeout) from exc
                dropped = True
                logger.debug("1C %s: %s, retrying once", what, _reason(exc))  # a dropped keep-alive
                continue
            except httpx.RequestError as exc:
                raise self._transport_error(exc, url, what, probe_timeout) from exc
            if _session_gone(answer):
                # 1C ended the session behind the cookie (SessionMaxAge, a restart, an admin). Without the
                # cookie the next request starts a new session.
                self._http.cookies.clear()
                self._cookie_headers.clear()
                if retry and not expired:
                    expired = True
                    logger.warning("1C session expired; dropped the session cookie and retried %s", what)
                    continue
                raise self._session_error(what, again=expired)
            self._check_status(answer, url, what, tolerate_4xx=tolerate_4xx)
            return answer

    async def _send(
        self,
        verb: str,
        path: str,
        what: str,
        rpc_id: int | None,
        content: bytes | None,
        probe_timeout: float | None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        request = self._request(verb, path, content, probe_timeout, extra_headers)
        started = time.perf_counter()
        response = await self._http.send(request, stream=True)  # the body is read below, within the cap
        if "set-cookie" in response.headers:  # the client's jar took it: work the header out again
            self._cookie_headers.clear()
        try:
            body = await self._read_body(response, what)
        finally:
            await response.aclose()
        elapsed_ms = (time.perf_counter() - started) * 1000
        status = response.status_code
        logger.debug("1C %s id=%s: HTTP %d, %d bytes, %.0f ms", what, rpc_id, status, len(body), elapsed_ms)
        return _Answer(status, response.headers, body)

    def _request(
        self,
        verb: str,
        path: str,
        content: bytes | None,
        probe_timeout: float | None,
        extra_headers: Mapping[str, str] | None,
    ) -> httpx.Request:
        """The request `build_request` would make, from what was worked out once per path."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._http.build_request(verb, path).url
        if probe_timeout is None:
            timeout = self._call_timeout
        else:
            connect = self._http.timeout.connect
            timeout = httpx.Timeout(probe_timeout, connect=min(connect or probe_timeout, probe_timeout)).as_dict()
        cookie = self._cookie_for(path, url) if self._http.cookies else ""  # once 1C has set one
        headers = self._post_headers if content is not None else self._http.headers
        if extra_headers or cookie:  # httpx.Request copies the headers it is given: these are not changed
            headers = headers.copy()
            headers.update(extra_headers or {})
            if cookie:
                headers["Cookie"] = cookie
        return httpx.Request(verb, url, headers=headers, content=content, extensions={"timeout": timeout})

    def _cookie_for(self, path: str, url: httpx.URL) -> str:
        """The Cookie header the jar gives `url`, worked out once per path until the jar changes."""
        cookie = self._cookie_headers.get(path)
        if cookie is None:
            probe = httpx.Request("GET", url)
            self._http.cookies.set_cookie_header(probe)
            cookie = self._cookie_headers[path] = probe.headers.get("Cookie", "")
        return cookie

    async def _read_body(self, response: httpx.Response, what: str) -> bytes:
        """A 2xx body up to `max_response_bytes`, else OneCResponseTooLarge; of any other, the first KB."""
        if not response.is_success:
            return await _read_at_most(response, ERROR_BODY_LIMIT)
        limit = self._max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(what)  # refused before a byte of the body is read
        if declared.isdigit() and "Content-Encoding" not in response.headers:
            # The usual 1C answer: its length is known and within the cap, and the framing stops the
            # read there, so one read does (the chunk loop below costs more per call).
            return await response.aread()
        chunks: list[bytes] = []
        size = 0
        async with contextlib.aclosing(response.aiter_bytes()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise self._too_large(what)
                chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, what: str) -> OneCResponseTooLarge:
        return OneCResponseTooLarge(
            f"1C's answer to {what} is larger than {self._max_response_bytes / MIB:g} MB "
            "(MCP_ONEC_MAX_RESPONSE_MB); ask for less data or raise the setting"
        )

    def _session_error(self, what: str, *, again: bool) -> OneCConnectionError:
        if again:
            return OneCConnectionError(
                f"1C answered {what} that its session is missing or deleted, even after the session cookie was "
                "dropped and the call retried. Check the session settings of the 1C publication on the web "
                "server (ReuseSessions, SessionMaxAge)."
            )
        subject = "the tool" if what == "tools/call" else what
        return OneCConnectionError(
            f"The 1C session had expired, so {subject} was not run; the session cookie has been dropped: try again."
        )

    def _probe_timeout_message(self, what: str, timeout: float) -> str:
        return (
            f"1C did not answer the health probe ({what}) within {timeout:g} s; "
            "it may be overloaded or waiting on a lock."
        )

    def _transport_error(self, exc: httpx.RequestError, url: str, what: str, probe_timeout: float | None) -> OneCError:
        reason = self._redact(_reason(exc))
        tls = _tls_problem(exc, url)
        if tls is not None:  # the server answered: "is it running?" would send the user the wrong way
            return OneCTLSError(self._redact(tls))
        unreachable = "Is the web server running and the base published? Check MCP_ONEC_URL."
        if isinstance(exc, httpx.ConnectTimeout):
            connect = self._http.timeout.connect or 0
            if probe_timeout is not None:
                connect = min(connect or probe_timeout, probe_timeout)
            return OneCConnectionError(
                f"Cannot connect to 1C at {url}: no connection within {connect:g} s "
                f"(MCP_ONEC_CONNECT_TIMEOUT). {unreachable}"
            )
        if isinstance(exc, httpx.TimeoutException):  # read, write, pool
            if probe_timeout is not None:
                return OneCTimeoutError(self._probe_timeout_message(what, probe_timeout))
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

    def _check_status(self, answer: _Answer, url: str, what: str, *, tolerate_4xx: bool) -> None:
        status, user = answer.status_code, self._username
        if answer.is_success or (tolerate_4xx and 400 <= status < 500 and status not in (401, 403)):
            return
        if status in (401, 403):
            self.login_refused = True
        if 300 <= status < 400:
            location = self._redact(answer.headers.get("Location", "?"))
            raise OneCRedirectError(
                f"1C answered HTTP {status} (redirect to {location}) for {url}. "
                "The publication name in MCP_ONEC_URL is case-sensitive: check the case of the base name.",
                status_code=status,
            )
        if status == 401:
            who = f"for user '{user}'" if user else "(no user set)"
            raise OneCAuthError(
                f"1C rejected the login {who} (HTTP 401). Check {self._login_source}.", status_code=status
            )
        if status == 403:
            reason = self._excerpt(answer.content)
            raise OneCAuthError(
                f"1C user '{user}' has no right to use the HTTP service (HTTP 403) at {url}: "
                f"{reason}. Grant the user rights in the 1C configurator.",
                status_code=status,
                reason=reason,
            )
        hint = (
            "Check MCP_ONEC_SERVICE_ROOT and MCP_ONEC_RPC_PATH and that the HTTP service is published."
            if status == 404
            else "See the web server and 1C server logs."
        )
        raise OneCHTTPError(
            f"1C answered {what} at {url} with HTTP {status}: {self._excerpt(answer.content)}. {hint}",
            status_code=status,
        )


# OpenSSL's verify codes (X509_V_ERR_*) that say the certificate is fine but for another name, or out of date.
_NAME_MISMATCH = frozenset({62, 63, 64})  # HOSTNAME_MISMATCH, EMAIL_MISMATCH, IP_ADDRESS_MISMATCH
_OUT_OF_DATE = frozenset({9, 10})  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
# What OpenSSL says when the other end answers a TLS hello in plain HTTP (3.0, and 3.2 onwards).
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST")


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error under an httpx error (httpx wraps httpcore's, which wraps the ssl module's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _tls_refusal(exc: BaseException) -> bool:
    """A certificate refused, or no TLS on the other end: what a retry would meet again."""
    if not isinstance(exc, httpx.ConnectError):
        return False
    error = _ssl_error_in(exc)
    if error is None:
        return "CERTIFICATE_VERIFY_FAILED" in str(exc)
    return isinstance(error, ssl.SSLCertVerificationError) or _speaks_no_tls(error)


def _speaks_no_tls(error: ssl.SSLError) -> bool:
    return any(marker in _ssl_text(error).upper() for marker in _NOT_TLS)


def _tls_problem(exc: BaseException, url: str) -> str | None:
    """One line on a refused certificate or a failed TLS handshake, with what to set; None if it is no TLS failure.

    Only a failed connect counts: the handshake is part of it. An ssl error on a connection that was
    up (a dropped keep-alive) is a dropped connection like any other.
    """
    if not isinstance(exc, httpx.ConnectError):
        return None
    origin = _origin(url)
    error = _ssl_error_in(exc)
    if isinstance(error, ssl.SSLCertVerificationError):
        return _certificate_problem(origin, error.verify_code, error.verify_message or _ssl_text(error))
    if error is None:
        if "CERTIFICATE_VERIFY_FAILED" not in str(exc):  # only the text is left when the cause was dropped
            return None
        return _certificate_problem(origin, None, _ssl_text(exc))
    text = _ssl_text(error)
    if _speaks_no_tls(error):
        return (
            f"1C's web server at {origin} does not speak HTTPS on this port ({text}): use http:// "
            "in MCP_ONEC_URL, or the port that serves HTTPS."
        )
    return (
        f"The TLS handshake with 1C's web server at {origin} failed: {text}. Check the web server's "
        "HTTPS settings (certificate, TLS versions, ciphers)."
    )


def _ssl_text(error: BaseException) -> str:
    """The ssl module's text without the C source location it ends with."""
    return _SSL_SOURCE.sub("", _reason(error))


def _certificate_problem(origin: str, code: int | None, detail: str) -> str:
    detail = detail.strip().rstrip(".")
    if code in _NAME_MISMATCH or "mismatch" in detail.lower():
        return (
            f"1C's HTTPS certificate at {origin} is for another name ({detail}): put the name the certificate "
            "was issued for in MCP_ONEC_URL, or have the certificate reissued for this one."
        )
    if code in _OUT_OF_DATE:
        return (
            f"1C's HTTPS certificate at {origin} is out of date ({detail}): renew it on the web server, "
            "and check this computer's clock."
        )
    return (
        f"1C's HTTPS certificate at {origin} is not trusted ({detail}): set MCP_ONEC_CA_BUNDLE to the PEM file "
        "of the CA that signed it, or, on a trusted network only, MCP_ONEC_VERIFY_TLS=false."
    )


def _origin(url: str) -> str:
    """scheme://host:port of a URL: a certificate belongs to the server, not to a path."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"


def _outcome_of(exc: OneCError) -> str:
    """A 1C failure in a metric's words: did 1C answer, and how."""
    if isinstance(exc, OneCBusyError):
        return "busy"  # never sent: no slot
    if isinstance(exc, OneCTimeoutError):
        return "timeout"
    if isinstance(exc, OneCConnectionError):
        return "unreachable"
    if isinstance(exc, OneCRpcError):
        return "rpc_error"
    return "http_error"  # an HTTP error status, an error page or an answer that is not JSON-RPC


def _log_orphan_outcome(what: str, left_at: float, exchange: asyncio.Task[_Answer]) -> None:
    """Say how an exchange whose caller was cancelled ended: 1C did (or did not) run it."""
    after = time.perf_counter() - left_at
    if exchange.cancelled():
        logger.info("1C %s was cancelled at shutdown, %.1f s after its caller left", what, after)
    elif (exc := exchange.exception()) is not None:
        logger.info("1C %s failed %.1f s after its caller left: %s", what, after, exc)
    else:
        logger.info("1C answered %s %.1f s after its caller left; the answer was dropped", what, after)


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async with contextlib.aclosing(response.aiter_bytes()) as stream:
        async for chunk in stream:
            chunks.append(chunk[: limit - size])
            size += len(chunks[-1])
            if size >= limit:
                break
    return b"".join(chunks)


def _session_gone(answer: _Answer) -> bool:
    """1C's "the session is gone" text in place of a JSON reply (a JSON reply may quote it legitimately)."""
    if answer.is_success and answer.content.removeprefix(_BOM).lstrip().startswith((b"{", b"[")):
        return False
    text = answer.content[:ERROR_BODY_LIMIT].decode("utf-8", errors="replace").casefold()
    return any(marker in text for marker in SESSION_GONE_MARKERS)


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
    """The request body. Raises InvalidRequestError (before any HTTP) for values JSON cannot carry."""
    if params is not None:
        message["params"] = params
    try:
        return json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError) as exc:  # NaN/Infinity (Python's JSON reader accepts them), a circular value
        why = "NaN and Infinity are not JSON numbers" if "Out of range float" in str(exc) else str(exc)
        raise InvalidRequestError(f"the arguments of {message['method']} are not valid JSON: {why}") from None


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _squash(text: str) -> str:
    return " ".join(html.unescape(text).split())


def _readable(body: bytes) -> str:
    """The readable text of an error body (an HTML page's title and visible text), from its first KB only."""
    text = body[:ERROR_BODY_LIMIT].decode("utf-8-sig", errors="replace")
    match = _TITLE.search(text)
    title = _squash(match.group(1)) if match else ""
    visible = _squash(_TAG.sub(" ", _INVISIBLE.sub(" ", text))).rstrip(". ")
    if title and title not in visible:
        visible = f"{title}: {visible}" if visible else title
    return visible
