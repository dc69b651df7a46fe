"""Latency and throughput of onec-mcp-proxy against the demo 1C emulator, over every transport.

    python bench/bench_proxy.py                 # full run (~1 min)
    python bench/bench_proxy.py --quick         # smoke run (~15 s)
    python bench/bench_proxy.py --requests 2000 --onec-latency 20
    python bench/bench_proxy.py --http-process  # HTTP proxy as `python -m py_server http`

Everything runs on loopback: the emulator and (by default) the HTTP proxy under uvicorn are
threads of this process, the stdio proxy is a real `python -m py_server stdio` subprocess. The
clients are the MCP SDK's own (`ClientSession` over stdio, SSE and Streamable HTTP).
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
import httpx2
from anyio.abc import Process
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from py_server.config import ENV_NAMES, Settings, as_environment
from py_server.demo.loopback import LOOPBACK, LoopbackServer
from py_server.demo.onec_emulator import OneCEmulator
from py_server.http_server import create_app
from py_server.wiring import build_proxy

TRANSPORTS = ("stdio", "sse", "streamable_http")
TOOL = "get_metadata"  # a cheap demo tool that takes no arguments
CONCURRENCIES = (1, 16)
LIMITER_TRANSPORT = "streamable_http"  # the one run with the default onec_max_concurrency
COLD_START_RUNS = 5
STARTUP_TIMEOUT = 30.0  # seconds for a proxy subprocess to answer /health
PROXY_COMMAND = [sys.executable, "-m", "py_server"]
Op = Callable[[], Awaitable[Any]]


@dataclass
class Context:
    """What every measurement needs: the emulator, where subprocesses write, how HTTP is served."""

    emulator: OneCEmulator
    errlog: TextIO  # stderr of every proxy subprocess
    workdir: str  # their working directory: no stray .env
    http_process: bool  # HTTP proxy as a subprocess instead of a thread of this process
    peak_rss: dict[str, int]  # proxy process -> VmHWM in KiB


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Result:
    transport: str
    operation: str
    concurrency: int
    limit: int | None  # the proxy's onec_max_concurrency; None for the direct floor
    samples: list[float]  # seconds, sorted
    wall: float  # seconds for the whole batch
    onec_calls: int  # 1C requests the emulator saw during the batch
    onec_peak: int  # most 1C requests in flight at once during the batch

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in milliseconds."""
        rank = max(1, math.ceil(p / 100 * len(self.samples)))
        return self.samples[rank - 1] * 1000

    @property
    def throughput(self) -> float:
        return len(self.samples) / self.wall


async def run_batch(op: Op, requests: int, concurrency: int) -> tuple[list[float], float]:
    """`requests` calls of `op` from `concurrency` tasks; (sorted latencies, wall time)."""
    samples: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await op()
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return sorted(samples), time.perf_counter() - started


