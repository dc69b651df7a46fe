"""Who is asking, as policy and the audit log see it."""

from __future__ import annotations

from types import SimpleNamespace

from starlette.requests import Request

from py_server.callers import ANONYMOUS, caller_of


def _request(path: str, *, headers: dict[str, str] | None = None, query: str = "") -> Request:
    raw = [(key.lower().encode(), value.encode()) for key, value in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": path, "query_string": query.encode(), "headers": raw})


def test_without_an_http_request_the_caller_is_the_local_stdio_user() -> None:
    caller = caller_of(SimpleNamespace(request=None))
    assert caller.transport == "stdio" and caller.name and caller.session_id is None


def test_streamable_http_takes_its_session_from_the_header() -> None:
    caller = caller_of(SimpleNamespace(request=_request("/mcp", headers={"Mcp-Session-Id": "abc"})))
    assert (caller.name, caller.transport, caller.session_id) == (ANONYMOUS, "streamable_http", "abc")


def test_an_sse_post_cannot_pass_for_another_session_with_a_header() -> None:
    request = _request("/messages/", headers={"Mcp-Session-Id": "someone-else"}, query="session_id=mine")
    caller = caller_of(SimpleNamespace(request=request))
    assert (caller.transport, caller.session_id) == ("sse", "mine")
