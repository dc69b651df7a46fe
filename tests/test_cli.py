"""The command line: one-line errors, refusing unsafe exposure, `check`, stdio hygiene, no secret in logs.

Settings precedence and names are in test_settings.py."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import StdioServerParameters, stdio_client

from py_server.demo.onec_emulator import OneCEmulator
from py_server.errors import ProxyError
from py_server.main import _event_loop_options, main
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


@pytest.mark.parametrize("command", [["stdio"], ["http"], ["check"], ["kb", "index", "docs"]])
@pytest.mark.parametrize(("name", "problem"), [("prod.env", "does not exist"), ("settings", "is a folder, not a file")])
def test_an_env_file_that_is_missing_or_a_folder_stops_every_command_with_one_line(
    command: list[str], name: str, problem: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("settings").mkdir()
    serve = _Serve()
    monkeypatch.setattr("py_server.main._serve", serve)  # should http get past its settings
    assert main([*command, "--env-file", name]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"onec-mcp-proxy: --env-file {name} {problem}\n"
    assert captured.out == "" and serve.hosts == []


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


class _Serve:
    """Stands in for main._serve: records where the proxy listens (the sockets it was given), and returns."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(self, app: object, listeners: list[socket.socket], **options: object) -> None:
        self.hosts.extend(sock.getsockname()[0] for sock in listeners)


