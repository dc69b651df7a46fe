"""Memory, /health and idle figures of onec-mcp-proxy under misuse, against the demo 1C emulator.

    python bench/bench_hardening.py                          # everything (~8 min, 5 of them the idle wait)
    python bench/bench_hardening.py --quick                  # smoke run (~1 min)
    python bench/bench_hardening.py --only sessions --sessions 5000 --idle-timeout 30
    python bench/bench_hardening.py --only idle --idle-seconds 600

The HTTP proxy runs as a real `python -m py_server http` subprocess, so its RSS is its own; the
emulator and every client are in this process, on loopback. Measurements (all by default):

  sessions      proxy RSS after opening and abandoning N Streamable HTTP sessions, then N SSE sessions
  health-flood  tools/call latency and throughput, alone and beside a paced /health flood
  idle          the 1C requests a proxy makes while no client is connected

Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from bench_proxy import TOOL, checked_call, clean_environment, environment, proxy_settings, run_batch, spawn_http_proxy
from py_server.config import Settings
from py_server.demo.onec_emulator import OneCEmulator

MEASUREMENTS = ("sessions", "health-flood", "idle")
PROTOCOL = "2025-11-25"  # the handshake era: stateful Streamable HTTP sessions with Mcp-Session-Id
OPEN_CONCURRENCY = 50  # sessions being opened at once
WARM_UP_SESSIONS = 20  # of each kind, before the baseline RSS
SETTLE_SECONDS = 5.0
PROBE_SAMPLE = 20  # abandoned Streamable HTTP sessions asked for a ping at the end
FLOOD_RPS = 200.0
FLOOD_MAX_IN_FLIGHT = 64
FLOOD_RAMP_SECONDS = 1.0  # the flood runs this long before the measured calls start
THROUGHPUT_CONCURRENCY = 16
HTTP_TIMEOUT = 30.0
JSON_AND_SSE = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "bench-hardening", "version": "0"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


@dataclass
class Context:
    emulator: OneCEmulator
    errlog: TextIO  # stderr of every proxy subprocess
    workdir: str  # their working directory: no stray .env
    args: argparse.Namespace


# --- the proxy process ----------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    pid: int


@contextlib.asynccontextmanager
async def proxy(ctx: Context, **overrides: Any) -> AsyncIterator[Proxy]:
    settings = proxy_settings(ctx.emulator, **overrides)
    async with spawn_http_proxy(settings, ctx.workdir, ctx.errlog) as (url, process):
        yield Proxy(url, process.pid)


def proc_status(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (Linux); None elsewhere."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return None


def rss_kib(pid: int) -> int | None:
    """Resident set size of `pid`: psutil when it is installed, else /proc, else None."""
    try:
        import psutil  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return proc_status(pid, "VmRSS")
    try:
        return int(psutil.Process(pid).memory_info().rss // 1024)
    except psutil.Error:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far, from /proc/<pid>/stat; None elsewhere."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


@dataclass
class CpuMeter:
    """Share of one CPU the proxy and this bench process (emulator + clients) used since `start`.

    Tells which side was the bottleneck: on loopback a figure may be bound by the client, not the proxy.
    """

    pid: int
    wall: float = 0.0
    proxy: float | None = None
    bench: float = 0.0

    def start(self) -> CpuMeter:
        self.wall, self.proxy, self.bench = time.perf_counter(), cpu_seconds(self.pid), time.process_time()
        return self

    def report(self) -> str:
        wall = time.perf_counter() - self.wall
        now = cpu_seconds(self.pid)
        proxy = "n/a" if now is None or self.proxy is None else f"{(now - self.proxy) / wall:.0%}"
        return f"CPU: proxy {proxy}, bench process {(time.process_time() - self.bench) / wall:.0%}"


def loopback_client(connections: int) -> httpx.AsyncClient:
    """An httpx client with a small pool of its own, one per concurrent task.

    One shared pool of many connections makes httpx itself the bottleneck (its pool scan is
    quadratic, encode/httpx#3215). Plain http on loopback: verify=False only skips loading a CA
    bundle for every client.
    """
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=HTTP_TIMEOUT, verify=False)


def open_fds(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    return None


@dataclass
class MemoryLog:
    """RSS (and open file descriptors) of the proxy at named points."""

    pid: int
    points: list[tuple[str, int | None, int | None]] = field(default_factory=list)

    def mark(self, label: str) -> None:
        rss, fds = rss_kib(self.pid), open_fds(self.pid)
        base = self.points[0][1] if self.points else None
        delta = f" ({(rss - base) / 1024:+.1f} MiB vs baseline)" if rss is not None and base is not None else ""
        fd_text = f"; {fds} open fds" if fds is not None else ""
        print(f"  RSS {mib(rss)}{delta}{fd_text}  <- {label}", flush=True)
        self.points.append((label, rss, fds))


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not samples:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(samples)))
    return samples[rank - 1] * 1000


def counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in sorted(counter.items())) or "none"


# --- 1. abandoned sessions ------------------------------------------------------------------


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream response; comments (pings) skipped."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def has_result(body: str, request_id: int) -> bool:
    """Whether a JSON or SSE body carries the JSON-RPC result of `request_id`."""
    for line in body.splitlines():
        text = line.removeprefix("data:").strip()
        with contextlib.suppress(ValueError):
            message = json.loads(text)
            if isinstance(message, dict) and message.get("id") == request_id and "result" in message:
                return True
    return False


@dataclass
class SessionBatch:
    kind: str
    outcomes: Counter[str] = field(default_factory=Counter)  # every HTTP status and error seen, by step
    accepted: int = 0
    refused: int = 0  # HTTP 503 on the opening request
    session_ids: list[str] = field(default_factory=list)  # Streamable HTTP only
    samples: list[float] = field(default_factory=list)  # seconds to open each session
    wall: float = 0.0
    cpu: str = ""

    def report(self) -> str:
        rate = len(self.samples) / self.wall if self.wall else math.nan
        return (
            f"  {self.kind}: {self.accepted} accepted, {self.refused} refused (503), "
            f"{len(self.samples) - self.accepted - self.refused} other; "
            f"{rate:.0f} opened/s, open p50 {percentile(self.samples, 50):.1f} ms p95 "
            f"{percentile(self.samples, 95):.1f} ms; {self.cpu}\n    statuses: {counts(self.outcomes)}"
        )


async def open_streamable(client: httpx.AsyncClient, url: str, batch: SessionBatch) -> None:
    """initialize + notifications/initialized over /mcp, then walk away (no DELETE)."""
    try:
        response = await client.post(f"{url}/mcp", json=INITIALIZE, headers=JSON_AND_SSE)
        batch.outcomes[f"initialize {response.status_code}"] += 1
        session_id = response.headers.get("mcp-session-id")
        if response.status_code == 503:
            batch.refused += 1
        if response.status_code != 200 or session_id is None:
            return
        if not has_result(response.text, 1):
            batch.outcomes["initialize without a result"] += 1
            return
        headers = {**JSON_AND_SSE, "Mcp-Session-Id": session_id, "Mcp-Protocol-Version": PROTOCOL}
        response = await client.post(f"{url}/mcp", json=INITIALIZED, headers=headers)
        batch.outcomes[f"initialized {response.status_code}"] += 1
        if response.status_code == 202:
            batch.accepted += 1
            batch.session_ids.append(session_id)
    except httpx.HTTPError as exc:
        batch.outcomes[f"error {type(exc).__name__}"] += 1


async def open_sse(client: httpx.AsyncClient, url: str, batch: SessionBatch) -> None:
    """GET /sse, initialize + notifications/initialized on its /messages/ URL, then hang up."""
    try:
        async with client.stream("GET", f"{url}/sse", headers={"Accept": "text/event-stream"}) as stream:
            batch.outcomes[f"GET /sse {stream.status_code}"] += 1
            if stream.status_code == 503:
                batch.refused += 1
            if stream.status_code != 200:
                return
            async with contextlib.aclosing(sse_events(stream)) as events:
                event, endpoint = await anext(events, ("", ""))
                if event != "endpoint":
                    batch.outcomes["no endpoint event"] += 1
                    return
                response = await client.post(f"{url}{endpoint}", json=INITIALIZE)
                batch.outcomes[f"POST initialize {response.status_code}"] += 1
                if response.status_code != 202:
                    return
                async for event, data in events:
                    if event == "message" and has_result(data, 1):
                        break
                else:
                    batch.outcomes["stream ended before the initialize result"] += 1
                    return
                response = await client.post(f"{url}{endpoint}", json=INITIALIZED)
                batch.outcomes[f"POST initialized {response.status_code}"] += 1
                if response.status_code == 202:
                    batch.accepted += 1
    except httpx.HTTPError as exc:
        batch.outcomes[f"error {type(exc).__name__}"] += 1


async def open_sessions(url: str, pid: int, kind: str, n: int) -> SessionBatch:
    """Open `n` sessions of `kind`, OPEN_CONCURRENCY at a time."""
    batch = SessionBatch(kind)
    opener = open_streamable if kind == "Streamable HTTP" else open_sse
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        # Two connections: an SSE session POSTs while its stream holds the other one.
        async with loopback_client(2) as client:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                await opener(client, url, batch)
                batch.samples.append(time.perf_counter() - started)

    cpu = CpuMeter(pid).start()
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(min(n, OPEN_CONCURRENCY)):
            tg.start_soon(worker)
    batch.wall = time.perf_counter() - started
    batch.cpu = cpu.report()
    batch.samples.sort()
    return batch


async def probe_sessions(url: str, session_ids: list[str]) -> Counter[str]:
    """Ping a sample of abandoned Streamable HTTP sessions: 200 = still alive, 404 = closed by the proxy."""
    step = max(1, len(session_ids) // PROBE_SAMPLE)
    statuses: Counter[str] = Counter()
    async with loopback_client(1) as client:
        for session_id in session_ids[::step][:PROBE_SAMPLE]:
            headers = {**JSON_AND_SSE, "Mcp-Session-Id": session_id, "Mcp-Protocol-Version": PROTOCOL}
            try:
                response = await client.post(f"{url}/mcp", json=PING, headers=headers)
                statuses[f"HTTP {response.status_code}"] += 1
            except httpx.HTTPError as exc:
                statuses[f"error {type(exc).__name__}"] += 1
    return statuses


async def bench_sessions(ctx: Context) -> None:
    n, idle_timeout = ctx.args.sessions, ctx.args.idle_timeout
    overrides: dict[str, Any] = {} if idle_timeout is None else {"session_idle_timeout": idle_timeout}
    settings = proxy_settings(ctx.emulator, **overrides)
    print(
        f"\n== sessions: {n} abandoned Streamable HTTP sessions (protocol {PROTOCOL}, no DELETE), then {n} SSE "
        f"sessions (closed), {OPEN_CONCURRENCY} being opened at once\n"
        f"   proxy started with MCP_MAX_SESSIONS={settings.max_sessions}, "
        f"MCP_SESSION_IDLE_TIMEOUT={settings.session_idle_timeout:g}",
        flush=True,
    )
    async with proxy(ctx, **overrides) as running:
        memory = MemoryLog(running.pid)
        for kind in ("Streamable HTTP", "SSE"):
            await open_sessions(running.url, running.pid, kind, WARM_UP_SESSIONS)
        await anyio.sleep(1)
        memory.mark(f"after warm-up ({WARM_UP_SESSIONS} sessions of each kind)")
        streamable = await open_sessions(running.url, running.pid, "Streamable HTTP", n)
        memory.mark(f"after {n} Streamable HTTP sessions")
        sse = await open_sessions(running.url, running.pid, "SSE", n)
        memory.mark(f"after {n} SSE sessions")
        await anyio.sleep(SETTLE_SECONDS)
        memory.mark(f"after {SETTLE_SECONDS:g} s settle")
        if idle_timeout is not None:
            await anyio.sleep(idle_timeout + 2)
            memory.mark(f"after the idle timeout ({idle_timeout:g} s + 2 s)")
        probe = await probe_sessions(running.url, streamable.session_ids)
        peak = proc_status(running.pid, "VmHWM")
        print(streamable.report())
        print(sse.report())
        print(f"  peak RSS (VmHWM): {mib(peak)}")
        sampled = sum(probe.values())
        print(f"  abandoned Streamable HTTP sessions pinged at the end (sample of {sampled}): {counts(probe)}")


# --- 2. tool calls beside a /health flood ---------------------------------------------------


@dataclass
class Flood:
    statuses: Counter[str] = field(default_factory=Counter)
    samples: list[float] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.samples) / (self.stopped - self.started) if self.stopped > self.started else math.nan

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200")


async def health_flood(url: str, rps: float, stop: anyio.Event, flood: Flood) -> None:
    """GET /health at `rps` until `stop` is set: a pacer hands out tickets to FLOOD_MAX_IN_FLIGHT workers."""
    tickets, inbox = anyio.create_memory_object_stream[None](0)
    interval = 1 / rps

    async def worker(inbox: MemoryObjectReceiveStream[None]) -> None:
        async with inbox, loopback_client(1) as client:
            async for _ in inbox:
                started = time.perf_counter()
                try:
                    response = await client.get(f"{url}/health")
                    flood.statuses[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    flood.statuses[f"error {type(exc).__name__}"] += 1
                flood.samples.append(time.perf_counter() - started)

    async with anyio.create_task_group() as tg:
        async with inbox:
            for _ in range(FLOOD_MAX_IN_FLIGHT):
                tg.start_soon(worker, inbox.clone())
        async with tickets:
            flood.started = due = time.perf_counter()
            while not stop.is_set():
                await tickets.send(None)  # blocks while every worker is busy: the achieved rate drops
                due = max(due + interval, time.perf_counter() - 1)  # no catch-up burst after a long stall
                await anyio.sleep(max(0.0, due - time.perf_counter()))
            flood.stopped = time.perf_counter()


@dataclass
class CallFigures:
    condition: str
    sequential: list[float]
    batch: list[float]
    batch_wall: float
    onec: Counter[str]
    window: float  # seconds the emulator counters cover
    cpu: str
    flood: Flood | None = None


async def measure_calls(
    ctx: Context, session: ClientSession, pid: int, condition: str, flood: Flood | None
) -> CallFigures:
    calls, op, state = ctx.args.calls, checked_call(session), ctx.emulator.state
    state.reset_counters()
    cpu = CpuMeter(pid).start()
    started = time.perf_counter()
    sequential, _ = await run_batch(op, calls, 1)
    batch, wall = await run_batch(op, calls, THROUGHPUT_CONCURRENCY)
    window = time.perf_counter() - started
    return CallFigures(condition, sequential, batch, wall, Counter(state.calls), window, cpu.report(), flood)


async def bench_health_flood(ctx: Context) -> None:
    rps, calls = ctx.args.health_rps, ctx.args.calls
    settings = proxy_settings(ctx.emulator)
    print(
        f"\n== health-flood: tools/call {TOOL} over one Streamable HTTP session, {calls} sequential then {calls} "
        f"with {THROUGHPUT_CONCURRENCY} in flight;\n   alone, then beside GET /health at {rps:g}/s "
        f"(at most {FLOOD_MAX_IN_FLIGHT} in flight); MCP_ONEC_MAX_CONCURRENCY={settings.onec_max_concurrency}",
        flush=True,
    )
    rows: list[CallFigures] = []
    async with (
        proxy(ctx) as running,
        httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http,
        streamable_http_client(f"{running.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=HTTP_TIMEOUT) as session,
    ):
        await session.initialize()
        await run_batch(checked_call(session), max(20, calls // 5), THROUGHPUT_CONCURRENCY)  # warm-up
        rows.append(await measure_calls(ctx, session, running.pid, "no load", None))
        flood, stop = Flood(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(health_flood, running.url, rps, stop, flood)
            await anyio.sleep(FLOOD_RAMP_SECONDS)
            rows.append(await measure_calls(ctx, session, running.pid, f"/health {rps:g}/s", flood))
            stop.set()
    print("\n".join(call_table(rows)))


def call_table(rows: list[CallFigures]) -> list[str]:
    header = (
        f"{'condition':<16}{'seq p50':>9}{'seq p95':>9}{'c16 p50':>9}{'c16 p95':>9}{'c16 calls/s':>13}"
        f"{'/health/s':>11}{'failed':>8}{'hp50 ms':>9}{'hp95 ms':>9}{'1C req/s':>10}"
    )
    lines = ["  (latencies in ms)", "  " + header, "  " + "-" * len(header)]
    for row in rows:
        flood = row.flood
        health = (
            f"{flood.rate:>11.0f}{flood.failed:>8}{percentile(sorted(flood.samples), 50):>9.1f}"
            f"{percentile(sorted(flood.samples), 95):>9.1f}"
            if flood is not None
            else f"{'-':>11}{'-':>8}{'-':>9}{'-':>9}"
        )
        lines.append(
            f"  {row.condition:<16}{percentile(row.sequential, 50):>9.2f}{percentile(row.sequential, 95):>9.2f}"
            f"{percentile(row.batch, 50):>9.2f}{percentile(row.batch, 95):>9.2f}"
            f"{len(row.batch) / row.batch_wall:>13.0f}{health}{sum(row.onec.values()) / row.window:>10.0f}"
        )
    for row in rows:
        lines.append(f"  '{row.condition}' ({row.window:.1f} s): {row.cpu}; 1C requests: {counts(row.onec)}")
        if row.flood is not None:
            lines.append(f"  /health statuses during the flood: {counts(row.flood.statuses)}")
    return lines


# --- 3. an idle proxy -----------------------------------------------------------------------


async def bench_idle(ctx: Context) -> None:
    seconds = ctx.args.idle_seconds
    ttl = Settings.model_fields["catalog_ttl"].default
    print(
        f"\n== idle: one session (initialize + tools/list, then closed), then {seconds:g} s with no client; "
        f"MCP_CATALOG_TTL={ttl:g} (the default)",
        flush=True,
    )
    state = ctx.emulator.state
    state.reset_counters()
    async with proxy(ctx, catalog_ttl=ttl) as running:
        async with (
            httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http,
            streamable_http_client(f"{running.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write, read_timeout_seconds=HTTP_TIMEOUT) as session,
        ):
            await session.initialize()
            await session.list_tools()
        print(f"  1C requests from start-up to the session's end: {counts(state.calls)}")
        state.reset_counters()
        rss_before = rss_kib(running.pid)
        started = time.perf_counter()
        print(f"  waiting {seconds:g} s ...", flush=True)
        await anyio.sleep(seconds)
        window = time.perf_counter() - started
        seen = Counter(state.calls)
        print(
            f"  1C requests during {window:.0f} s idle: {sum(seen.values())} "
            f"({sum(seen.values()) / window * 60:.1f}/min): {counts(seen)}"
        )
        print(f"  proxy RSS: {mib(rss_before)} at the start of the idle window, {mib(rss_kib(running.pid))} at its end")


# --- main -----------------------------------------------------------------------------------

BENCHES = {"sessions": bench_sessions, "health-flood": bench_health_flood, "idle": bench_idle}


async def run(ctx: Context, selected: Iterable[str]) -> None:
    try:
        for name in selected:
            await BENCHES[name](ctx)
    except BaseException:
        ctx.errlog.flush()
        ctx.errlog.seek(0)
        print("stderr of the proxy subprocesses:\n" + ctx.errlog.read()[-4000:], file=sys.stderr)
        raise


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", action="append", choices=MEASUREMENTS, help="run only this measurement (repeatable; default all)"
    )
    parser.add_argument("--sessions", type=int, default=None, help="sessions of each kind (default 2000, quick 200)")
    parser.add_argument("--calls", type=int, default=None, help="tools/call per health-flood cell (300, quick 60)")
    parser.add_argument("--health-rps", type=float, default=FLOOD_RPS, help=f"/health flood rate ({FLOOD_RPS:g})")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle window (default 300, quick 20)")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="pass MCP_SESSION_IDLE_TIMEOUT=N to the sessions proxy, then wait N+2 s and read RSS again",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers (smoke run)")
    args = parser.parse_args()
    args.sessions = args.sessions or (200 if args.quick else 2000)
    args.calls = args.calls or (60 if args.quick else 300)
    args.idle_seconds = args.idle_seconds if args.idle_seconds is not None else (20 if args.quick else 300)
    return args


def load_average() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    return "n/a"


def main() -> None:
    args = parse_args()
    selected = [name for name in MEASUREMENTS if name in (args.only or MEASUREMENTS)]
    started = time.perf_counter()
    print("\n".join(environment()))
    print(f"HTTP proxy as `python -m py_server http`; emulator and clients in this process; running: {selected}")
    print(f"load average: {load_average()} (timings are only comparable on an otherwise idle machine)")
    with (
        clean_environment(),
        OneCEmulator() as emulator,
        tempfile.TemporaryDirectory(prefix="bench-hardening-") as workdir,
        open(Path(workdir) / "proxy-stderr.log", "w+", encoding="utf-8") as errlog,
    ):
        anyio.run(run, Context(emulator, errlog, workdir, args), selected, backend="asyncio")
    print(f"\ntotal bench time: {time.perf_counter() - started:.1f} s; load average: {load_average()}")


if __name__ == "__main__":
    main()