async def measure(
    emulator: OneCEmulator, op: Op, label: tuple[str, str], requests: int, concurrency: int, limit: int | None
) -> Result:
    """Warm up, then measure one cell of the table, counting what reached the emulator."""
    await run_batch(op, max(20, requests // 10), concurrency)
    emulator.state.reset_counters()
    samples, wall = await run_batch(op, requests, concurrency)
    state = emulator.state
    transport, operation = label
    calls = sum(state.calls.values())
    return Result(transport, operation, concurrency, limit, samples, wall, calls, state.max_in_flight)


def checked_call(session: ClientSession) -> Op:
    async def call() -> None:
        result = await session.call_tool(TOOL, {})
        if result.is_error:
            raise RuntimeError(f"{TOOL} failed through the proxy: {result.content}")

    return call


def checked_list(session: ClientSession) -> Op:
    async def call() -> None:
        result = await session.list_tools()
        if not any(tool.name == TOOL for tool in result.tools):
            raise RuntimeError(f"tools/list through the proxy has no {TOOL}")

    return call


# --- the floor: JSON-RPC straight to the emulator ------------------------------------------


async def bench_floor(emulator: OneCEmulator, requests: int) -> list[Result]:
    size = max(CONCURRENCIES)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    auth = (emulator.username, emulator.password)
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30) as client:
        ids = iter(range(1, 10**9))

        async def call() -> None:
            params = {"name": TOOL, "arguments": {}}
            body = {"jsonrpc": "2.0", "id": next(ids), "method": "tools/call", "params": params}
            response = await client.post(emulator.rpc_url, json=body)
            reply = response.raise_for_status().json()
            if "error" in reply or reply["result"].get("isError"):
                raise RuntimeError(f"the emulator failed {TOOL}: {reply}")

        label = ("direct 1C", "tools/call")
        return [await measure(emulator, call, label, requests, c, None) for c in CONCURRENCIES]


# --- proxies and sessions -------------------------------------------------------------------


def proxy_settings(emulator: OneCEmulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "onec_url": emulator.url,
        "onec_username": emulator.username,
        "onec_password": emulator.password,
        "rag_backend": "off",  # and no repairs API: only 1C tools count
        "log_level": "WARNING",
        "catalog_ttl": 600,  # no background catalog refresh lands inside a measurement
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a proxy subprocess needs to run with `settings`."""
    return {**as_environment(settings, dict(os.environ)), "PYTHONIOENCODING": "utf-8"}


def stdio_params(settings: Settings, workdir: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=PROXY_COMMAND[0], args=[*PROXY_COMMAND[1:], "stdio"], env=settings_env(settings), cwd=workdir
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def spawn_http_proxy(settings: Settings, workdir: str, errlog: TextIO) -> AsyncIterator[tuple[str, Process]]:
    """`python -m py_server http` on a free loopback port; yields its URL and process once /health answers."""
    port = free_port()
    env = settings_env(settings.model_copy(update={"host": LOOPBACK, "port": port}))
    url = f"http://{LOOPBACK}:{port}"
    command = [*PROXY_COMMAND, "http"]
    devnull = subprocess.DEVNULL
    process = await anyio.open_process(command, env=env, cwd=workdir, stdin=devnull, stdout=devnull, stderr=errlog)
    try:
        await wait_until_healthy(url, process)
        yield url, process
    finally:
        process.terminate()
        with anyio.move_on_after(10) as scope:
            await process.wait()
        if scope.cancelled_caught:
            process.kill()
            await process.wait()
        await process.aclose()


@contextlib.asynccontextmanager
async def http_proxy_process(settings: Settings, ctx: Context) -> AsyncIterator[str]:
    """`python -m py_server http` on a free loopback port; yields its URL once /health answers."""
    async with spawn_http_proxy(settings, ctx.workdir, ctx.errlog) as (url, process):
        yield url
        record_peak_rss(ctx, "http", process.pid)


async def wait_until_healthy(url: str, process: Process) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        with anyio.fail_after(STARTUP_TIMEOUT):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"the HTTP proxy exited with code {process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/health")).status_code == 200:
                        return
                await anyio.sleep(0.05)


@contextlib.asynccontextmanager
async def http_proxy(settings: Settings, ctx: Context) -> AsyncIterator[str]:
    """The proxy's FastAPI app on loopback: a uvicorn thread here, or a subprocess."""
    if ctx.http_process:
        async with http_proxy_process(settings, ctx) as url:
            yield url
    else:
        with LoopbackServer(create_app(build_proxy(settings))) as server:
            yield server.url


@contextlib.asynccontextmanager
async def mcp_session(transport: str, settings: Settings, ctx: Context) -> AsyncIterator[ClientSession]:
    """An initialized SDK ClientSession to a proxy running with `settings` over `transport`."""
    async with contextlib.AsyncExitStack() as stack:
        if transport == "stdio":
            read, write = await stack.enter_async_context(stdio_client(stdio_params(settings, ctx.workdir), ctx.errlog))
        else:
            url = await stack.enter_async_context(http_proxy(settings, ctx))
            if transport == "sse":
                read, write = await stack.enter_async_context(sse_client(f"{url}/sse"))
            else:
                client = await stack.enter_async_context(httpx2.AsyncClient(timeout=30))
                read, write = await stack.enter_async_context(streamable_http_client(f"{url}/mcp", http_client=client))
        session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=30))
        await session.initialize()
        yield session