def test_http_beyond_loopback_without_a_token_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = _Serve()
    monkeypatch.setattr("py_server.main._serve", serve)
    assert main(["http", "--host", "0.0.0.0", "--allowed-hosts", "*", "--demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onec-mcp-proxy: MCP_HOST=0.0.0.0 serves other machines, but MCP_AUTH_TOKEN is not set")
    assert "secrets.token_urlsafe(32)" in err and "MCP_ALLOW_UNAUTHENTICATED=true" in err and err.count("\n") == 1
    assert serve.hosts == []


def test_http_beyond_loopback_without_a_token_starts_with_a_warning_when_allowed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = _Serve()
    monkeypatch.setattr("py_server.main._serve", serve)
    monkeypatch.setenv("MCP_ALLOW_UNAUTHENTICATED", "true")
    assert main(["http", "--host", "0.0.0.0", "--port", "0", "--onec-url", "http://127.0.0.1:9/base"]) == 0
    err = capsys.readouterr().err
    assert serve.hosts == ["0.0.0.0"]
    assert "WARNING" in err and "without MCP_AUTH_TOKEN" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_http_with_a_token_or_on_loopback_starts_without_that_warning(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = _Serve()
    monkeypatch.setattr("py_server.main._serve", serve)
    if host != "127.0.0.1":
        monkeypatch.setenv("MCP_AUTH_TOKEN", "a-long-random-token-for-tests")
    assert main(["http", "--host", host, "--port", "0", "--onec-url", "http://127.0.0.1:9/base"]) == 0
    assert serve.hosts == [host]
    assert "MCP_AUTH_TOKEN" not in capsys.readouterr().err


# --- a port in use --------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.create_server(("127.0.0.1", 0)) as other:
        yield int(other.getsockname()[1])


@pytest.mark.parametrize(("command", "setting"), [(["http", "--demo"], "MCP_PORT or --port"), (["emulator"], "--port")])
def test_a_port_in_use_is_one_line_and_exit_code_1_before_any_banner(
    command: list[str],
    setting: str,
    taken_port: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serve = _Serve()
    monkeypatch.setattr("py_server.main._serve", serve)
    assert main([*command, "--port", str(taken_port)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"onec-mcp-proxy: port {taken_port} is in use; set {setting}\n"  # no banner, no demo line
    assert captured.out == "" and serve.hosts == []


def test_the_http_banner_names_the_port_it_listens_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listening: list[int] = []

    def serve(app: object, listeners: list[socket.socket], **options: object) -> None:
        listening.extend(sock.getsockname()[1] for sock in listeners)
        with socket.create_connection(("127.0.0.1", listening[0]), timeout=5):  # it listens already
            pass

    monkeypatch.setattr("py_server.main._serve", serve)
    assert main(["http", "--port", "0", "--onec-url", "http://127.0.0.1:9/base"]) == 0
    [port] = listening
    assert f"on http://127.0.0.1:{port} (SSE /sse" in capsys.readouterr().err


def test_emulator_help_describes_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "Run the demo 1C base alone on 127.0.0.1" in out and "MCP_ONEC_URL=http://127.0.0.1:PORT/demo" in out
    assert "--port PORT  port to listen on, on 127.0.0.1 (default 8081" in " ".join(out.split("\n"))


def test_emulator_serves_the_demo_base_and_says_where(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served: list[Any] = []
    monkeypatch.setattr("py_server.main._serve", lambda app, listeners, **options: served.append(app))
    assert main(["emulator", "--port", "0"]) == 0
    [app] = served
    assert app.state.emulator.resource_templates  # as --demo serves it
    assert capsys.readouterr().err.startswith("demo 1C base: MCP_ONEC_URL=http://127.0.0.1:")


# --- a 1C URL with the service path, and where the 1C settings came from --------------------------


def test_a_url_with_the_service_path_is_logged_once_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("py_server.main._serve", _Serve())
    monkeypatch.setenv("MCP_ONEC_URL", "http://127.0.0.1:9/base/hs/mcp/rpc")
    assert main(["http", "--port", "0"]) == 0
    err = capsys.readouterr().err
    line = (
        "WARNING py_server: MCP_ONEC_URL ends with /hs/mcp/rpc, which the proxy adds itself: "
        "using http://127.0.0.1:9/base; set MCP_ONEC_URL=http://127.0.0.1:9/base\n"
    )
    assert err.count(line) == 1 and "1C at http://127.0.0.1:9/base/hs/mcp\n" in err


def test_check_says_once_what_it_did_with_a_url_with_the_service_path(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_ONEC_URL", emulator.url + "/hs/mcp/rpc/")
    monkeypatch.setenv("MCP_ONEC_USERNAME", emulator.username)
    monkeypatch.setenv("MCP_ONEC_PASSWORD", emulator.password)
    code = main(["check"])
    captured = capsys.readouterr()
    assert code == 0, captured.out
    said = f"[warn] MCP_ONEC_URL ends with /hs/mcp/rpc, which the proxy adds itself: using {emulator.url}; "
    assert said + f"set MCP_ONEC_URL={emulator.url}\n" in captured.out
    assert "MCP_ONEC_URL ends with" not in captured.err  # said once, in the report


def test_check_says_where_each_1c_setting_came_from_and_never_the_password(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(".env").write_text(f"MCP_ONEC_PASSWORD={emulator.password}\nMCP_ONEC_USERNAME=\n", encoding="utf-8")
    monkeypatch.setenv("MCP_ONEC_USERNAME", emulator.username)
    code = main(["check", "--onec-url", emulator.url])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:7] == [
        f"[--]   MCP_ONEC_URL = {emulator.url} (flag)",
        f"[--]   MCP_ONEC_USERNAME = {emulator.username} (environment)",
        "[--]   MCP_ONEC_PASSWORD = *** set (.env)",
        "[--]   MCP_ONEC_SERVICE_ROOT = mcp (default)",
        "[--]   MCP_ONEC_RPC_PATH = rpc (default)",
        "[--]   MCP_ONEC_CA_BUNDLE = not set (default)",
        "[--]   MCP_ONEC_VERIFY_TLS = true (default)",
    ]
    assert emulator.password not in out


def test_check_with_the_demo_says_the_demo_set_the_1c_login(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--demo"]) == 0
    out = capsys.readouterr().out
    assert "[--]   MCP_ONEC_USERNAME = demo (demo)\n" in out and "[--]   MCP_ONEC_PASSWORD = *** set (demo)\n" in out


# --- check: the report on stdout, the log on stderr ------------------------------------------------


async def _logs_then_fails(*args: object, **kwargs: object) -> int:
    logging.getLogger("py_server.check").info("an informational line")
    logging.getLogger("py_server.check").warning("a warning line")
    print("[FAIL] something", file=kwargs["out"])  # type: ignore[arg-type]
    return 1


def test_check_logs_warnings_only_even_when_the_settings_say_info(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("py_server.check.run_check", _logs_then_fails)
    Path(".env").write_text("MCP_LOG_LEVEL=INFO\n", encoding="utf-8")  # as in env.example
    assert main(["check"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "[FAIL] something\n"
    assert "a warning line" in captured.err and "an informational line" not in captured.err


def test_check_logs_more_when_the_log_level_flag_asks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("py_server.check.run_check", _logs_then_fails)
    assert main(["check", "--log-level", "INFO"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "[FAIL] something\n"
    assert "a warning line" in captured.err and "an informational line" in captured.err


def test_check_logs_less_when_the_settings_ask_for_less(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("py_server.check.run_check", _logs_then_fails)
    monkeypatch.setenv("MCP_LOG_LEVEL", "ERROR")
    assert main(["check"]) == 1
    assert capsys.readouterr().err == ""


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
                if f"on http://127.0.0.1:{port} (SSE".encode() in line:
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


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, as Ctrl-C does on a POSIX terminal")
def test_http_with_the_demo_says_each_start_up_fact_once_and_nothing_per_health_probe() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "py_server", "http", "--demo", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    ) as process:
        assert process.stderr is not None
        seen: list[str] = []
        try:
            for line in process.stderr:
                seen.append(line)
                if "Application startup complete" in line:  # the proxy's own server serves
                    break
            [port] = [int(re.findall(r"on http://127\.0\.0\.1:(\d+) ", line)[0]) for line in seen if "(SSE" in line]
            for _ in range(3):
                assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=15)
        finally:
            process.kill()
        log = "".join(seen) + process.stderr.read()
    assert code == 0, log
    for fact in ("demo 1C base at", "(SSE /sse", "Started server process", "Application startup complete"):
        assert log.count(fact) == 1, (fact, log)
    assert log.index("(SSE /sse") < log.index("Started server process")  # the proxy's server's, not a backend's
    assert "/health" not in log.replace("health /health", "")  # no line per probe


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


def test_stdio_runs_on_uvloop_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = importlib.util.find_spec("uvloop") is not None
    assert _event_loop_options() == ({"use_uvloop": True} if installed else {})
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows, where it has no build
    assert _event_loop_options() == {}
