"""The command line: one-line errors, refusing unsafe exposure, `check`, stdio hygiene, no secret in logs.

Settings precedence and names are in test_settings.py."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import StdioServerParameters, stdio_client

from py_server.demo.onec_emulator import OneCEmulator
from py_server.errors import ProxyError
from py_server.main import main
from py_server.redaction import basic_auth_token

from .conftest import proxy_settings, settings_env


def test_missing_1c_url_stops_with_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MCP_ONEC_URL" in err and "Traceback" not in err


def test_bad_setting_value_stops_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_ONEC_MAX_CONCURRENCY", "many")
    assert main(["stdio"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MCP_ONEC_MAX_CONCURRENCY" in err


def test_a_missing_env_file_stops_with_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--env-file", "prod.env"]) == 2
    err = capsys.readouterr().err
    assert err == "onec-mcp-proxy: --env-file prod.env does not exist\n"


def test_a_utf16_env_file_stops_with_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    Path(".env").write_text("MCP_ONEC_URL=http://server/base\n", encoding="utf-16")
    assert main(["stdio"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onec-mcp-proxy: .env is UTF-16, not UTF-8: save it as UTF-8") and err.count("\n") == 1


def _fail_with(exc: BaseException) -> Callable[..., Any]:
    def run_check(*args: object, **kwargs: object) -> Any:
        raise exc

    return run_check


def test_an_unexpected_error_is_one_masked_line_and_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_ONEC_PASSWORD", "Пароль-в-ошибке")
    monkeypatch.setattr("py_server.check.run_check", _fail_with(RuntimeError("bad state\nafter Пароль-в-ошибке")))
    assert main(["check"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "onec-mcp-proxy: unexpected error: RuntimeError: bad state after ***; run with --log-level DEBUG for details\n"
    )


def test_an_unexpected_error_logs_its_traceback_at_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("py_server.check.run_check", _fail_with(RuntimeError("bad state")))
    assert main(["check", "--log-level", "DEBUG"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "raise exc" in err
    assert err.endswith(
        "onec-mcp-proxy: unexpected error: RuntimeError: bad state; run with --log-level DEBUG for details\n"
    )


def test_ctrl_c_during_start_up_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("py_server.check.run_check", _fail_with(KeyboardInterrupt()))
    assert main(["check"]) == 130


def test_logs_mask_the_1c_password_in_every_form_it_travels_in(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    user, password = "mcp_user", "Пароль-в-журнале"

    def run_check(*args: object, **kwargs: object) -> Any:
        logging.getLogger("py_server.check").warning(
            "sent %s:%s as Basic %s", user, password, basic_auth_token(user, password)
        )
        raise ProxyError("done")

    monkeypatch.setenv("MCP_ONEC_USERNAME", user)
    monkeypatch.setenv("MCP_ONEC_PASSWORD", password)
    monkeypatch.setattr("py_server.check.run_check", run_check)
    assert main(["check"]) == 1
    err = capsys.readouterr().err
    assert "sent *** as Basic ***" in err
    assert password not in err and basic_auth_token(user, password) not in err


class _UvicornRun:
    """Stands in for uvicorn.run: records where the proxy would listen, and returns at once."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(self, app: object, *, host: str, **options: object) -> None:
        self.hosts.append(host)


