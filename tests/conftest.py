"""Shared fixtures: the demo 1C emulator on loopback, proxy settings, and MCP client sessions over
every transport (a real stdio subprocess, SSE and Streamable HTTP against uvicorn on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from py_server.config import ENV_NAMES, Settings, as_environment
from py_server.demo.loopback import LoopbackServer
from py_server.demo.onec_emulator import EmulatorState, OneCEmulator
from py_server.http_server import create_app, uvicorn_options
from py_server.wiring import build_proxy

TRANSPORTS = ("stdio", "sse", "streamable_http")
MessageHandler = Callable[[Any], Awaitable[None]]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's settings: every MCP_* and known name is removed, and no .env is found."""
    # HOST and PORT too: the proxy must ignore them, so no test may pass only because a shell has them.
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("MCP_") or upper in ENV_NAMES or upper in ("HOST", "PORT"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main()` configures the root logger for a real process; undo that after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


TEST_PASSWORD = "Пароль-1С-для-тестов"  # distinctive, so a leak is found by a plain substring search


@pytest.fixture
def emulator() -> Iterator[OneCEmulator]:
    with OneCEmulator(EmulatorState(password=TEST_PASSWORD)) as running:
        yield running


def proxy_settings(emulator: OneCEmulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "onec_url": emulator.url,
        "onec_username": emulator.username,
        "onec_password": emulator.password,
        "rag_backend": "off",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a stdio subprocess needs to run with `settings`."""
    return {**as_environment(settings, dict(os.environ)), "PYTHONIOENCODING": "utf-8"}


@contextlib.contextmanager
def http_proxy(settings: Settings) -> Iterator[LoopbackServer]:
    """The proxy's FastAPI app under uvicorn on a free loopback port."""
    with LoopbackServer(create_app(build_proxy(settings)), options=uvicorn_options(settings)) as server:
        yield server


@contextlib.asynccontextmanager
async def mcp_session(
    transport: str,
    settings: Settings,
    *,
    message_handler: MessageHandler | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[ClientSession]:
    """An initialized SDK ClientSession to a proxy that runs with `settings` over `transport`."""
    async with contextlib.AsyncExitStack() as stack:
        if transport == "stdio":
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "py_server", "stdio"], env=settings_env(settings)
            )
            read, write = await stack.enter_async_context(stdio_client(params))
        else:
            server = stack.enter_context(http_proxy(settings))
            if transport == "sse":
                read, write = await stack.enter_async_context(sse_client(f"{server.url}/sse", headers=headers))
            else:
                client = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=30))
                read, write = await stack.enter_async_context(
                    streamable_http_client(f"{server.url}/mcp", http_client=client)
                )
        session = await stack.enter_async_context(
            ClientSession(read, write, message_handler=message_handler, read_timeout_seconds=30)
        )
        await session.initialize()
        yield session


@contextlib.contextmanager
def background_process(args: list[str], log: Path, **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess writing stdout and stderr to `log`, stopped (terminate, then kill) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