# --- the proxy over each transport ----------------------------------------------------------


async def bench_transport(ctx: Context, transport: str, requests: int) -> list[Result]:
    """tools/call and tools/list at each concurrency, with the 1C limiter out of the way."""
    limit = max(CONCURRENCIES)
    results: list[Result] = []
    async with mcp_session(transport, proxy_settings(ctx.emulator, onec_max_concurrency=limit), ctx) as session:
        for operation, op in (("tools/call", checked_call(session)), ("tools/list", checked_list(session))):
            for c in CONCURRENCIES:
                results.append(await measure(ctx.emulator, op, (transport, operation), requests, c, limit))
        if transport == "stdio":
            pid = stdio_child_pid()
            if pid is not None:
                record_peak_rss(ctx, "stdio", pid)
    return results


async def bench_limiter(ctx: Context, requests: int) -> Result:
    """tools/call at the highest concurrency with the default onec_max_concurrency."""
    settings = proxy_settings(ctx.emulator)
    async with mcp_session(LIMITER_TRANSPORT, settings, ctx) as session:
        label = (LIMITER_TRANSPORT, "tools/call")
        return await measure(
            ctx.emulator, checked_call(session), label, requests, max(CONCURRENCIES), settings.onec_max_concurrency
        )


# --- stdio cold start and memory ------------------------------------------------------------


