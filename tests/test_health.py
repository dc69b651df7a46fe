"""The pieces that keep /health cheap: one shared probe, reused briefly; a public one-line reason;
and the session gate that counts what clients hold open."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from py_server.errors import OneCAuthError, OneCConnectionError, OneCHTTPError, OneCProtocolError, OneCTimeoutError
from py_server.health import SharedResult, Snapshot, public_reason
from py_server.sessions import SessionGate


class Probe:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        return self.calls


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_concurrent_callers_share_one_computation() -> None:
    probe = Probe()
    shared = SharedResult(probe, reuse=2.0)
    waiters = [asyncio.create_task(shared.get()) for _ in range(100)]
    await asyncio.sleep(0)
    probe.release.set()
    assert await asyncio.gather(*waiters) == [1] * 100
    assert probe.calls == 1


@pytest.mark.anyio
async def test_the_result_is_reused_within_the_window_and_recomputed_after() -> None:
    probe, clock = Probe(), Clock()
    probe.release.set()
    shared = SharedResult(probe, reuse=2.0, clock=clock)
    assert await shared.get() == 1
    clock.now += 1.9
    assert await shared.get() == 1
    clock.now += 0.2
    assert await shared.get() == 2


@pytest.mark.anyio
async def test_a_cancelled_caller_does_not_cancel_the_shared_computation() -> None:
    probe = Probe()
    shared = SharedResult(probe, reuse=2.0)
    impatient = asyncio.create_task(shared.get())
    patient = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    impatient.cancel()
    probe.release.set()
    assert await patient == 1
    assert probe.calls == 1


@pytest.mark.anyio
async def test_a_failed_computation_is_not_cached() -> None:
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    shared = SharedResult(failing, reuse=60.0)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await shared.get()
    assert calls == 2


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (None, "1C answers (12 ms)"),
        (OneCTimeoutError("at http://srv/secret-base"), "1C did not answer in time"),
        (OneCConnectionError("Cannot connect to 1C at http://srv/secret-base"), "1C is unreachable"),
        (OneCAuthError("user 'ivanov'", status_code=401), "1C refused the proxy's login"),
        (OneCHTTPError("page text", status_code=502), "1C's web server answered HTTP 502"),
        (OneCProtocolError("garbage"), "1C's answer was not understood"),
    ],
)
def test_the_public_reason_names_the_failure_without_its_details(error: Exception | None, reason: str) -> None:
    snapshot = Snapshot(12.0 if error is None else None, error)  # type: ignore[arg-type]
    assert public_reason(snapshot) == reason


def test_the_session_gate_counts_every_transport_together() -> None:
    gate = SessionGate(max_sessions=3)
    sse, streamable = [1], [1]
    gate.add_counter("sse", lambda: sse[0])
    gate.add_counter("streamable_http", lambda: streamable[0])
    assert gate.has_room()
    streamable[0] = 2
    assert not gate.has_room()
    assert gate.counts() == {"sse": 1, "streamable_http": 2}
    assert "MCP_MAX_SESSIONS=3" in gate.refusal()


class _SlowExtra:
    name = "slow"
    tools: tuple[Any, ...] = ()

    def __init__(self) -> None:
        self.asked = 0

    async def status(self) -> Any:
        from py_server.local_tools import ExtraStatus

        self.asked += 1
        await asyncio.Event().wait()  # an upstream that never answers
        return ExtraStatus("slow", "reachable")


class _ProbeOnly:
    async def probe(self, timeout: float) -> float:  # noqa: ASYNC109 - OneCClient.probe's signature
        return 0.003


@pytest.mark.anyio
async def test_readiness_depends_on_1c_alone_not_on_the_extras() -> None:
    from types import SimpleNamespace

    from py_server.config import Settings
    from py_server.health import Health

    extra = _SlowExtra()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    base = SimpleNamespace(
        name="default", settings=settings, upstreams=SimpleNamespace(service=SimpleNamespace(client=_ProbeOnly()))
    )
    proxy = SimpleNamespace(settings=settings, bases={"default": base}, extras=[extra])
    health = Health(proxy)  # type: ignore[arg-type]
    status, body = await asyncio.wait_for(health.report(detail=False), 2)
    assert status == 200 and body["status"] == "healthy"
    assert extra.asked == 0


@pytest.mark.parametrize(
    ("answering", "need_all", "ready"),
    [(("erp", "zup"), True, True), (("erp",), True, False), (("erp",), False, True), ((), False, False)],
)
def test_readiness_over_several_bases_needs_all_or_any(answering: tuple[str, ...], need_all: bool, ready: bool) -> None:
    from py_server.errors import OneCConnectionError
    from py_server.health import readiness

    probes = {
        name: Snapshot(3.0, None) if name in answering else Snapshot(None, OneCConnectionError("down at http://x"))
        for name in ("erp", "zup")
    }
    is_ready, reason = readiness(probes, need_all=need_all)
    assert is_ready is ready
    if len(answering) < 2:
        assert "zup: 1C is unreachable" in reason and "http://x" not in reason
