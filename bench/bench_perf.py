"""The proxy's performance in one command (issue 11): every transport, both MCP protocol eras.

    python bench/bench_perf.py                             # full run, 10 to 13 min here
    python bench/bench_perf.py --quick                     # smoke run, about 4 min
    python bench/bench_perf.py --json perf.json            # the same figures as JSON
    python bench/bench_perf.py --baseline-src /tmp/base    # before/after: /tmp/base is a git worktree

The demo 1C emulator runs in this process on 127.0.0.1. Every proxy is its own subprocess
(`python -m py_server stdio` or `python -m py_server http --port N`) with a clean environment and
a temporary working directory, so neither your MCP_* variables nor a .env reach it. The clients
are the MCP SDK's own: `ClientSession` + `initialize` for the handshake era (2025-11-25) and
`mcp.Client` in auto mode for the modern era (2026-07-28).

Figures: per transport and era, `tools/call` latency and the added latency as the median of paired
(proxy - floor) differences, `tools/list` latency, throughput with 16 calls in flight against the
floor's, the cost of the default 1C concurrency cap, stdio cold start, HTTP ready time, the
interpreter's own start-up, and the proxy's RSS over a long run and over many sessions. With
--baseline-src every figure is measured for both source trees in the same run, alternating.
Prints figures; not a test: it asserts nothing except that the calls succeed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.util
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
import httpx2
from anyio.abc import Process
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from py_server.demo.loopback import LOOPBACK, LoopbackServer
from py_server.demo.onec_emulator import OneCEmulator, create_onec_emulator

TRANSPORTS = ("stdio", "sse", "streamable_http")
ERAS = {"handshake": "2025-11-25", "modern": "2026-07-28"}
TOOL = "get_metadata"  # a cheap demo tool that takes no arguments
IN_FLIGHT = 16  # calls in flight for the throughput figures, and the proxy's cap for them
RUN_CONCURRENCY = 4  # the long run and the session churn: sequential-ish, but not slower than need be
WARMUP = 50  # calls before a latency or throughput measurement
RSS_WARMUP = 200  # calls before the first RSS reading
DEFAULT_CAP = "default_cap"  # a proxy with MCP_ONEC_MAX_CONCURRENCY unset
EMULATOR_KEEP_ALIVE = 30  # seconds; see BenchEmulator
SETUP_TIMEOUT = 60.0  # seconds to start a proxy and open a session
CELL_TIMEOUT = 900.0  # seconds for one measurement
INHERITED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TEMP", "TMP",
    "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT", "USERPROFILE", "APPDATA", "LOCALAPPDATA",
)  # fmt: skip
Op = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Plan:
    pairs: int  # alternating (floor, proxy) pairs per latency cell
    throughput_calls: int  # calls per throughput batch
    starts: int  # cold starts and ready times, per variant
    long_run: int  # calls in one session for the RSS figure
    sessions: int  # sessions opened and closed for the RSS figure (HTTP only)
    onec_latency: float  # ms the emulator waits per 1C call


@dataclass(frozen=True)
class Variant:
    """A source tree the proxy subprocesses import: the installed one, or --baseline-src."""

    name: str  # "current" or "baseline"
    pythonpath: str | None  # prepended to PYTHONPATH
    source: str = ""  # py_server.__file__ as the subprocess sees it
    version: str = ""


@dataclass
class Bench:
    emulator: OneCEmulator
    floor: Op  # tools/call straight to the emulator
    workdir: str  # cwd of every subprocess: no stray .env
    errlog: TextIO  # stderr of every proxy subprocess
    variants: list[Variant]
    plan: Plan


@dataclass
class Connection:
    """One MCP client session to one proxy process."""

    call: Op
    list: Op
    protocol: str
    pid: int | None  # the proxy's process, for /proc; None where unknown
    url: str | None = None  # HTTP proxies only


@dataclass
class Failure:
    reason: str


class BenchEmulator(OneCEmulator):
    """The demo 1C base with a keep-alive longer than the 5 s an httpx pool keeps an idle connection.
    At uvicorn's default (also 5 s) a call after almost exactly 5 s of quiet can go out on a connection
    the emulator is closing; the proxy does not repeat a tools/call then, and a cell would fail for a
    reason that has nothing to do with speed (the alternating batches leave each proxy idle for seconds)."""

    def __init__(self) -> None:
        super().__init__()
        options = {"timeout_keep_alive": EMULATOR_KEEP_ALIVE}
        self._server = LoopbackServer(create_onec_emulator(self.state), options=options)


@functools.cache
def tls() -> ssl.SSLContext:
    """One TLS context for every HTTP client of the run: building one costs some 50 ms of CPU here,
    which, paid per session, would make the session churn measure the client instead of the proxy."""
    return ssl.create_default_context()


def sdk_http_client(
    headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None, auth: httpx2.Auth | None = None
) -> httpx2.AsyncClient:
    """The SDK's `create_mcp_http_client`, with the shared TLS context."""
    timeout = timeout or httpx2.Timeout(30, read=300)
    return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=tls())


