"""Prometheus metrics: one registry per proxy, made with `prometheus_client`.

Counted where the request path already passes: every MCP request once (`MCPProxy` observes each
handler), every exchange with 1C once (`OneCClient` reports each JSON-RPC call and probe). The
rest is read when Prometheus scrapes: calls in flight and waiting, open sessions, catalog sizes
and ages.

Label values are bounded: `method` is an MCP or 1C method name from a fixed set, `tool` a name
from a catalog or a local tool (any other name is `unknown`), `base` a configured base name
(`all` for lists of the endpoint that serves every base), `outcome` one of a few words. Never a
client's raw input, a credential or a user's name as a label of a per-call series (the per-user
counter takes the authenticated subject only).

    metrics = Metrics(proxy)
    metrics.request("tools/call", tool="get_metadata", base="default", outcome="ok", seconds=0.004)
    body, content_type = metrics.render()
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .catalog import KINDS

if TYPE_CHECKING:
    from .mcp_server import MCPProxy

__all__ = ["UNKNOWN", "Metrics", "OneCOutcome"]

UNKNOWN = "unknown"
OneCOutcome = Literal["ok", "rpc_error", "http_error", "timeout", "unreachable", "busy"]
# MCP methods the proxy answers; anything else is counted as "other".
MCP_METHODS = frozenset({"tools/list", "tools/call", "resources/list", "resources/read", "prompts/list", "prompts/get"})
ONEC_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "prompts/list",
        "prompts/get",
    }
)
# From a cached list (well under a millisecond) to a long 1C report (minutes).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, proxy: MCPProxy) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._requests = Counter(
            "onec_mcp_requests", "MCP requests answered", ["method", "tool", "outcome", "base"], registry=registry
        )
        self._request_seconds = Histogram(
            "onec_mcp_request_duration_seconds", "Time to answer an MCP request", ["method"], buckets=BUCKETS,
            registry=registry,
        )  # fmt: skip
        self._user_requests = Counter(
            "onec_mcp_user_requests", "MCP requests by authenticated user", ["user", "method"], registry=registry
        )
        self._onec_requests = Counter(
            "onec_mcp_onec_requests", "Requests to 1C", ["method", "outcome", "base"], registry=registry
        )
        self._onec_seconds = Histogram(
            "onec_mcp_onec_request_duration_seconds", "Time 1C took to answer", ["method"], buckets=BUCKETS,
            registry=registry,
        )  # fmt: skip
        self._onec_up = Gauge(
            "onec_mcp_onec_up", "1 when the last exchange with 1C got a JSON-RPC answer", ["base"], registry=registry
        )
        registry.register(_StateCollector(proxy))

    # --- what the request path reports --------------------------------------------------

    def request(self, method: str, *, tool: str, base: str, outcome: str, seconds: float, user: str | None) -> None:
        method = method if method in MCP_METHODS else "other"
        self._requests.labels(method, tool, outcome, base).inc()
        self._request_seconds.labels(method).observe(seconds)
        if user is not None:
            self._user_requests.labels(user, method).inc()

    def onec(self, base: str, method: str, outcome: OneCOutcome, seconds: float) -> None:
        """One exchange with 1C. Up when 1C gave a JSON-RPC answer; down when it could not be reached,
        timed out or answered with an error page; unchanged when the call never left (busy)."""
        method = method if method in ONEC_METHODS else "other"
        self._onec_requests.labels(method, outcome, base).inc()
        if outcome == "busy":
            return
        self._onec_seconds.labels(method).observe(seconds)
        self._onec_up.labels(base).set(1 if outcome in ("ok", "rpc_error") else 0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _StateCollector(Collector):
    """Read at scrape time: nothing to keep in step between scrapes."""

    def __init__(self, proxy: MCPProxy) -> None:
        self._proxy = proxy

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # the names are known only when collected; nothing to check in advance

    def collect(self) -> Iterator[GaugeMetricFamily]:
        proxy = self._proxy
        in_flight = GaugeMetricFamily("onec_mcp_onec_in_flight", "Calls running in 1C", labels=["base"])
        waiting = GaugeMetricFamily("onec_mcp_onec_queue_waiting", "Calls waiting for a 1C slot", labels=["base"])
        items = GaugeMetricFamily("onec_mcp_catalog_items", "Items in the cached 1C catalog", labels=["kind", "base"])
        age = GaugeMetricFamily(
            "onec_mcp_catalog_age_seconds", "Seconds since the 1C catalog was fetched", labels=["kind", "base"]
        )
        identities = GaugeMetricFamily(
            "onec_mcp_onec_personal_connections", "Personal 1C connections open (passthrough)", labels=["base"]
        )
        now = time.monotonic()
        for name, base in proxy.bases.items():
            upstreams = base.upstreams
            in_flight.add_metric([name], upstreams.in_flight)
            waiting.add_metric([name], upstreams.queued)
            identities.add_metric([name], upstreams.size)
            catalog = upstreams.service.catalog
            for kind in KINDS:
                section = catalog.section(kind)
                items.add_metric([kind, name], len(section.items))
                if section.loaded_at is not None:
                    age.add_metric([kind, name], round(now - section.loaded_at, 1))
        sessions = GaugeMetricFamily("onec_mcp_sessions", "Open MCP sessions and streams", labels=["transport"])
        for transport, count in proxy.sessions.counts().items():
            sessions.add_metric([transport], count)
        yield from (in_flight, waiting, items, age, identities, sessions)