async def cold_start(ctx: Context) -> tuple[float, float]:
    """Seconds from spawning `python -m py_server stdio` to the initialize and the first tools/list answers."""
    params = stdio_params(proxy_settings(ctx.emulator), ctx.workdir)
    started = time.perf_counter()
    async with stdio_client(params, ctx.errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        initialized = time.perf_counter() - started
        await checked_list(session)()
        listed = time.perf_counter() - started
    return initialized, listed


async def interpreter_start() -> float:
    """Seconds for a bare `python -c pass`: the part of the cold start no proxy can save."""
    started = time.perf_counter()
    await anyio.run_process([sys.executable, "-c", "pass"])
    return time.perf_counter() - started


def stdio_child_pid() -> int | None:
    """Our `py_server` child process, found through /proc; None where there is no /proc."""
    me = os.getpid()
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == me and b"py_server\x00stdio" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


def record_peak_rss(ctx: Context, name: str, pid: int) -> None:
    """VmHWM of `pid` from /proc/<pid>/status (Linux); nothing recorded elsewhere."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                ctx.peak_rss[name] = max(ctx.peak_rss.get(name, 0), int(line.split()[1]))


# --- report ---------------------------------------------------------------------------------


def environment() -> list[str]:
    names = ("mcp", "httpx", "httpx2", "uvicorn", "anyio")
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in names)
    return [
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}",
        f"CPUs: {os.cpu_count()}; {versions}",
    ]


def table(results: list[Result]) -> list[str]:
    floor = {r.concurrency: r.percentile(50) for r in results if r.limit is None}
    header = (
        f"{'transport':<16}{'operation':<12}{'conc':>5}{'limit':>6}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'calls/s':>10}{'1C calls':>10}{'1C peak':>9}  overhead vs floor (p50)"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        p50 = r.percentile(50)
        overhead = ""
        if r.limit is not None and r.operation == "tools/call" and r.concurrency in floor:
            base = floor[r.concurrency]
            overhead = f"{p50 - base:+.2f} ms (x{p50 / base:.1f})"
        lines.append(
            f"{r.transport:<16}{r.operation:<12}{r.concurrency:>5}{r.limit or '-':>6}{len(r.samples):>7}"
            f"{p50:>9.2f}{r.percentile(99):>9.2f}{r.throughput:>10.0f}{r.onec_calls:>10}{r.onec_peak:>9}  {overhead}"
        )
    return lines


def summary(results: list[Result], cold: list[tuple[float, float]], bare: float, ctx: Context) -> list[str]:
    lines = [
        f"{r.transport} (c={r.concurrency}): 1C calls during {len(r.samples)} tools/list: {r.onec_calls}"
        for r in results
        if r.operation == "tools/list"
    ]
    initialize = statistics.median(c[0] for c in cold) * 1000
    listed = statistics.median(c[1] for c in cold) * 1000
    lines.append(
        f"stdio cold start (median of {len(cold)}): spawn -> initialize {initialize:.0f} ms, "
        f"-> first tools/list {listed:.0f} ms (bare `python -c pass`: {bare * 1000:.0f} ms)"
    )
    for name in ("stdio", "http") if ctx.http_process else ("stdio",):
        rss = ctx.peak_rss.get(name)
        text = f"{rss / 1024:.1f} MiB" if rss is not None else "n/a (no /proc on this platform)"
        lines.append(f"{name} proxy process peak RSS (VmHWM): {text}")
    return lines


# --- main -----------------------------------------------------------------------------------


async def run(ctx: Context, requests: int, starts: int) -> None:
    try:
        results = await bench_floor(ctx.emulator, requests)
        for transport in TRANSPORTS:
            results += await bench_transport(ctx, transport, requests)
        results.append(await bench_limiter(ctx, requests))
        cold = [await cold_start(ctx) for _ in range(starts)]
        bare = statistics.median([await interpreter_start() for _ in range(starts)])
    except BaseException:
        ctx.errlog.seek(0)
        print("stderr of the proxy subprocesses:\n" + ctx.errlog.read()[-4000:], file=sys.stderr)
        raise
    print()
    print("\n".join(table(results)))
    print()
    print("\n".join(summary(results, cold, bare, ctx)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=None, help="measured calls per cell (default 800, quick 150)")
    parser.add_argument("--quick", action="store_true", help="fewer requests and cold starts (smoke run)")
    parser.add_argument("--onec-latency", type=float, default=0.0, help="ms the emulator waits per 1C call (0)")
    parser.add_argument(
        "--http-process", action="store_true", help="run the HTTP proxy as `python -m py_server http`, not a thread"
    )
    return parser.parse_args()


@contextlib.contextmanager
def clean_environment() -> Iterator[None]:
    """Drop the caller's MCP_* (and legacy) variables, so the in-process proxy uses only our settings."""
    saved = {key: os.environ[key] for key in ENV_NAMES & os.environ.keys()}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def main() -> None:
    args = parse_args()
    requests = args.requests or (150 if args.quick else 800)
    starts = 3 if args.quick else COLD_START_RUNS
    started = time.perf_counter()
    print("\n".join(environment()))
    where = "a subprocess" if args.http_process else "a uvicorn thread of this process"
    print(
        f"{requests} calls per cell after a warm-up; tool {TOOL}; 1C latency {args.onec_latency:g} ms; "
        f"HTTP proxy in {where}"
    )
    with (
        clean_environment(),
        OneCEmulator() as emulator,
        tempfile.TemporaryDirectory(prefix="bench-proxy-") as workdir,
        open(Path(workdir) / "proxy-stderr.log", "w+", encoding="utf-8") as errlog,
    ):
        emulator.state.latency = args.onec_latency / 1000
        ctx = Context(emulator, errlog, workdir, args.http_process, {})
        anyio.run(run, ctx, requests, starts, backend="asyncio")
    print(f"total bench time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
