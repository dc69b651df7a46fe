"""Prometheus metrics: one registry per proxy, in `prometheus_client`'s text format.

Counted where the request path already passes: every MCP request once (`MCPProxy` observes each
handler), every exchange with 1C once (`OneCClient` reports each JSON-RPC call and probe). The
rest is read when Prometheus scrapes: calls in flight and waiting, open sessions, catalog sizes
and ages.

Counting is plain Python (a dict of numbers per metric, under one lock); `prometheus_client` is
imported only when the registry is first needed (the first scrape of /metrics, or
MCP_METRICS_PORT over stdio), so a proxy that nobody scrapes never loads it. The exposition is
what `prometheus_client`'s own Counter, Histogram and Gauge would give (`_total`, `_created`,
`_bucket`, ...).

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

import bisect
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from .catalog import KINDS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from .mcp_server import MCPProxy

__all__ = ["UNKNOWN", "Metrics", "OneCOutcome"]

UNKNOWN = "unknown"
OneCOutcome = Literal["ok", "rpc_error", "http_error", "timeout", "unreachable", "busy"]
# MCP methods the proxy answers; anything else is counted as "other".
MCP_METHODS = frozenset(
    {
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "prompts/list",
        "prompts/get",
    }
)
ONEC_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "prompts/list",
        "prompts/get",
    }
)
# From a cached list (well under a millisecond) to a long 1C report (minutes).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
MetricType = Literal["counter", "gauge", "histogram"]


class _Family:
    """One labelled counter, gauge or histogram, kept as plain numbers until it is scraped.

    Per label set: [value] for a counter or gauge; [count per bucket ..., sum] for a histogram.
    The caller holds the lock of the `Metrics` it belongs to."""

    def __init__(
        self, name: str, documentation: str, kind: MetricType, labelnames: Sequence[str], buckets: Sequence[float] = ()
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self.labelnames = tuple(labelnames)
        self.bounds = (*(float(b) for b in buckets), math.inf) if kind == "histogram" else ()
        self.series: dict[tuple[str, ...], list[float]] = {}
        self.created: dict[tuple[str, ...], float] = {}  # when each label set was first seen (`_created`)

    def _values(self, labels: tuple[str, ...]) -> list[float]:
        values = self.series.get(labels)
        if values is None:
            values = self.series[labels] = [0.0] * (len(self.bounds) + 1 if self.bounds else 1)
            self.created[labels] = time.time()
        return values

    def inc(self, *labels: str) -> None:
        self._values(labels)[0] += 1.0

    def set(self, value: float, *labels: str) -> None:
        self._values(labels)[0] = float(value)

    def observe(self, amount: float, *labels: str) -> None:
        values = self._values(labels)
        values[bisect.bisect_left(self.bounds, amount)] += 1.0  # the first bucket with amount <= bound
        values[-1] += amount

    def snapshot(self) -> list[tuple[tuple[str, ...], list[float], float]]:
        return [(labels, list(values), self.created[labels]) for labels, values in self.series.items()]

    def empty(self) -> Metric:
        from prometheus_client.metrics_core import Metric

        return Metric(self.name, self.documentation, self.kind)

    def to_metric(self, snapshot: list[tuple[tuple[str, ...], list[float], float]], use_created: bool) -> Metric:
        """The family as prometheus_client's own metric of this type would collect it."""
        from prometheus_client.utils import floatToGoString

        metric = self.empty()
        name = self.name
        for labels, values, created in snapshot:
            base = dict(zip(self.labelnames, labels, strict=True))
            if self.kind == "gauge":
                metric.add_sample(name, base, values[0])
                continue
            if self.kind == "counter":
                metric.add_sample(name + "_total", base, values[0])
            else:
                total = 0.0
                for bound, count in zip(self.bounds, values, strict=False):
                    total += count
                    metric.add_sample(name + "_bucket", {**base, "le": floatToGoString(bound)}, total)
                metric.add_sample(name + "_count", base, total)
                metric.add_sample(name + "_sum", base, values[-1])
            if use_created:
                metric.add_sample(name + "_created", base, created)
        return metric