# --- timing ---------------------------------------------------------------------------------


async def timed(op: Op) -> float:
    started = time.perf_counter()
    await op()
    return time.perf_counter() - started


async def run_batch(op: Op, calls: int, concurrency: int) -> float:
    """`calls` calls of `op` from `concurrency` tasks; the wall time in seconds."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await op()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return time.perf_counter() - started


async def alternate(ops: dict[str, Op], rounds: int) -> dict[str, list[float]]:
    """Each round calls every op once, in an order that rotates; seconds per op, in round order."""
    names = list(ops)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(await timed(ops[name]))
    return samples


def ms(values: list[float], p: float = 50) -> float:
    """Nearest-rank percentile of seconds, in milliseconds."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1] * 1000


def paired_ms(a: list[float], b: list[float]) -> float:
    """Median of the pairwise differences a - b, in milliseconds."""
    return statistics.median(x - y for x, y in zip(a, b, strict=True)) * 1000


def reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


# --- the floor and the proxy's processes ----------------------------------------------------


@contextlib.asynccontextmanager
async def floor_client(emulator: OneCEmulator) -> AsyncIterator[Op]:
    """tools/call posted straight to the emulator's JSON-RPC endpoint over a pooled httpx client."""
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    auth = (emulator.username, emulator.password)
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30, verify=tls()) as client:
        ids = iter(range(1, 10**9))

        async def call() -> None:
            body = {
                "jsonrpc": "2.0",
                "id": next(ids),
                "method": "tools/call",
                "params": {"name": TOOL, "arguments": {}},
            }
            reply = (await client.post(emulator.rpc_url, json=body)).raise_for_status().json()
            if "error" in reply or reply["result"].get("isError"):
                raise RuntimeError(f"the emulator failed {TOOL}: {reply}")

        yield call


def clean_env(variant: Variant | None = None) -> dict[str, str]:
    """A few system variables and nothing else; the variant's source tree first on PYTHONPATH."""
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env["PYTHONIOENCODING"] = "utf-8"
    if variant is not None and variant.pythonpath:
        env["PYTHONPATH"] = variant.pythonpath
    return env


def proxy_env(bench: Bench, variant: Variant, cap: int | None) -> dict[str, str]:
    """What bench_proxy uses: no knowledge base, no repairs API, WARNING logs, no catalog refresh mid-run."""
    emulator = bench.emulator
    env = clean_env(variant) | {
        "MCP_ONEC_URL": emulator.url,
        "MCP_ONEC_USERNAME": emulator.username,
        "MCP_ONEC_PASSWORD": emulator.password,
        "MCP_RAG_BACKEND": "off",
        "MCP_LOG_LEVEL": "WARNING",
        "MCP_CATALOG_TTL": "600",
    }
    if cap is not None:
        env["MCP_ONEC_MAX_CONCURRENCY"] = str(cap)
    return env


def stdio_params(bench: Bench, variant: Variant, cap: int | None) -> StdioServerParameters:
    env = proxy_env(bench, variant, cap)
    return StdioServerParameters(command=sys.executable, args=["-m", "py_server", "stdio"], env=env, cwd=bench.workdir)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


async def open_http_proxy(bench: Bench, variant: Variant, cap: int | None) -> tuple[str, Process]:
    port = free_port()
    command = [sys.executable, "-m", "py_server", "http", "--port", str(port)]
    process = await anyio.open_process(
        command,
        env=proxy_env(bench, variant, cap),
        cwd=bench.workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=bench.errlog,
    )
    return f"http://{LOOPBACK}:{port}", process


async def stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
    with anyio.move_on_after(10) as scope:
        await process.wait()
    if scope.cancelled_caught:
        process.kill()
        await process.wait()
    await process.aclose()


