"""An emulator of the 1C HTTP service (`/shared/contracts/onec-http-service.md`), quirks included.

It serves the demo base (`onec_data`) as the publication `demo`, so the proxy's real client path
runs against it: `MCP_ONEC_URL={url}/demo`, service root `mcp`, rpc path `rpc`. The knobs on
`EmulatorState` reproduce what 1C does in the field (slow calls, HTML error pages from IIS/Apache,
a byte order mark, the `prompts/list` bug, tools appearing at run time, sessions that expire).
`resource_templates` makes it a newer backend that lists resource templates (the demo's are
`DEMO_RESOURCE_TEMPLATES`); by default it answers -32601, as the reference extension does.

1C users (HTTP Basic, UTF-8): the service account `username`/`password` (default `demo`/`demo`,
full rights; an empty `username` publishes the base without authentication), plus the table
`users` (`onec_data.demo_users`): `accountant`/`accountant` and `Иванов`/`пароль` (role Бухгалтер,
every right), `storekeeper`/`storekeeper` (role Кладовщик: no `post_document`, `list_staff` or
counterparty card resource; calling them anyway is 1C's -32603 "Недостаточно прав для ..."), and
`norights`/`norights` (no right to the HTTP service: 403). A wrong login is 401. Each request runs
as its user: lists are filtered by rights, a tool with `takes_context` sees a `CallContext` (the
user and the percent-decoded `X-MCP-User` header), `ibsession` sessions belong to their user, and
`user_calls[(user, key)]` counts what reached 1C as whom (`calls[key]` counts for everyone).

    with OneCEmulator() as onec:
        httpx.post(onec.url + "/hs/mcp/rpc", json={...}, auth=(onec.username, onec.password))
        onec.state.fault = "html_503"
        onec.state.expire_sessions()   # the next request with an old `ibsession` cookie gets 1C's error
        onec.state.user_calls["storekeeper", "tools/call"]   # calls that reached 1C as storekeeper
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import html
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .loopback import LoopbackServer
from .onec_data import (
    FULL_RIGHTS,
    CallContext,
    ContextToolHandler,
    DemoPrompt,
    DemoResource,
    DemoTool,
    DemoUser,
    ToolError,
    ToolHandler,
    demo_prompts,
    demo_resources,
    demo_tools,
    demo_users,
)

PUBLICATION = "demo"
SERVICE_ROOT = "mcp"
RPC_PATH = "rpc"
SERVICE_FULL_NAME = "Служебная учётная запись MCP"
# Who a request runs as when the base is published without authentication: ИмяПользователя() is "".
ANONYMOUS = DemoUser("", "", "", frozenset({FULL_RIGHTS}))
ACTING_FOR_HEADER = "X-MCP-User"  # the proxy's name of the person behind a service-account call
BOM = b"\xef\xbb\xbf"
JSON_TYPE = "application/json; charset=utf-8"
MANIFEST = {
    "capabilities": {
        "tools": {"listChanged": True},
        "resources": {"subscribe": True, "listChanged": True},
        "prompts": {"listChanged": True},
    }
}
INITIALIZE_RESULT = {
    "protocolVersion": "2025-03-26",
    "capabilities": {
        "tools": {"listChanged": False},
        "resources": {"subscribe": False, "listChanged": False},
        "prompts": {"listChanged": False},
    },
    "serverInfo": {"name": "1C MCP Server", "version": "1.0.0"},
}
# Resource templates as a newer 1C backend lists them (`EmulatorState.resource_templates`); the
# reference extension has no resources/templates/list. Each makes URIs of resources the base has.
DEMO_RESOURCE_TEMPLATES: tuple[dict[str, Any], ...] = (
    {
        "uriTemplate": "metadata://Справочники/{name}",
        "name": "Справочник",
        "description": "Описание справочника по имени, например metadata://Справочники/Номенклатура",
        "mimeType": "application/json",
    },
    {
        "uriTemplate": "metadata://Документы/{name}",
        "name": "Документ",
        "description": "Структура документа по имени, например metadata://Документы/РеализацияТоваровУслуг",
        "mimeType": "text/plain",
    },
)
NOT_JSON_BODY = "Сеанс отсутствует или удален"  # 1C's text when the session behind the cookie is gone
SESSION_COOKIE = "ibsession"
MAX_SESSIONS = 10_000  # clients that drop cookies start a session per request; forget the oldest

Discovery = Literal["manifest", "health", "none"]
Fault = Literal["html_500", "html_502", "html_503", "not_json"]


@dataclass
class EmulatorState:
    """Knobs and counters. Tests change knobs from their own thread; plain attribute writes suffice.

    `calls` counts JSON-RPC methods, `GET manifest`/`GET health` and the events `session opened`,
    `session expired`, `HTTP 401` and `HTTP 403`; `user_calls` counts the same per 1C user (all but
    `HTTP 401`, whose user is unknown), and `calls_as(user)` gives one user's counts.
    """

    username: str = "demo"  # the service account, full rights; "" publishes the base without authentication
    password: str = "demo"
    users: dict[str, DemoUser] = field(default_factory=demo_users)  # the other 1C users, by login
    discovery: Discovery = "manifest"
    latency: float = 0.0
    fault: Fault | None = None
    bom: bool = False
    prompts_list_bug: bool = False
    tools: dict[str, DemoTool] = field(default_factory=demo_tools)
    resources: dict[str, DemoResource] = field(default_factory=demo_resources)
    prompts: dict[str, DemoPrompt] = field(default_factory=demo_prompts)
    # None: resources/templates/list is -32601, as in the reference extension; else what it lists.
    resource_templates: list[dict[str, Any]] | None = None
    calls: Counter[str] = field(default_factory=Counter)  # method or event -> requests, all users
    user_calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (1C user, method or event)
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    # Session id -> (its 1C user, True while 1C still has it; False once expired and not yet answered).
    _sessions: dict[str, tuple[str, bool]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _expired_status: int = field(default=400, init=False, repr=False, compare=False)

    @property
    def service_user(self) -> DemoUser:
        """The service account: whatever `username`/`password` hold now, with full rights."""
        return DemoUser(self.username, self.password, SERVICE_FULL_NAME, frozenset({FULL_RIGHTS}))

    def user(self, name: str | None, password: str | None) -> DemoUser | None:
        """The 1C user with this login and password; None for a wrong login (HTTP 401)."""
        found = self.service_user if name == self.username else self.users.get(name or "")
        return found if found is not None and found.password == password else None

    def add_tool(
        self,
        definition: dict[str, Any],
        handler: ToolHandler | ContextToolHandler,
        *,
        right: str | None = None,
        takes_context: bool = False,
    ) -> None:
        """Register a tool; `handler(arguments)`, or `handler(arguments, context)` with `takes_context`."""
        tool = DemoTool(definition, handler, right=right, takes_context=takes_context)
        # Copy on write: the server thread always iterates a complete dict, never one being changed.
        with self._lock:
            self.tools = {**self.tools, tool.name: tool}

    def remove_tool(self, name: str) -> None:
        with self._lock:
            if name not in self.tools:
                raise KeyError(name)
            self.tools = {key: tool for key, tool in self.tools.items() if key != name}

    def count(self, key: str, user: str | None = None) -> None:
        """Count a request or event, for everyone and, when the 1C user is known, for that user."""
        with self._lock:
            self.calls[key] += 1
            if user is not None:
                self.user_calls[user, key] += 1

    def calls_as(self, user: str) -> Counter[str]:
        """What reached 1C as `user`: method or event -> count (`.total()` for every request)."""
        with self._lock:
            return Counter({key: n for (name, key), n in self.user_calls.items() if name == user})

    def rpc_started(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def rpc_finished(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.user_calls.clear()
            self.max_in_flight = self.in_flight  # requests still running stay counted

    def expire_sessions(self, status: int = 400) -> None:
        """End every 1C session, as SessionMaxAge, a restart or an admin does.

        A request that carries an old `ibsession` cookie gets 1C's "Сеанс отсутствует или удален"
        as text with HTTP `status` (400 by default; 200 and 500 occur too), once per session; after
        that the cookie is unknown and the request starts a new session.
        """
        with self._lock:
            self._sessions = {session: (user, False) for session, (user, _) in self._sessions.items()}
            self._expired_status = status

    def session_check(self, session: str | None, user: str) -> int | None:
        """The status of 1C's "session is gone" answer for `user`'s cookie, consumed; None to serve it."""
        with self._lock:
            if session is None or self._sessions.get(session) != (user, False):  # alive, unknown, another's
                return None
            del self._sessions[session]
            return self._expired_status

    def open_session(self, session: str | None, user: str) -> str | None:
        """A new session id when the request has no live session of its user (the reply sets it as a cookie).

        A session belongs to the user who opened it: another user's cookie starts a session of one's own.
        """
        with self._lock:
            if session is not None and self._sessions.get(session) == (user, True):
                return None
            if len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            created = uuid.uuid4().hex
            self._sessions[created] = (user, True)
            self.calls["session opened"] += 1
            self.user_calls[user, "session opened"] += 1
            return created


# --- HTML pages of the web server -----------------------------------------------------------

_APACHE_PAGE = """<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">
<html><head>
<title>{status} {reason}</title>
</head><body>
<h1>{reason}</h1>
<p>{text}</p>
<hr>
<address>Apache/2.4.58 (Win64) Server at 127.0.0.1 Port 80</address>
</body></html>
"""
_IIS_PAGE = """<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>
<title>{status} - {reason}</title>
</head>
<body>
<div id="header"><h1>Server Error</h1></div>
<div id="content"><fieldset><h2>{status} - {reason}</h2><h3>{text}</h3></fieldset></div>
</body>
</html>
"""
# status -> (page template, reason, text)
_PAGES: dict[int, tuple[str, str, str]] = {
    401: (_APACHE_PAGE, "Unauthorized", "This server could not verify that you are authorized to access it."),
    403: (_APACHE_PAGE, "Forbidden", "You don't have permission to access this resource."),
    404: (_APACHE_PAGE, "Not Found", "The requested URL was not found on this server."),
    405: (_APACHE_PAGE, "Method Not Allowed", "The requested method is not allowed for this URL."),
    500: (_IIS_PAGE, "Internal server error.", "There is a problem with the resource you are looking for."),
    502: (_APACHE_PAGE, "Bad Gateway", "The proxy server received an invalid response from an upstream server."),
    503: (_APACHE_PAGE, "Service Unavailable", "The server is temporarily unable to service your request."),
}  # fmt: skip
_FAULT_STATUS = {"html_500": 500, "html_502": 502, "html_503": 503}


def html_error(status: int, headers: dict[str, str] | None = None, text: str | None = None) -> HTMLResponse:
    """The web server's page for `status`; `text` replaces its stock sentence (1C's own reason)."""
    template, reason, stock = _PAGES[status]
    body = template.format(status=status, reason=reason, text=html.escape(text) if text else stock)
    return HTMLResponse(body, status, headers)


def json_response(state: EmulatorState, payload: dict[str, Any]) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(BOM + body if state.bom else body, 200, media_type=JSON_TYPE)


# --- JSON-RPC -------------------------------------------------------------------------------


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def internal_error(line: int, text: str, module: str = "ОбщийМодуль.mcp_APIBackend.Модуль") -> RpcError:
    # 1C's error text starts with the module and line in braces; the extension prefixes its own words.
    return RpcError(-32603, f"Внутренняя ошибка сервера: {{{module}({line})}}: {text}")


def envelope(request_id: Any, result: Any = None, error: RpcError | None = None) -> dict[str, Any]:
    if error is None:
        return {"jsonrpc": "2.0", "id": request_id, "result": result}
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": error.code, "message": error.message}}  # no data


def no_right(line: int, action: str) -> RpcError:
    return internal_error(line, f"Недостаточно прав для {action}")


def list_tools(state: EmulatorState, params: dict[str, Any], context: CallContext) -> dict[str, Any]:
    return {"tools": [tool.definition for tool in state.tools.values() if context.user.may(tool.right)]}


def call_tool(state: EmulatorState, params: dict[str, Any], context: CallContext) -> dict[str, Any]:
    name = str(params.get("name") or "")
    tool = state.tools.get(name)
    if tool is None:
        raise internal_error(263, f"Инструмент '{name}' не найден")
    if not context.user.may(tool.right):
        raise no_right(266, f"выполнения инструмента '{name}'")
    arguments = params.get("arguments") if isinstance(params.get("arguments"), dict) else {}
    try:
        # Loose validation like 1C's ЗначениеЗаполнено: an empty string counts as missing.
        for required in tool.definition.get("inputSchema", {}).get("required", []):
            if arguments.get(required) in (None, ""):
                raise ToolError(f"Не заполнен обязательный параметр '{required}'")
        return {"isError": False, **tool.run(arguments, context)}
    except Exception as exc:  # 1C catches every exception of a tool into an isError result
        detail = str(exc) if isinstance(exc, ToolError) else f"{type(exc).__name__}: {exc}"
        return {
            "content": [{"type": "text", "text": f"Ошибка выполнения инструмента '{name}': {detail}"}],
            "isError": True,
        }


def list_resources(state: EmulatorState, params: dict[str, Any], context: CallContext) -> dict[str, Any]:
    return {"resources": [r.listing() for r in state.resources.values() if context.user.may(r.right)]}


def list_resource_templates(state: EmulatorState, params: dict[str, Any], context: CallContext) -> dict[str, Any]:
    if state.resource_templates is None:
        raise RpcError(-32601, "Неизвестный метод: resources/templates/list")
    return {"resourceTemplates": list(state.resource_templates)}


def read_resource(state: EmulatorState, params: dict[str, Any], context: CallContext) -> dict[str, Any]:
    uri = str(params.get("uri") or "")
    resource = state.resources.get(uri)  # exact string match, as 1C does
    if resource is None:
        raise internal_error(312, f"Ресурс '{uri}' не найден")
    if not context.user.may(resource.right):
        raise no_right(315, f"чтения ресурса '{uri}'")
    return {"contents": [resource.contents()]}


def list_prompts(state: EmulatorState, params: dict[str, Any], context: CallContext) -> dict[str, Any]:
    prompts = list(state.prompts.values())
    if state.prompts_list_bug and any(prompt.arguments for prompt in prompts):
        # The reference extension fails to serialise the arguments collection.
        raise internal_error(
            341, "Ошибка при вызове метода контекста (ЗаписатьJSON): Передано значение недопустимого типа"
        )
    return {"prompts": [prompt.listing() for prompt in prompts]}


def get_prompt(state: EmulatorState, params: dict[str, Any], context: CallContext) -> dict[str, Any]:
    name = str(params.get("name") or "")
    prompt = state.prompts.get(name)
    if prompt is None:
        raise internal_error(377, f"Промпт '{name}' не найден")
    arguments = params.get("arguments") if isinstance(params.get("arguments"), dict) else {}
    try:
        return prompt.render(arguments)
    except ValueError as exc:
        raise internal_error(384, str(exc)) from None


METHODS: dict[str, Callable[[EmulatorState, dict[str, Any], CallContext], dict[str, Any]]] = {
    "initialize": lambda state, params, context: INITIALIZE_RESULT,
    "tools/list": list_tools,
    "tools/call": call_tool,
    "resources/list": list_resources,
    "resources/read": read_resource,
    "resources/templates/list": list_resource_templates,
    "prompts/list": list_prompts,
    "prompts/get": get_prompt,
}


def parse_request(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise internal_error(
            27, "Ошибка при вызове метода контекста (ПрочитатьJSON): Ошибка разбора JSON", "HTTPСервис.mcp.Модуль"
        ) from None
    if not isinstance(request, dict):  # no batching: 1C reads the body into a Соответствие
        raise internal_error(31, "Неверный формат запроса JSON-RPC", "HTTPСервис.mcp.Модуль")
    return request


def answer(state: EmulatorState, request: dict[str, Any], context: CallContext) -> dict[str, Any] | None:
    """The JSON-RPC reply, or None for a notification (HTTP 204)."""
    request_id = request.get("id")
    if request.get("jsonrpc") != "2.0":
        return envelope(request_id, error=RpcError(-32600, "Неподдерживаемая версия JSON-RPC"))
    if request_id is None:  # 1C reads null as Неопределено: "id": null is a notification too
        return None
    method = request.get("method")
    handler = METHODS.get(method) if isinstance(method, str) else None
    if handler is None:
        unknown = RpcError(-32601, f"Неизвестный метод: {method if isinstance(method, str) else ''}")
        return envelope(request_id, error=unknown)
    params = request.get("params") if isinstance(request.get("params"), dict) else {}
    try:
        return envelope(request_id, handler(state, params, context))
    except RpcError as exc:
        return envelope(request_id, error=exc)


async def handle_rpc(state: EmulatorState, request: Request, context: CallContext) -> Response:
    state.rpc_started()
    try:
        body = await request.body()
        try:
            parsed: dict[str, Any] | RpcError = parse_request(body)
        except RpcError as exc:
            parsed = exc
        if isinstance(parsed, dict) and isinstance(parsed.get("method"), str):
            state.count(parsed["method"], context.user.name)  # counted even under a fault: retries stay visible
        if state.latency > 0:
            await asyncio.sleep(state.latency)
        fault = state.fault
        if fault == "not_json":  # 1C wrote its error text where the JSON should be
            return Response(NOT_JSON_BODY.encode("utf-8"), 200, media_type=JSON_TYPE)
        if fault is not None:
            return html_error(_FAULT_STATUS[fault])
        reply = envelope(None, error=parsed) if isinstance(parsed, RpcError) else answer(state, parsed, context)
        return Response(status_code=204) if reply is None else json_response(state, reply)
    finally:
        state.rpc_finished()


# --- HTTP layer -----------------------------------------------------------------------------


def authenticate(state: EmulatorState, request: Request) -> DemoUser | Response:
    """The 1C user the request runs as; else the web server's 401/403 page."""
    if not state.username:
        return ANONYMOUS
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    name = password = None
    if scheme.lower() == "basic":  # 1C reads the login as UTF-8
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            name, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    user = state.user(name, password)
    if user is None:
        state.count("HTTP 401")
        return html_error(401, {"WWW-Authenticate": 'Basic realm="1C"'})
    if not user.http_service:
        state.count("HTTP 403", user.name)
        return html_error(403, text=f"Недостаточно прав для использования HTTP-сервиса {SERVICE_ROOT}")
    return user