class Metrics:
    def __init__(self, proxy: MCPProxy) -> None:
        self._proxy = proxy
        self._lock = threading.Lock()  # counted on the event loop, read by a scrape in any thread
        self._registry_lock = threading.Lock()  # counting goes on while the first scrape imports
        self._registry: CollectorRegistry | None = None
        self._requests = _Family(
            "onec_mcp_requests", "MCP requests answered", "counter", ["method", "tool", "outcome", "base"]
        )
        self._request_seconds = _Family(
            "onec_mcp_request_duration_seconds", "Time to answer an MCP request", "histogram", ["method"], BUCKETS
        )
        self._user_requests = _Family(
            "onec_mcp_user_requests", "MCP requests by authenticated user", "counter", ["user", "method"]
        )
        self._onec_requests = _Family(
            "onec_mcp_onec_requests", "Requests to 1C", "counter", ["method", "outcome", "base"]
        )
        self._onec_seconds = _Family(
            "onec_mcp_onec_request_duration_seconds", "Time 1C took to answer", "histogram", ["method"], BUCKETS
        )
        self._onec_up = _Family(
            "onec_mcp_onec_up", "1 when the last exchange with 1C got a JSON-RPC answer", "gauge", ["base"]
        )
        self._families = (
            self._requests,
            self._request_seconds,
            self._user_requests,
            self._onec_requests,
            self._onec_seconds,
            self._onec_up,
        )

    @property
    def registry(self) -> CollectorRegistry:
        """The registry to serve; made (and prometheus_client imported) the first time it is asked for."""
        with self._registry_lock:
            if self._registry is None:
                from prometheus_client import CollectorRegistry

                registry = CollectorRegistry(auto_describe=True)
                registry.register(_CountedCollector(self._families, self._lock))  # type: ignore[arg-type]
                registry.register(_StateCollector(self._proxy))  # type: ignore[arg-type]
                self._registry = registry
            return self._registry

    # --- what the request path reports --------------------------------------------------

    def request(self, method: str, *, tool: str, base: str, outcome: str, seconds: float, user: str | None) -> None:
        method = method if method in MCP_METHODS else "other"
        with self._lock:
            self._requests.inc(method, tool, outcome, base)
            self._request_seconds.observe(seconds, method)
            if user is not None:
                self._user_requests.inc(str(user), method)

    def onec(self, base: str, method: str, outcome: OneCOutcome, seconds: float) -> None:
        """One exchange with 1C. Up when 1C gave a JSON-RPC answer; down when it could not be reached,
        timed out or answered with an error page; unchanged when the call never left (busy)."""
        method = method if method in ONEC_METHODS else "other"
        with self._lock:
            self._onec_requests.inc(method, outcome, base)
            if outcome == "busy":
                return
            self._onec_seconds.observe(seconds, method)
            self._onec_up.set(1 if outcome in ("ok", "rpc_error") else 0, base)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# The collectors follow prometheus_client's Collector interface (describe, collect) without
# subclassing it, so that defining them does not import prometheus_client.


class _CountedCollector:
    """What the request path counted, as of the scrape."""

    def __init__(self, families: Sequence[_Family], lock: threading.Lock) -> None:
        self._families = families
        self._lock = lock

    def describe(self) -> Iterator[Metric]:
        return (family.empty() for family in self._families)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client import metrics

        # `_created` samples unless PROMETHEUS_DISABLE_CREATED_SERIES, as prometheus_client's own metrics.
        use_created = getattr(metrics, "_use_created", True)
        with self._lock:
            snapshots = [family.snapshot() for family in self._families]
        for family, snapshot in zip(self._families, snapshots, strict=True):
            yield family.to_metric(snapshot, use_created)


class _StateCollector:
    """Read at scrape time: nothing to keep in step between scrapes."""

    def __init__(self, proxy: MCPProxy) -> None:
        self._proxy = proxy

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the names are known only when collected; nothing to check in advance

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

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