def test_http_beyond_loopback_without_a_token_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uvicorn_run = _UvicornRun()
    monkeypatch.setattr("uvicorn.run", uvicorn_run)
    assert main(["http", "--host", "0.0.0.0", "--allowed-hosts", "*", "--demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onec-mcp-proxy: MCP_HOST=0.0.0.0 serves other machines, but MCP_AUTH_TOKEN is not set")
    assert "secrets.token_urlsafe(32)" in err and "MCP_ALLOW_UNAUTHENTICATED=true" in err and err.count("\n") == 1
    assert uvicorn_run.hosts == []


def test_http_beyond_loopback_without_a_token_starts_with_a_warning_when_allowed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uvicorn_run = _UvicornRun()
    monkeypatch.setattr("uvicorn.run", uvicorn_run)
    monkeypatch.setenv("MCP_ALLOW_UNAUTHENTICATED", "true")
    assert main(["http", "--host", "0.0.0.0", "--onec-url", "http://127.0.0.1:9/base"]) == 0
    err = capsys.readouterr().err
    assert uvicorn_run.hosts == ["0.0.0.0"]
    assert "WARNING" in err and "without MCP_AUTH_TOKEN" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_http_with_a_token_or_on_loopback_starts_without_that_warning(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uvicorn_run = _UvicornRun()
    monkeypatch.setattr("uvicorn.run", uvicorn_run)
    if host != "127.0.0.1":
        monkeypatch.setenv("MCP_AUTH_TOKEN", "a-long-random-token-for-tests")
    assert main(["http", "--host", host, "--onec-url", "http://127.0.0.1:9/base"]) == 0
    assert uvicorn_run.hosts == [host]
    assert "MCP_AUTH_TOKEN" not in capsys.readouterr().err


def test_check_reports_what_it_found(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_ONEC_PASSWORD", emulator.password)
    code = main(["check", "--onec-url", emulator.url, "--onec-username", emulator.username])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "discovery via manifest" in out and "tools: 9" in out and "resources: 5" in out


def test_check_explains_a_wrong_password(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_ONEC_PASSWORD", "не-тот-пароль")
    code = main(["check", "--onec-url", emulator.url, "--onec-username", emulator.username])
    out = capsys.readouterr().out
    assert code == 1
    assert "401" in out and "MCP_ONEC_PASSWORD" in out and "не-тот-пароль" not in out


def test_check_explains_a_wrong_case_in_the_base_name(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_ONEC_PASSWORD", emulator.password)
    code = main(["check", "--onec-url", emulator.url.replace("/demo", "/DEMO"), "--onec-username", "demo"])
    out = capsys.readouterr().out
    assert code == 1 and "case" in out


def test_stdio_stdout_carries_only_protocol_messages_even_with_the_demo() -> None:
    """--demo starts two web servers in the same process; none of their output may reach stdout."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    with subprocess.Popen(
        [sys.executable, "-m", "py_server", "stdio", "--demo", "--log-level", "DEBUG"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        replies = []
        for message in (initialize, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}):  # fmt: skip
            process.stdin.write((json.dumps(message) + "\n").encode())
            process.stdin.flush()
            if "id" in message:
                replies.append(json.loads(process.stdout.readline()))  # each stdout line must be JSON-RPC
        process.stdin.close()  # end of input: the proxy exits
        rest, stderr = process.stdout.read(), process.stderr.read()
        assert process.wait(timeout=30) == 0
    assert [reply.get("id") for reply in replies] == [1, 2]
    assert "get_metadata" in [tool["name"] for tool in replies[1]["result"]["tools"]]
    assert rest == b""
    assert b"DEBUG" in stderr  # the logs went to stderr


@pytest.mark.anyio
async def test_debug_log_never_contains_the_1c_password(emulator: OneCEmulator, tmp_path: Path) -> None:
    secret = "S3cret-Пароль-42"
    emulator.state.password = secret
    settings = proxy_settings(emulator, onec_password=secret, log_level="DEBUG")
    log_path = tmp_path / "stderr.log"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "py_server", "stdio"], env=settings_env(settings)
    )
    from mcp import ClientSession

    with log_path.open("w", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            await session.list_tools()
            await session.call_tool("get_metadata", {})
            emulator.state.password = "changed"  # now 1C rejects the login: an error path is logged too
            await session.call_tool("get_metadata", {})
    log = log_path.read_text(encoding="utf-8")
    assert "DEBUG" in log and "tools/call" in log
    assert secret not in log
    from py_server.logging_setup import basic_auth_token

    assert basic_auth_token(emulator.username, secret) not in log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, as Ctrl-C does on a POSIX terminal")
def test_ctrl_c_shuts_down_cleanly_with_streams_open() -> None:
    port = _free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "py_server", "http", "--demo", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stderr is not None
        seen: list[bytes] = []
        try:
            for line in process.stderr:  # until the proxy itself (not a demo backend) listens
                seen.append(line)
                if f"Uvicorn running on http://127.0.0.1:{port}".encode() in line:
                    break
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(timeout=10) as client, client.stream("GET", f"{base}/sse") as sse:
                lines = sse.iter_lines()
                assert [next(lines), next(lines)[:20]] == ["event: endpoint", "data: /messages/?ses"]  # open
                process.send_signal(signal.SIGINT)
                code = process.wait(timeout=15)
        finally:
            process.kill()
        log = b"".join(seen) + process.stderr.read()
    assert code == 0
    assert b"ERROR" not in log and b"Traceback" not in log


def test_kb_index_builds_then_refreshes_only_what_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Повторный ремонт\n\nНедостаток проявился вновь после устранения.", encoding="utf-8")
    (docs / "b.txt").write_text("Срок устранения недостатков не более сорока пяти дней.", encoding="utf-8")
    index = tmp_path / "kb.sqlite3"
    assert main(["kb", "index", str(docs), "--output", str(index)]) == 0
    first = capsys.readouterr().out
    (docs / "b.txt").write_text("Срок устранения недостатков — 45 дней.", encoding="utf-8")
    assert main(["kb", "index", str(docs), "--output", str(index)]) == 0
    second = capsys.readouterr().out
    assert index.is_file()
    assert "2 file(s) indexed" in first
    assert "1 file(s) indexed, 1 unchanged" in second