async def wait_live(url: str, process: Process) -> None:
    """Until GET /health/live answers 200, polling every 5 ms."""
    async with httpx.AsyncClient(timeout=2, verify=tls()) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the HTTP proxy exited with code {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health/live")).status_code == 200:
                    return
            await anyio.sleep(0.005)


@contextlib.asynccontextmanager
async def http_proxy(bench: Bench, variant: Variant, cap: int | None) -> AsyncIterator[tuple[str, int]]:
    """`python -m py_server http` on a free port; (URL, pid) once it is live."""
    url, process = await open_http_proxy(bench, variant, cap)
    try:
        with anyio.fail_after(SETUP_TIMEOUT):
            await wait_live(url, process)
        yield url, process.pid
    finally:
        await stop(process)


def proxy_children() -> set[int]:
    """This process's `python -m py_server stdio` children, from /proc; empty where there is no /proc."""
    me, found = os.getpid(), set()
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == me and b"py_server\x00stdio" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
    return found


def read_rss(pid: int | None) -> dict[str, int] | None:
    """VmRSS and VmHWM of `pid` in KiB from /proc/<pid>/status (Linux); None elsewhere."""
    if pid is None:
        return None
    figures: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                figures[key] = int(line.split()[1])
    return figures if len(figures) == 2 else None


# --- MCP sessions in either era ---------------------------------------------------------------


def checked(call: Callable[[], Awaitable[Any]], what: str) -> Op:
    async def op() -> None:
        result = await call()
        if getattr(result, "is_error", False):
            raise RuntimeError(f"{what} failed through the proxy: {result.content}")
        if what == "tools/list" and not any(tool.name == TOOL for tool in result.tools):
            raise RuntimeError(f"tools/list through the proxy has no {TOOL}")

    return op


async def transport_streams(
    stack: contextlib.AsyncExitStack, transport: str, target: StdioServerParameters | str, errlog: TextIO
) -> contextlib.AbstractAsyncContextManager[Any]:
    """The SDK's client transport for `target` (stdio parameters, or the HTTP proxy's URL); not yet entered."""
    if isinstance(target, StdioServerParameters):
        return stdio_client(target, errlog)
    if transport == "sse":
        return sse_client(f"{target}/sse", timeout=30, httpx_client_factory=sdk_http_client)
    client = await stack.enter_async_context(sdk_http_client())
    return streamable_http_client(f"{target}/mcp", http_client=client)


async def open_session(
    stack: contextlib.AsyncExitStack, streams: contextlib.AbstractAsyncContextManager[Any], era: str
) -> tuple[Op, Op, str]:
    """(call, list, negotiated protocol) over `streams`: ClientSession + initialize, or mcp.Client in auto mode."""
    if era == "handshake":
        read, write = await stack.enter_async_context(streams)
        session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=30))
        protocol = (await session.initialize()).protocol_version
        call, listing = (lambda: session.call_tool(TOOL, {})), session.list_tools
    else:
        client = await stack.enter_async_context(Client(streams, mode="auto", cache=None, read_timeout_seconds=30))
        protocol = client.protocol_version
        call, listing = (lambda: client.call_tool(TOOL, {})), client.list_tools
    if protocol != ERAS[era]:
        raise RuntimeError(f"negotiated {protocol}, not the {era} era's {ERAS[era]}")
    return checked(call, "tools/call"), checked(listing, "tools/list"), str(protocol)


@contextlib.asynccontextmanager
async def connection(
    bench: Bench, transport: str, era: str, variant: Variant, cap: int | None
) -> AsyncIterator[Connection]:
    """A fresh proxy process of `variant` and one initialized session to it over `transport`."""
    # No fail_after around this: the transports' task groups must not be entered inside a scope
    # that ends before they do. The SDK's read timeout and the cell's own timeout bound it instead.
    async with contextlib.AsyncExitStack() as stack:
        url: str | None = None
        if transport == "stdio":
            before = proxy_children()
            target: StdioServerParameters | str = stdio_params(bench, variant, cap)
        else:
            url, pid = await stack.enter_async_context(http_proxy(bench, variant, cap))
            target = url
        streams = await transport_streams(stack, transport, target, bench.errlog)
        call, listing, protocol = await open_session(stack, streams, era)
        if transport == "stdio":
            spawned = proxy_children() - before
            pid = spawned.pop() if len(spawned) == 1 else None
        yield Connection(call, listing, protocol, pid, url)


@contextlib.asynccontextmanager
async def connections(bench: Bench, transport: str, era: str, cap: int | None) -> AsyncIterator[dict[str, Connection]]:
    """One connection per variant, all open at once, so that measurements can alternate between them."""
    async with contextlib.AsyncExitStack() as stack:
        opened = {}
        for variant in bench.variants:
            opened[variant.name] = await stack.enter_async_context(connection(bench, transport, era, variant, cap))
        yield opened


# --- latency and throughput, per transport and era ---------------------------------------------


async def warm_up(conns: dict[str, Connection], floor: Op) -> None:
    for conn in conns.values():
        await conn.list()  # the modern client sends a listed tool's headers; list first, as clients do
        await run_batch(conn.call, WARMUP, 1)
    await run_batch(floor, WARMUP, 1)


async def call_latency(bench: Bench, conns: dict[str, Connection]) -> dict[str, Any]:
    """N rounds of one floor call and one call per variant, alternating; medians of the paired differences."""
    samples = await alternate({"floor": bench.floor} | {name: c.call for name, c in conns.items()}, bench.plan.pairs)
    floor = samples["floor"]
    figures: dict[str, Any] = {"pairs": bench.plan.pairs, "floor_p50": ms(floor), "floor_p95": ms(floor, 95)}
    for name, values in samples.items():
        if name != "floor":
            figures[name] = {"p50": ms(values), "p95": ms(values, 95), "added_p50": paired_ms(values, floor)}
    if "baseline" in conns:
        figures["delta_p50"] = paired_ms(samples["current"], samples["baseline"])
    return figures


async def list_latency(bench: Bench, conns: dict[str, Connection]) -> dict[str, Any]:
    """tools/list p50 per variant (alternating), with the 1C requests the emulator saw meanwhile."""
    state = bench.emulator.state
    state.reset_counters()
    samples = await alternate({name: c.list for name, c in conns.items()}, bench.plan.pairs)
    figures: dict[str, Any] = {name: ms(values) for name, values in samples.items()}
    figures["onec_calls"] = sum(state.calls.values())
    if "baseline" in conns:
        figures["delta_p50"] = paired_ms(samples["current"], samples["baseline"])
    return figures


