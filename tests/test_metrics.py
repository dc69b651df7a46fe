"""/metrics: Prometheus text from prometheus_client, bounded labels, guarded like every other path."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from py_server.demo.onec_emulator import OneCEmulator

from .conftest import http_proxy, proxy_settings, settings_env

pytestmark = pytest.mark.anyio

TOKEN = "metrics-test-token"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scrape: dict[Any, float], name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


@contextlib.asynccontextmanager
async def session_at(url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        streamable_http_client(f"{url}/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def scraped(url: str) -> str:
    async with httpx2.AsyncClient(timeout=10) as client:
        answer = await client.get(url)
    assert answer.status_code == 200
    return answer.text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_requests_and_1c_exchanges_are_counted_with_bounded_labels(emulator: OneCEmulator) -> None:
    settings = proxy_settings(emulator)
    with http_proxy(settings) as server:
        async with session_at(server.url) as session:
            await session.list_tools()
            assert not (await session.call_tool("get_metadata", {})).is_error
            with pytest.raises(MCPError):
                await session.call_tool("no_such_tool_" + "x" * 40, {})
        scrape = samples(await scraped(f"{server.url}/metrics"))
    base = "default"
    assert value(scrape, "onec_mcp_requests_total", method="tools/list", tool="", outcome="ok", base=base) == 1
    assert value(scrape, "onec_mcp_requests_total", method="tools/call", tool="get_metadata", outcome="ok", base=base)
    # A name no catalog has is "unknown": a client cannot mint label values.
    assert value(
        scrape, "onec_mcp_requests_total", method="tools/call", tool="unknown", outcome="error", base="default"
    )
    assert not any("no_such_tool" in str(labels) for _, labels in scrape)
    assert value(scrape, "onec_mcp_onec_requests_total", method="tools/call", outcome="ok", base=base) == 1
    assert value(scrape, "onec_mcp_onec_up", base=base) == 1
    assert value(scrape, "onec_mcp_catalog_items", kind="tools", base=base) == len(emulator.state.tools)
    assert value(scrape, "onec_mcp_onec_in_flight", base=base) == 0
    assert value(scrape, "onec_mcp_request_duration_seconds_count", method="tools/call") == 2
    assert ("onec_mcp_sessions", frozenset({("transport", "streamable_http")})) in scrape


async def test_1c_down_shows_as_onec_up_0(emulator: OneCEmulator) -> None:
    settings = proxy_settings(emulator)
    with http_proxy(settings) as server:
        async with session_at(server.url) as session:
            await session.call_tool("get_metadata", {})
            emulator.stop()
            assert (await session.call_tool("get_metadata", {})).is_error
        scrape = samples(await scraped(f"{server.url}/metrics"))
    assert value(scrape, "onec_mcp_onec_up", base="default") == 0
    assert value(scrape, "onec_mcp_onec_requests_total", method="tools/call", outcome="unreachable", base="default")
    assert value(
        scrape,
        "onec_mcp_requests_total",
        method="tools/call",
        tool="get_metadata",
        outcome="tool_error",
        base="default",
    )


def test_metrics_need_the_token_unless_public(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN)) as server:
        without = httpx.get(f"{server.url}/metrics")
        with_token = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with http_proxy(proxy_settings(emulator, auth_token=TOKEN, metrics_public=True)) as server:
        public = httpx.get(f"{server.url}/metrics")
        still_guarded = httpx.post(f"{server.url}/mcp", json={})
    assert without.status_code == 401
    assert with_token.status_code == 200 and with_token.headers["content-type"].startswith("text/plain")
    assert public.status_code == 200 and "onec_mcp_onec_up" in public.text
    assert still_guarded.status_code == 401
    assert TOKEN not in with_token.text


async def test_a_stdio_proxy_serves_metrics_only_on_the_port_it_is_given(emulator: OneCEmulator) -> None:
    port = free_port()
    settings = proxy_settings(emulator, metrics_port=port)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "py_server", "stdio"], env=settings_env(settings)
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.call_tool("get_metadata", {})
        scrape = samples(await scraped(f"http://127.0.0.1:{port}/metrics"))
    assert value(
        scrape, "onec_mcp_requests_total", method="tools/call", tool="get_metadata", outcome="ok", base="default"
    )


async def test_the_grafana_dashboard_uses_only_metrics_the_proxy_exports(emulator: OneCEmulator) -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parents[1] / "deploy/grafana/onec-mcp-proxy.json").read_text("utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b(onec_mcp_[a-z_]+)", expr)}
    settings = proxy_settings(emulator)
    with http_proxy(settings) as server:
        async with session_at(server.url) as session:
            await session.call_tool("get_metadata", {})
        exported = {sample_name for sample_name, _ in samples(await scraped(f"{server.url}/metrics"))}
    assert used and used <= exported, used - exported
