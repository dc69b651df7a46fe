"""What serving every base together costs: the combined endpoint against a per-base endpoint.

    python bench/bench_bases.py                 # 5 rounds of 300 calls per endpoint (~30 s)
    python bench/bench_bases.py --quick         # 2 rounds of 100

Two demo 1C bases (emulators) on loopback behind one proxy with a bases file, the proxy under
uvicorn in a subprocess (`python -m py_server http`), one Streamable HTTP session per endpoint
(the MCP SDK's client). Each round calls `tools/call` sequentially on `/bases/erp/mcp`
(`get_metadata`) and on `/mcp` (`erp__get_metadata`), then `tools/list` on both, then the two
calls alternately, one pair at a time; the overhead is the median of the pairs' differences (the
machine's drift hits both calls of a pair alike), the other figures the medians over rounds of
each round's p50. The target is a combined-endpoint overhead of at most 0.2 ms p50. Prints
figures; not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from py_server.config import ENV_NAMES
from py_server.demo.onec_emulator import EmulatorState, OneCEmulator

PASSWORD = "bench"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def proxy_process(bases_file: Path, workdir: str) -> Iterator[str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ENV_NAMES and not key.startswith("MCP_")}
    env.update(
        MCP_BASES_FILE=str(bases_file),
        MCP_PORT=str(port),
        MCP_LOG_LEVEL="WARNING",
        MCP_RAG_BACKEND="off",
        MCP_CATALOG_TTL="600",
        MCP_ONEC_MAX_CONCURRENCY="16",
        BENCH_PW=PASSWORD,
        PYTHONIOENCODING="utf-8",
    )
    command = [sys.executable, "-m", "py_server", "http"]  # the workdir has no .env
    process = subprocess.Popen(command, env=env, cwd=workdir, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the proxy did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def session(url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as opened,
    ):
        await opened.initialize()
        yield opened


async def p50_ms(op: Callable[[], Awaitable[Any]], requests: int) -> float:
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        await op()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def run(url: str, rounds: int, requests: int) -> None:
    figures: dict[str, list[float]] = {key: [] for key in ("base call", "all call", "base list", "all list")}
    async with session(f"{url}/bases/erp/mcp") as one, session(f"{url}/mcp") as every:

        async def call_one() -> None:
            assert not (await one.call_tool("get_metadata", {})).is_error

        async def call_every() -> None:
            assert not (await every.call_tool("erp__get_metadata", {})).is_error

        for op in (call_one, call_every):  # warm-up
            await p50_ms(op, 20)
        differences: list[float] = []
        for _ in range(rounds):
            figures["base call"].append(await p50_ms(call_one, requests))
            figures["all call"].append(await p50_ms(call_every, requests))
            figures["base list"].append(await p50_ms(one.list_tools, requests // 2))
            figures["all list"].append(await p50_ms(every.list_tools, requests // 2))
            # Call by call, alternating: the machine's drift hits both sides of each pair alike.
            for _ in range(requests):
                differences.append(await p50_ms(call_every, 1) - await p50_ms(call_one, 1))
    median = {key: statistics.median(values) for key, values in figures.items()}
    print(f"rounds {rounds} x {requests} sequential calls, Streamable HTTP, proxy in its own process")
    print(f"tools/call p50  /bases/erp/mcp {median['base call']:.2f} ms   /mcp {median['all call']:.2f} ms")
    print(
        f"  combined endpoint overhead, median of {len(differences)} alternating pairs: "
        f"{statistics.median(differences):+.2f} ms (target <= 0.2 ms)"
    )
    print(f"tools/list p50  /bases/erp/mcp {median['base list']:.2f} ms   /mcp {median['all list']:.2f} ms (2 bases)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, requests = (2, 100) if args.quick else (5, 300)
    with (
        OneCEmulator(EmulatorState(password=PASSWORD)) as erp,
        OneCEmulator(EmulatorState(password=PASSWORD)) as zup,
        tempfile.TemporaryDirectory() as workdir,
    ):
        bases = Path(workdir) / "bases.toml"
        bases.write_text(
            "".join(
                f'[bases.{name}]\nurl = "{emulator.url}"\nusername = "demo"\npassword_env = "BENCH_PW"\n\n'
                for name, emulator in (("erp", erp), ("zup", zup))
            ),
            encoding="utf-8",
        )
        with proxy_process(bases, workdir) as url:
            anyio.run(run, url, rounds, requests)


if __name__ == "__main__":
    main()
