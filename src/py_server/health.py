"""Health for orchestrators and ops, cheap and bounded whoever calls it and how often.

    GET /health/live    200 while the process serves; never calls 1C
    GET /health/ready   200 when 1C answers (every base, or any with MCP_READY_WHEN=any), 503 otherwise
    GET /health         the readiness answer; with the token (or when none is set) also the detail

A flood of health requests must neither reach 1C nor slow tool calls, so every caller shares one
snapshot: concurrent callers wait for the same 1C probe (single flight), its answer is reused for
`SNAPSHOT_REUSE` seconds, and the probe uses `OneCClient.probe`, which never waits behind tool
calls for a concurrency slot and has its own short timeout. The local extras' upstreams are asked
only for the detail (shared the same way), so readiness depends on 1C alone.

    health = Health(proxy)
    status, body = await health.report(detail=False)   # 503, {"status": "unhealthy", "reason": "..."}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from . import __version__
from .config import Settings
from .errors import OneCAuthError, OneCConnectionError, OneCError, OneCHTTPError, OneCTimeoutError
from .local_tools import ExtraStatus
from .mcp_server import MCPProxy
from .routing import Base

__all__ = ["PROBE_TIMEOUT", "SNAPSHOT_REUSE", "Health", "SharedResult", "Snapshot", "public_reason", "readiness"]

SNAPSHOT_REUSE = 2.0  # seconds one probe answers for every health caller
PROBE_TIMEOUT = 5.0  # seconds; a readiness probe must answer faster than an orchestrator gives up

T = TypeVar("T")


class SharedResult(Generic[T]):
    """Runs `compute` for many concurrent callers at most once per `reuse` seconds.

    A caller that is cancelled (its client hung up) does not cancel the computation the others wait for.
    """

    def __init__(
        self, compute: Callable[[], Awaitable[T]], *, reuse: float, clock: Callable[[], float] = time.monotonic
    ):
        self._compute = compute
        self._reuse = reuse
        self._clock = clock
        self._value: T | None = None
        self._computed_at = -float("inf")
        self._running: asyncio.Future[T] | None = None

    async def get(self) -> T:
        if self._value is not None and self._clock() - self._computed_at < self._reuse:
            return self._value
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._running)

    async def _refresh(self) -> T:
        try:
            value = await self._compute()
        finally:
            self._running = None
        self._value, self._computed_at = value, self._clock()
        return value


@dataclass(frozen=True)
class Snapshot:
    """One probe of 1C."""

    round_trip_ms: float | None
    error: OneCError | None

    @property
    def ready(self) -> bool:
        return self.error is None


def public_reason(snapshot: Snapshot) -> str:
    """One line for anyone who may ask: what is wrong, without URLs, users or 1C's own text."""
    error = snapshot.error
    if error is None:
        return f"1C answers ({snapshot.round_trip_ms:.0f} ms)"
    if isinstance(error, OneCTimeoutError):
        return "1C did not answer in time"
    if isinstance(error, OneCConnectionError):
        return "1C is unreachable"
    if isinstance(error, OneCAuthError):
        return "1C refused the proxy's login"
    if isinstance(error, OneCHTTPError):
        return f"1C's web server answered HTTP {error.status_code}"
    return "1C's answer was not understood"


def readiness(probes: dict[str, Snapshot], *, need_all: bool) -> tuple[bool, str]:
    """(ready, one public line) over every base's probe: all must answer, or any one (MCP_READY_WHEN)."""
    if len(probes) == 1:
        [snapshot] = probes.values()
        return snapshot.ready, public_reason(snapshot)
    answering = [name for name, snapshot in probes.items() if snapshot.ready]
    failing = [f"{name}: {public_reason(snapshot)}" for name, snapshot in probes.items() if not snapshot.ready]
    ready = len(answering) == len(probes) if need_all else bool(answering)
    if not failing:
        return ready, f"1C answers for all {len(probes)} bases"
    return ready, f"{len(answering)} of {len(probes)} bases answer; " + "; ".join(failing)