async def throughput(bench: Bench, ops: dict[str, Op]) -> dict[str, Any]:
    """Calls/s of each op with IN_FLIGHT calls in flight (one session each), the floor's before and after."""
    calls = bench.plan.throughput_calls
    await run_batch(bench.floor, WARMUP, IN_FLIGHT)
    for op in ops.values():
        await run_batch(op, WARMUP, IN_FLIGHT)
    walls: dict[str, float] = {"floor": 0.0, **dict.fromkeys(ops, 0.0)}
    batches: dict[str, int] = dict.fromkeys(walls, 0)
    # floor, A, B, B, A, floor: each figure's batches sit at the same mean time, so drift cancels.
    for name in ["floor", *ops, *reversed(ops), "floor"]:
        walls[name] += await run_batch(bench.floor if name == "floor" else ops[name], calls, IN_FLIGHT)
        batches[name] += 1
    rates = {name: batches[name] * calls / wall for name, wall in walls.items()}
    figures: dict[str, Any] = {"in_flight": IN_FLIGHT, "calls": calls, "floor_calls_s": rates["floor"]}
    for name in ops:
        figures[name] = {"calls_s": rates[name], "ratio": rates[name] / rates["floor"]}
    return figures


async def transport_cell(bench: Bench, transport: str, era: str) -> dict[str, Any]:
    """Latency and throughput over `transport` in `era`, the proxy's 1C cap at IN_FLIGHT. In the handshake
    era a proxy with the default cap joins the throughput batches, alternating: what the default cap costs."""
    async with contextlib.AsyncExitStack() as stack:
        conns = await stack.enter_async_context(connections(bench, transport, era, IN_FLIGHT))
        capped: dict[str, Connection] = {}
        if era == "handshake":
            capped = await stack.enter_async_context(connections(bench, transport, era, None))
        await warm_up(conns | {f"{name} {DEFAULT_CAP}": c for name, c in capped.items()}, bench.floor)
        cell = {
            "transport": transport,
            "era": era,
            "protocol": {name: c.protocol for name, c in conns.items()},
            "limit": IN_FLIGHT,
            "call": await call_latency(bench, conns),
            "list": await list_latency(bench, conns),
        }
        ops = {name: c.call for name, c in conns.items()} | {f"{n} {DEFAULT_CAP}": c.call for n, c in capped.items()}
        rates = await throughput(bench, ops)
    cell["throughput"] = {key: value for key, value in rates.items() if not key.endswith(DEFAULT_CAP)}
    if capped:
        cell[DEFAULT_CAP] = {key: rates[key] for key in ("in_flight", "calls", "floor_calls_s")}
        for name in capped:
            default, wide = rates[f"{name} {DEFAULT_CAP}"], rates[name]["calls_s"]
            cell[DEFAULT_CAP][name] = default | {
                "wide_calls_s": wide,
                "cost_pct": (1 - default["calls_s"] / wide) * 100,
            }
    return cell


async def guarded(
    what: str, measure: Callable[[], Awaitable[dict[str, Any]]], errlog: TextIO
) -> dict[str, Any] | Failure:
    """The measurement's figures, or why it could not run (printed as n/a) instead of a crash."""
    print(f"  {what} ...", end="", flush=True)
    started, logged = time.perf_counter(), errlog.tell()
    try:
        with anyio.fail_after(CELL_TIMEOUT):
            figures = await measure()
    except Exception as exc:
        failure = Failure(reason(exc) + proxy_said(errlog, logged))
        print(f" n/a ({failure.reason})", flush=True)
        return failure
    print(f" {time.perf_counter() - started:.0f} s", flush=True)
    return figures


def proxy_said(errlog: TextIO, since: int) -> str:
    """The last line the proxy subprocesses wrote to stderr after `since`, for a failure's reason."""
    errlog.flush()
    errlog.seek(since)
    lines = [line.strip() for line in errlog.read().splitlines() if line.strip()]
    errlog.seek(0, os.SEEK_END)
    return f"; proxy stderr: {lines[-1][:200]}" if lines else ""


# --- start-up ---------------------------------------------------------------------------------