def call_context(request: Request, user: DemoUser) -> CallContext:
    # HTTP headers are ASCII: the proxy percent-encodes the UTF-8 name it puts in X-MCP-User.
    acting_for = request.headers.get(ACTING_FOR_HEADER)
    return CallContext(user, unquote(acting_for, errors="replace") if acting_for else None)


def discovery(state: EmulatorState, request: Request, endpoint: str, user: DemoUser) -> Response:
    if request.method not in ("GET", "HEAD"):
        return html_error(405)
    state.count(f"GET {endpoint}", user.name)
    if endpoint == "manifest" and state.discovery == "manifest":
        return json_response(state, MANIFEST)
    if endpoint == "health" and state.discovery == "health":
        return json_response(state, {"status": "ok"})
    return html_error(404)


def create_onec_emulator(state: EmulatorState | None = None) -> Starlette:
    state = state if state is not None else EmulatorState()

    async def dispatch(request: Request) -> Response:
        publication, _, rest = request.url.path.lstrip("/").partition("/")
        if publication.lower() != PUBLICATION:
            return html_error(404)
        if publication != PUBLICATION:  # the 1C web server fixes the case with a redirect
            return RedirectResponse(str(request.url.replace(path=f"/{PUBLICATION}/{rest}")), 301)
        user = authenticate(state, request)
        if isinstance(user, Response):
            return user
        # Session reuse (ReuseSessions=AutoUse): 1C keeps a session per `ibsession` cookie and user.
        session = request.cookies.get(SESSION_COOKIE)
        expired_status = state.session_check(session, user.name)
        if expired_status is not None:
            state.count("session expired", user.name)
            return Response(NOT_JSON_BODY.encode("utf-8"), expired_status, media_type="text/plain; charset=utf-8")
        response = await serve(request, rest, call_context(request, user))
        created = state.open_session(session, user.name)
        if created is not None:
            response.set_cookie(SESSION_COOKIE, created, path=f"/{PUBLICATION}", httponly=True)
        return response

    async def serve(request: Request, rest: str, context: CallContext) -> Response:
        service, _, endpoint = rest.partition(f"hs/{SERVICE_ROOT}/")
        if service or not endpoint:
            return html_error(404)
        if endpoint == RPC_PATH:
            return await handle_rpc(state, request, context) if request.method == "POST" else html_error(405)
        if endpoint in ("manifest", "health"):
            return discovery(state, request, endpoint, context.user)
        return html_error(404)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=methods)])
    app.state.emulator = state
    return app


class OneCEmulator:
    """The demo 1C base on a loopback port; `stop()` then `start()` keeps the port."""

    def __init__(self, state: EmulatorState | None = None, port: int = 0) -> None:
        self.state = state if state is not None else EmulatorState()
        self._server = LoopbackServer(create_onec_emulator(self.state), port=port)

    @property
    def url(self) -> str:
        """The publication URL: what MCP_ONEC_URL should be."""
        return f"{self._server.url}/{PUBLICATION}"

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/hs/{SERVICE_ROOT}/{RPC_PATH}"

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def username(self) -> str:
        return self.state.username

    @property
    def password(self) -> str:
        return self.state.password

    @property
    def running(self) -> bool:
        return self._server.running

    def start(self) -> OneCEmulator:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> OneCEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