class Health:
    def __init__(self, proxy: MCPProxy, *, reuse: float = SNAPSHOT_REUSE, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self._proxy = proxy
        self._probe_timeout = min(probe_timeout, proxy.settings.onec_timeout)
        self._snapshots = SharedResult(self._probe_all, reuse=reuse)
        self._extras = SharedResult(self._extras_status, reuse=reuse)

    async def _probe_all(self) -> dict[str, Snapshot]:
        """Every base probed at once: one slow base costs the others nothing."""
        bases = list(self._proxy.bases.values())
        snapshots = await asyncio.gather(*(self._snapshot(base) for base in bases))
        return {base.name: snapshot for base, snapshot in zip(bases, snapshots, strict=True)}

    async def _snapshot(self, base: Base) -> Snapshot:
        started = time.perf_counter()
        try:
            rtt = await base.upstreams.service.client.probe(min(self._probe_timeout, base.settings.onec_timeout))
        except OneCAuthError as exc:
            if exc.status_code == 401 and _asks_each_user(base.settings):
                # 1C answered and asks for a login: each user brings their own, so 1C is up.
                return Snapshot(round((time.perf_counter() - started) * 1000, 1), None)
            return Snapshot(None, exc)
        except OneCError as exc:
            return Snapshot(None, exc)
        return Snapshot(round(rtt * 1000, 1), None)

    async def _extras_status(self) -> list[ExtraStatus]:
        return list(await asyncio.gather(*(extra.status() for extra in self._proxy.extras)))

    async def report(self, *, detail: bool) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of `/health`; the detail only for callers allowed to see it."""
        probes = await self._snapshots.get()
        ready, reason = readiness(probes, need_all=self._proxy.settings.ready_when == "all")
        body: dict[str, Any] = {"status": "healthy" if ready else "unhealthy", "reason": reason}
        if detail:
            body.update(self._detail(probes, await self._extras.get()))
        return (200 if ready else 503), body

    def _detail(self, probes: dict[str, Snapshot], extras: list[ExtraStatus]) -> dict[str, Any]:
        proxy = self._proxy
        bases = {name: _base_detail(proxy, base, probes[name]) for name, base in proxy.bases.items()}
        first = next(iter(bases.values()))
        body = {
            "server": {"name": proxy.settings.server_name, "version": __version__},
            "uptime_s": round(time.monotonic() - proxy.started_at, 1),
            "onec": {key: value for key, value in first.items() if key not in ("identities", "policy")},
            "sessions": proxy.sessions.counts(),
            "identities": first["identities"],
            "local_tools": proxy.registry.names,
            "shadowed_tools": proxy.shadowed_tools,
            "extras": {status.name: status.as_dict() for status in extras},
            "policy": first["policy"],
            "masking": proxy.settings.mask_pii,
            "audit_log": proxy.settings.audit_log is not None,
        }
        if len(bases) > 1:
            body["bases"] = bases
            body["ready_when"] = proxy.settings.ready_when
        return body


def _base_detail(proxy: MCPProxy, base: Base, snapshot: Snapshot) -> dict[str, Any]:
    service = base.upstreams.service
    onec: dict[str, Any] = {"url": service.client.base_url, "user": base.settings.onec_username or None}
    if snapshot.error is None:
        onec["round_trip_ms"] = snapshot.round_trip_ms
    else:
        onec["error"] = str(snapshot.error)
    discovery = service.catalog.discovery
    if discovery is not None:
        onec["backend"] = {
            "server_info": getattr(discovery, "server_info", None),
            "protocol_version": getattr(discovery, "protocol_version", None),
        }
    onec["catalog"] = service.catalog.status()
    onec["identities"] = base.upstreams.status()
    onec["policy"] = proxy.policy_report(base.name)
    return onec


def _asks_each_user(settings: Settings) -> bool:
    """Passthrough without a service account: the probe has no login of its own to send."""
    return settings.onec_auth == "passthrough" and not settings.onec_username