async def stdio_cold_start(bench: Bench, variant: Variant) -> float:
    """Seconds from spawning `python -m py_server stdio` to the first tools/list answer (handshake era)."""
    params = stdio_params(bench, variant, None)
    started = time.perf_counter()
    async with stdio_client(params, bench.errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await checked(session.list_tools, "tools/list")()
        return time.perf_counter() - started


async def http_ready(bench: Bench, variant: Variant) -> float:
    """Seconds from spawning `python -m py_server http` to the first 200 from GET /health/live."""
    started = time.perf_counter()
    url, process = await open_http_proxy(bench, variant, None)
    try:
        with anyio.fail_after(SETUP_TIMEOUT):
            await wait_live(url, process)
        return time.perf_counter() - started
    finally:
        await stop(process)


HWM_PROBE = """
try:
    print(open("/proc/self/status").read())
except OSError:
    pass
"""  # VmHWM of the interpreter itself: rusage of a vforked child reports the parent's peak instead


def run_python(code: str, workdir: str) -> tuple[float, int | None]:
    """Wall seconds and peak RSS (KiB; None without /proc) of `python -c code`."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code + HWM_PROBE], env=clean_env(), cwd=workdir, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"python -c {code!r} exited with {result.returncode}: {result.stderr[-300:]}")
    for line in result.stdout.splitlines():
        if line.startswith("VmHWM:"):
            return wall, int(line.split()[1])
    return wall, None


async def startup(bench: Bench) -> dict[str, Any]:
    """Cold start and ready time per variant (alternating runs), and the interpreter's own floors."""
    cold: dict[str, list[float]] = {v.name: [] for v in bench.variants}
    ready: dict[str, list[float]] = {v.name: [] for v in bench.variants}
    for i in range(bench.plan.starts):
        order = bench.variants if i % 2 == 0 else list(reversed(bench.variants))
        for variant in order:
            with anyio.fail_after(SETUP_TIMEOUT):
                cold[variant.name].append(await stdio_cold_start(bench, variant))
                ready[variant.name].append(await http_ready(bench, variant))
    references = {}
    for label, code in (("python -c pass", "pass"), ('python -c "import mcp"', "import mcp")):
        runs = [await anyio.to_thread.run_sync(run_python, code, bench.workdir) for _ in range(bench.plan.starts)]
        peaks = [peak for _, peak in runs if peak is not None]
        references[label] = {
            "wall_ms": statistics.median(wall for wall, _ in runs) * 1000,
            "peak_rss_kib": max(peaks) if peaks else None,
        }
    return {
        "runs": bench.plan.starts,
        "stdio_cold_start_ms": {name: statistics.median(values) * 1000 for name, values in cold.items()},
        "http_ready_ms": {name: statistics.median(values) * 1000 for name, values in ready.items()},
        "references": references,
    }


# --- memory -----------------------------------------------------------------------------------


async def churn(transport: str, url: str, sessions: int, errlog: TextIO) -> float:
    """Open a session, initialize, one call, close, `sessions` times (RUN_CONCURRENCY at once); seconds."""

    async def one() -> None:
        async with contextlib.AsyncExitStack() as stack:
            streams = await transport_streams(stack, transport, url, errlog)
            call, _, _ = await open_session(stack, streams, "handshake")
            await call()

    return await run_batch(one, sessions, RUN_CONCURRENCY)


async def memory_run(bench: Bench, transport: str, variant: Variant) -> dict[str, Any]:
    """The proxy's RSS after a warm-up, after a long run in one session, and (HTTP) after many sessions."""
    plan = bench.plan
    async with connection(bench, transport, "handshake", variant, IN_FLIGHT) as conn:
        await run_batch(conn.call, RSS_WARMUP, 1)
        figures: dict[str, Any] = {"warm": read_rss(conn.pid), "long_run_calls": plan.long_run}
        figures["long_run_s"] = await run_batch(conn.call, plan.long_run, RUN_CONCURRENCY)
        figures["after_long_run"] = read_rss(conn.pid)
        if conn.url is not None:
            figures["sessions"] = plan.sessions
            figures["sessions_s"] = await churn(transport, conn.url, plan.sessions, bench.errlog)
            await anyio.sleep(1)  # the server closes what the clients left
            figures["after_sessions"] = read_rss(conn.pid)
        return figures


async def memory(bench: Bench, transport: str) -> dict[str, Any]:
    return {v.name: await memory_run(bench, transport, v) for v in bench.variants}


# --- report -----------------------------------------------------------------------------------


def versions() -> str:
    names = ("mcp", "uvicorn", "starlette", "httpx2", "anyio")
    found = ", ".join(f"{name} {metadata.version(name)}" for name in names)
    extras = ", ".join(
        f"{name} {'yes' if importlib.util.find_spec(name) else 'no'}" for name in ("uvloop", "httptools")
    )
    return f"{found}; importable: {extras}"


def machine() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "packages": versions(),
    }


def fmt(value: float | None, spec: str = ".2f", width: int = 9) -> str:
    return f"{'n/a' if value is None else format(value, spec):>{width}}"


def mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def latency_lines(cells: list[tuple[str, str, dict[str, Any] | Failure]], names: list[str]) -> list[str]:
    header = (
        f"{'transport':<16}{'era':<11}{'variant':<10}{'protocol':<12}{'floor p50':>10}{'p50':>8}{'p95':>8}"
        f"{'added p50':>11}{'list p50':>10}{'1C/list':>8}{'calls/s':>9}{'floor/s':>9}{'ratio':>7}"
    )
    lines = [header, "-" * len(header)]
    for transport, era, cell in cells:
        if isinstance(cell, Failure):
            lines.append(f"{transport:<16}{era:<11}n/a: {cell.reason}")
            continue
        call, listing, rate = cell["call"], cell["list"], cell["throughput"]
        for name in names:
            lines.append(
                f"{transport:<16}{era:<11}{name:<10}{cell['protocol'][name]:<12}{call['floor_p50']:>10.2f}"
                f"{call[name]['p50']:>8.2f}{call[name]['p95']:>8.2f}{call[name]['added_p50']:>+11.2f}"
                f"{listing[name]:>10.2f}{listing['onec_calls']:>8}{rate[name]['calls_s']:>9.0f}"
                f"{rate['floor_calls_s']:>9.0f}{rate[name]['ratio']:>7.2f}"
            )
    return lines


