"""Two stateless replicas behind a real nginx, configured as deploy/nginx.conf says.

Each replica is a `python -m py_server http` subprocess with MCP_STATELESS_HTTP=true and its own demo
1C emulator, so what reached 1C through each replica can be counted. A legacy SSE session works
through nginx's sticky routing. Then one Streamable HTTP session makes 200 `tools/call`s; after 100,
one replica is killed (SIGKILL), and every later call must still succeed: nginx moves a request the
dead replica refused to the live one. Skipped when nginx is not installed (.ci/run installs it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from py_server.config import ENV_NAMES
from py_server.demo.onec_emulator import OneCEmulator

from .conftest import background_process

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX = shutil.which("nginx") or next((path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None)
CALLS = 200
KILL_AFTER = 100
START_TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx); it balances the two replicas"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """This process's environment without any proxy setting (no developer's MCP_* leaks in)."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("MCP_") and key.upper() not in ENV_NAMES
    }


def wait_until_live(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll `url` until it answers 200; fail at once if `process` exits, or after START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    pytest.fail(f"{url} did not answer 200 within {START_TIMEOUT} s:\n{log.read_text(errors='replace')}")


def nginx_config(prefix: Path, listen: int, replicas: list[int]) -> str:
    """deploy/nginx.conf with the test's ports, an access log that names the replica of each request
    ($upstream_addr), and every path nginx writes inside `prefix` (so it runs without root)."""
    text = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    replacements = [
        ("listen 8000;", f"listen 127.0.0.1:{listen};", 1),
        ("server 127.0.0.1:8001 ", f"server 127.0.0.1:{replicas[0]} ", 2),
        ("server 127.0.0.1:8002 ", f"server 127.0.0.1:{replicas[1]} ", 2),
        ("worker_processes auto;", f"worker_processes 2;\nerror_log {prefix}/error.log;", 1),
        (
            "\nhttp {\n",
            "\nhttp {\n"
            "    log_format upstreams '$request_method $uri $status $upstream_addr';\n"
            f"    access_log {prefix}/access.log upstreams;\n"
            + "".join(
                f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
            1,
        ),
    ]
    for old, new, count in replacements:
        # The shipped file must keep the shape this test knows; otherwise this test says what changed.
        assert text.count(old) == count, f"deploy/nginx.conf: expected {old.strip()!r} {count} time(s)"
        text = text.replace(old, new)
    return text


async def call_tools(
    url: str, replica_to_kill: subprocess.Popen[bytes], emulators: list[OneCEmulator]
) -> tuple[list[tuple[int, bool, str]], list[int]]:
    """CALLS `tools/call get_metadata` in one session; the replica is killed after KILL_AFTER calls.

    Returns (call number, isError, text) per call, and the calls each emulator had at the kill.
    """
    outcomes: list[tuple[int, bool, str]] = []
    at_kill: list[int] = []
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write, read_timeout_seconds=30) as session,
    ):
        await session.initialize()
        for number in range(CALLS):
            if number == KILL_AFTER:
                at_kill = [emulator.state.calls["tools/call"] for emulator in emulators]
                replica_to_kill.kill()  # SIGKILL: no graceful shutdown, its sockets just close
                await anyio.to_thread.run_sync(replica_to_kill.wait)
            try:
                result = await session.call_tool("get_metadata", {"type": "Справочники"})
            except MCPError as exc:  # e.g. nginx's 502, as the SDK reports it
                outcomes.append((number, True, f"{type(exc).__name__}: {exc}"))
                continue
            text = "".join(getattr(item, "text", "") for item in result.content)
            outcomes.append((number, bool(result.is_error), text))
    return outcomes, at_kill


async def legacy_sse_calls(url: str, count: int) -> list[bool]:
    """`count` calls over one legacy SSE session (GET /sse, then POSTs to /messages/): isError of each."""
    async with sse_client(url) as (read, write), ClientSession(read, write, read_timeout_seconds=30) as session:
        await session.initialize()
        return [bool((await session.call_tool("get_metadata", {})).is_error) for _ in range(count)]


def test_two_replicas_behind_nginx_survive_one_killed(tmp_path: Path) -> None:
    assert NGINX is not None
    env = {**clean_environment(), "PYTHONIOENCODING": "utf-8"}
    ports = [free_port(), free_port()]
    nginx_port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    with contextlib.ExitStack() as stack:
        emulators = [stack.enter_context(OneCEmulator()) for _ in ports]
        replicas = []
        for index, (port, emulator) in enumerate(zip(ports, emulators, strict=True)):
            replica_env = {
                **env,
                "MCP_ONEC_URL": emulator.url,
                "MCP_ONEC_USERNAME": emulator.username,
                "MCP_ONEC_PASSWORD": emulator.password,
                "MCP_STATELESS_HTTP": "true",
                "MCP_RAG_BACKEND": "off",
                "MCP_LOG_LEVEL": "WARNING",
            }
            args = [sys.executable, "-m", "py_server", "http", "--port", str(port)]
            log = tmp_path / f"replica{index}.log"
            replicas.append((stack.enter_context(background_process(args, log, env=replica_env, cwd=tmp_path)), log))
        for port, (process, log) in zip(ports, replicas, strict=True):
            wait_until_live(f"http://127.0.0.1:{port}/health/live", process, log)

        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, nginx_port, ports), encoding="utf-8")
        # In the foreground, its pid file in the prefix; the config has the error log there too.
        nginx_args = [NGINX, "-p", str(prefix), "-c", str(conf), "-g", f"daemon off; pid {prefix}/nginx.pid;"]
        nginx_log = tmp_path / "nginx.out"
        nginx = stack.enter_context(background_process(nginx_args, nginx_log))
        wait_until_live(f"http://127.0.0.1:{nginx_port}/health/live", nginx, nginx_log)
        # Legacy SSE: the stream and the client's POSTs must meet in one replica (sticky routing);
        # a POST that reached the other replica would be answered 404 (unknown session).
        assert anyio.run(legacy_sse_calls, f"http://127.0.0.1:{nginx_port}/sse", 10) == [False] * 10
        for emulator in emulators:
            emulator.state.reset_counters()

        outcomes, at_kill = anyio.run(call_tools, f"http://127.0.0.1:{nginx_port}/mcp", replicas[0][0], emulators)
        calls = [emulator.state.calls["tools/call"] for emulator in emulators]

        failures = [(number, text) for number, is_error, text in outcomes if is_error or "Справочник." not in text]
        error_log = (prefix / "error.log").read_text(errors="replace")
        assert not failures, f"calls that failed: {failures[:5]}\nnginx error log:\n{error_log[-3000:]}"
        assert len(outcomes) == CALLS
        assert sum(calls) == CALLS, calls  # each call reached 1C exactly once, through one replica

    access = (prefix / "access.log").read_text().splitlines()
    served = [re.findall(r"127\.0\.0\.1:(\d+)", line) for line in access if line.startswith("POST /mcp ")]
    dead, alive = str(ports[0]), str(ports[1])
    # Before the kill, round robin used both replicas; after it, only the live one did.
    assert sum(at_kill) == KILL_AFTER, at_kill
    assert at_kill[0] > 0 and at_kill[1] > 0, f"one replica served no call before the kill: {at_kill}"
    assert calls == [at_kill[0], at_kill[1] + CALLS - KILL_AFTER], (at_kill, calls)
    # nginx found the dead replica refusing, and moved that request to the live one.
    assert any(addresses == [dead, alive] for addresses in served), f"no request was moved: {access[-20:]}"
