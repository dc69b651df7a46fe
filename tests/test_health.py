"""The pieces that keep /health cheap: one shared probe, reused briefly; a public one-line reason;
and the session gate that counts what clients hold open."""

from __future__ import annotations

import asyncio

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