def cap_lines(cells: list[tuple[str, str, dict[str, Any] | Failure]], names: list[str]) -> list[str]:
    header = (
        f"{'transport':<16}{'variant':<10}{'calls/s':>9}{'floor/s':>9}{'ratio':>7}"
        f"{f'cap {IN_FLIGHT} calls/s':>16}{'cost':>8}"
    )
    lines = [header, "-" * len(header)]
    for transport, era, cell in cells:
        if era != "handshake":
            continue
        if isinstance(cell, Failure):
            lines.append(f"{transport:<16}n/a: {cell.reason}")
            continue
        rate = cell[DEFAULT_CAP]
        for name in names:
            lines.append(
                f"{transport:<16}{name:<10}{rate[name]['calls_s']:>9.0f}{rate['floor_calls_s']:>9.0f}"
                f"{rate[name]['ratio']:>7.2f}{rate[name]['wide_calls_s']:>16.0f}{rate[name]['cost_pct']:>+7.0f}%"
            )
    return lines


def startup_lines(start: dict[str, Any] | Failure, names: list[str]) -> list[str]:
    if isinstance(start, Failure):
        return [f"n/a: {start.reason}"]
    runs = start["runs"]
    lines = [
        f"stdio cold start, spawn -> first tools/list (median of {runs}): "
        + ", ".join(f"{name} {start['stdio_cold_start_ms'][name]:.0f} ms" for name in names),
        f"HTTP ready, spawn -> first 200 from /health/live (median of {runs}): "
        + ", ".join(f"{name} {start['http_ready_ms'][name]:.0f} ms" for name in names),
    ]
    for label, ref in start["references"].items():
        peak = mib(ref["peak_rss_kib"])
        lines.append(f"reference {label}: {ref['wall_ms']:.0f} ms, peak RSS {fmt(peak, '.1f', 0)} MiB")
    return lines


def memory_lines(rows: list[tuple[str, dict[str, Any] | Failure]], names: list[str], plan: Plan) -> list[str]:
    header = (
        f"{'transport':<16}{'variant':<10}{'warm RSS':>9}{f'after {plan.long_run:,}':>14}{'growth':>8}{'took s':>8}"
        f"{f'after {plan.sessions:,} sess':>17}{'growth':>8}{'took s':>8}{'VmHWM':>8}"
    )
    lines = [header, "-" * len(header) + "   (MiB)"]
    for transport, cell in rows:
        if isinstance(cell, Failure):
            lines.append(f"{transport:<16}n/a: {cell.reason}")
            continue
        for name in names:
            lines.append(f"{transport:<16}{name:<10}" + memory_row(cell[name]))
    return lines


def memory_row(run: dict[str, Any]) -> str:
    def rss(key: str) -> float | None:
        figures = run.get(key)
        return None if figures is None else mib(figures["VmRSS"])

    def growth(a: str, b: str) -> float | None:
        first, second = rss(a), rss(b)
        return None if first is None or second is None else second - first

    last = run.get("after_sessions") or run.get("after_long_run")
    hwm = None if last is None else mib(last["VmHWM"])
    cells = [
        fmt(rss("warm"), ".1f"),
        fmt(rss("after_long_run"), ".1f", 14),
        fmt(growth("warm", "after_long_run"), "+.1f", 8),
        f"{run['long_run_s']:>8.1f}",
    ]
    if "sessions_s" in run:
        cells += [
            fmt(rss("after_sessions"), ".1f", 17),
            fmt(growth("after_long_run", "after_sessions"), "+.1f", 8),
            f"{run['sessions_s']:>8.1f}",
        ]
    else:
        cells += [f"{'-':>17}", f"{'-':>8}", f"{'-':>8}"]
    return "".join([*cells, fmt(hwm, ".1f", 8)])


def comparison_lines(results: dict[str, Any]) -> list[str]:
    """before / after / delta for the headline figures (a --baseline-src run)."""
    rows: list[tuple[str, float | None, float | None, float | None]] = []
    for cell in results["cells"]:
        if "failure" in cell:
            continue
        label = f"{cell['transport']} {cell['era']}"
        call, listing, rate = cell["call"], cell["list"], cell["throughput"]
        before, after = call["baseline"]["added_p50"], call["current"]["added_p50"]
        rows.append((f"{label}: added p50 ms", before, after, call["delta_p50"]))
        rows.append((f"{label}: tools/list p50 ms", listing["baseline"], listing["current"], listing["delta_p50"]))
        before, after = rate["baseline"]["ratio"], rate["current"]["ratio"]
        rows.append((f"{label}: calls/s ratio to floor", before, after, after - before))
    for cell in results["cells"]:
        if DEFAULT_CAP in cell:
            before, after = cell[DEFAULT_CAP]["baseline"]["ratio"], cell[DEFAULT_CAP]["current"]["ratio"]
            rows.append((f"{cell['transport']} default cap: calls/s ratio to floor", before, after, after - before))
    start = results.get("startup")
    if start and "failure" not in start:
        for key, label in (("stdio_cold_start_ms", "stdio cold start ms"), ("http_ready_ms", "HTTP ready ms")):
            before, after = start[key]["baseline"], start[key]["current"]
            rows.append((label, before, after, after - before))
    for transport, cell in results["memory"].items():
        if "failure" not in cell:
            for key in ("warm", "after_long_run", "after_sessions"):
                if cell["current"].get(key) and cell["baseline"].get(key):
                    before, after = cell["baseline"][key]["VmRSS"] / 1024, cell["current"][key]["VmRSS"] / 1024
                    rows.append((f"{transport}: RSS {key} MiB", before, after, after - before))
    header = f"{'figure':<52}{'before':>10}{'after':>10}{'delta':>10}"
    lines = [header, "-" * len(header)]
    for label, before, after, delta in rows:
        lines.append(f"{label:<52}{fmt(before, '.2f', 10)}{fmt(after, '.2f', 10)}{fmt(delta, '+.2f', 10)}")
    lines.append(
        "(the latency deltas are medians of paired current - baseline differences; the others are differences)"
    )
    return lines


def as_json(value: dict[str, Any] | Failure) -> dict[str, Any]:
    return {"failure": value.reason} if isinstance(value, Failure) else value


# --- main -------------------------------------------------------------------------------------


def inspect_source(variant: Variant, workdir: str) -> Variant:
    """Ask a subprocess with the variant's environment where `py_server` comes from."""
    code = "import py_server; print(py_server.__file__); print(py_server.__version__)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(variant), cwd=workdir, capture_output=True, text=True, check=True
    )
    source, version = result.stdout.split()[:2]
    if variant.pythonpath and not Path(source).resolve().is_relative_to(Path(variant.pythonpath).resolve()):
        raise SystemExit(f"PYTHONPATH={variant.pythonpath} still imports py_server from {source}")
    return Variant(variant.name, variant.pythonpath, source, version)


def git_revision(source: str) -> str:
    """The short commit of the tree `source` is in, '+' when it has uncommitted changes; '' when unknown."""
    folder = str(Path(source).parent)
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        head = subprocess.run(
            ["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", folder, "diff", "--quiet", "HEAD", "--", "."], capture_output=True)
        return head + ("+" if dirty.returncode else "")
    return ""


@dataclass
class Outcome:
    cells: list[tuple[str, str, dict[str, Any] | Failure]] = field(default_factory=list)
    start: dict[str, Any] | Failure | None = None
    memory: list[tuple[str, dict[str, Any] | Failure]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "cells": [{"transport": t, "era": e, **as_json(cell)} for t, e, cell in self.cells],
            "startup": None if self.start is None else as_json(self.start),
            "memory": {transport: as_json(cell) for transport, cell in self.memory},
        }


async def run(bench: Bench, sections: set[str]) -> Outcome:
    outcome = Outcome()
    if "calls" in sections:
        print("calls:")
        for transport in TRANSPORTS:
            for era in ERAS:
                measure = functools.partial(transport_cell, bench, transport, era)
                outcome.cells.append((transport, era, await guarded(f"{transport} {era}", measure, bench.errlog)))
    if "start" in sections:
        print("start-up:")
        outcome.start = await guarded("cold start and ready time", functools.partial(startup, bench), bench.errlog)
    if "memory" in sections:
        print("memory:")
        for transport in TRANSPORTS:
            measure = functools.partial(memory, bench, transport)
            outcome.memory.append((transport, await guarded(f"{transport} RSS", measure, bench.errlog)))
    return outcome


def report(bench: Bench, outcome: Outcome) -> None:
    names = [v.name for v in bench.variants]
    plan = bench.plan
    if outcome.cells:
        print(f"\ntools/call {TOOL} (ms): {plan.pairs} alternating pairs per cell; proxy cap {IN_FLIGHT}")
        print("added p50 = median of paired (proxy - floor); 1C/list = 1C requests during the tools/list batch;")
        print(f"calls/s, floor/s, ratio: {IN_FLIGHT} calls in flight on one session, {plan.throughput_calls} per batch")
        print("\n".join(latency_lines(outcome.cells, names)))
        print(
            f"\nthroughput with the default 1C cap (MCP_ONEC_MAX_CONCURRENCY unset) against cap {IN_FLIGHT}, "
            f"alternating; handshake era, {IN_FLIGHT} in flight; cost = throughput lost to the cap"
        )
        print("\n".join(cap_lines(outcome.cells, names)))
    if outcome.start is not None:
        print("\nstart-up")
        print("\n".join(startup_lines(outcome.start, names)))
    if outcome.memory:
        print(
            f"\nproxy RSS (MiB) after {RSS_WARMUP} calls, after {plan.long_run:,} more in one session "
            f"({RUN_CONCURRENCY} in flight), after {plan.sessions:,} sessions opened and closed (HTTP)"
        )
        print("\n".join(memory_lines(outcome.memory, names, plan)))
    if len(names) > 1:
        print("\nbefore (baseline) / after (current)")
        print("\n".join(comparison_lines(outcome.as_json())))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls, starts and sessions (smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--baseline-src", type=Path, default=None, help="a source tree to compare: DIR/src is imported")
    parser.add_argument("--requests", type=int, default=None, help="alternating pairs per cell (300, quick 100)")
    parser.add_argument(
        "--throughput-calls", type=int, default=None, help="calls per throughput batch (600, quick 160)"
    )
    parser.add_argument("--starts", type=int, default=None, help="cold starts and ready times (5, quick 3)")
    parser.add_argument("--long-run", type=int, default=None, help="calls for the RSS long run (10000, quick 1000)")
    parser.add_argument("--sessions", type=int, default=None, help="sessions for the RSS churn (1000, quick 100)")
    parser.add_argument("--onec-latency", type=float, default=0.0, help="ms the emulator waits per 1C call (0)")
    parser.add_argument(
        "--only", nargs="+", choices=("calls", "start", "memory"), default=None, help="run only these sections"
    )
    return parser.parse_args()


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        pairs=args.requests or (100 if quick else 300),
        throughput_calls=args.throughput_calls or (160 if quick else 600),
        starts=args.starts or (3 if quick else 5),
        long_run=args.long_run or (1000 if quick else 10_000),
        sessions=args.sessions or (100 if quick else 1000),
        onec_latency=args.onec_latency,
    )


def make_variants(baseline: Path | None, workdir: str) -> list[Variant]:
    variants = [Variant("current", None)]
    if baseline is not None:
        src = baseline.resolve() / "src"
        if not (src / "py_server").is_dir():
            raise SystemExit(f"--baseline-src {baseline}: no src/py_server there")
        variants.insert(0, Variant("baseline", str(src)))
    return [inspect_source(v, workdir) for v in variants]


def header(variants: list[Variant], plan: Plan, info: dict[str, Any]) -> list[str]:
    lines = [
        f"bench_perf {info['date']}",
        f"machine: {info['cpus']} CPUs, Python {info['python']}, {info['platform']}",
        f"packages: {info['packages']}",
    ]
    for v in variants:
        revision = git_revision(v.source)
        lines.append(f"{v.name}: py_server {v.version} from {v.source}" + (f" (git {revision})" if revision else ""))
    lines.append(
        f"plan: {plan.pairs} pairs per cell, 2 x {plan.throughput_calls} calls per throughput figure,"
        f" {plan.starts} starts, long run {plan.long_run:,} calls, {plan.sessions:,} sessions;"
        f" 1C latency {plan.onec_latency:g} ms"
    )
    return lines


@contextlib.contextmanager
def bench_context(args: argparse.Namespace) -> Iterator[tuple[OneCEmulator, str, TextIO]]:
    with (
        BenchEmulator() as emulator,
        tempfile.TemporaryDirectory(prefix="bench-perf-") as workdir,
        open(Path(workdir) / "proxy-stderr.log", "w+", encoding="utf-8") as errlog,
    ):
        emulator.state.latency = args.onec_latency / 1000
        yield emulator, workdir, errlog


async def amain(args: argparse.Namespace, emulator: OneCEmulator, workdir: str, errlog: TextIO) -> dict[str, Any]:
    plan = make_plan(args)
    variants = make_variants(args.baseline_src, workdir)
    info = machine()
    print("\n".join(header(variants, plan, info)), flush=True)
    sections = set(args.only or ("calls", "start", "memory"))
    async with floor_client(emulator) as floor:
        bench = Bench(emulator, floor, workdir, errlog, variants, plan)
        try:
            outcome = await run(bench, sections)
        finally:
            errlog.seek(0)
            tail = errlog.read()[-3000:]
            if tail.strip():
                print(f"\nstderr of the proxy subprocesses (tail):\n{tail}", file=sys.stderr)
    report(bench, outcome)
    return {
        "machine": info,
        "plan": asdict(plan) | {"in_flight": IN_FLIGHT, "run_concurrency": RUN_CONCURRENCY, "rss_warmup": RSS_WARMUP},
        "variants": [asdict(v) for v in variants],
        **outcome.as_json(),
    }


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    with bench_context(args) as (emulator, workdir, errlog):
        results = anyio.run(amain, args, emulator, workdir, errlog, backend="asyncio")
    results["total_s"] = time.perf_counter() - started
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"\nJSON written to {args.json}")
    print(f"total run time: {results['total_s']:.0f} s")


if __name__ == "__main__":
    main()
