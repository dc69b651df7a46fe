"""list_changed delivery on its own: real in-memory MCP connections and fake sessions, no server."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Mapping
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
from mcp import Client, types
from mcp.server import Server, ServerRequestContext
from mcp.server.connection import Connection
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ToolsListChanged

from py_server.notifier import ListChangeNotifier

pytestmark = pytest.mark.anyio


class FakeSession:
    """Stands in for a ServerSession: records the list_changed it gets; its ping can fail or hang."""

    comparisons = 0  # equality checks between sessions, across all instances
    comparison_budget = 1_000_000
    pings = 0  # across all instances

    def __init__(self, *, dead: bool = False, hold: asyncio.Event | None = None) -> None:
        self.dead = dead
        self.hold = hold
        self.pinged = asyncio.Event()
        self.got_tools = asyncio.Event()
        self.received: list[str] = []

    def __eq__(self, other: object) -> bool:
        FakeSession.comparisons += 1
        if FakeSession.comparisons > FakeSession.comparison_budget:
            raise AssertionError("sessions compared pairwise: quadratic work")
        return self is other

    __hash__ = object.__hash__

    async def send_ping(self) -> None:
        FakeSession.pings += 1
        self.pinged.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.dead:
            raise MCPError(types.CONNECTION_CLOSED, "Connection closed")

    async def send_tool_list_changed(self) -> None:
        self.received.append("tools")
        self.got_tools.set()

    async def send_resource_list_changed(self) -> None:
        self.received.append("resources")

    async def send_prompt_list_changed(self) -> None:
        self.received.append("prompts")


def add(notifier: ListChangeNotifier, session: FakeSession) -> FakeSession:
    notifier.add_session(cast(ServerSession, session))
    return session


class ProxyLike:
    """A low-level MCP server that registers sessions with a notifier, like MCPProxy does."""

    def __init__(self, notifier: ListChangeNotifier) -> None:
        self.notifier = notifier
        self.initialized = asyncio.Event()
        self.connections: list[weakref.ref[Connection]] = []
        self.server = Server("notifier-test", on_subscriptions_listen=notifier.listen_handler)
        self.server.add_notification_handler("notifications/initialized", types.NotificationParams, self._initialized)

    async def _initialized(self, ctx: ServerRequestContext[Any], params: types.NotificationParams) -> None:
        self.notifier.add_session(ctx.session)
        self.connections.append(weakref.ref(ctx.session._connection))  # to check that it is freed
        self.initialized.set()

    async def connect_and_leave(self) -> None:
        self.initialized = asyncio.Event()
        async with Client(self.server, mode="legacy"):
            with anyio.fail_after(5):
                await self.initialized.wait()
            assert self.notifier.session_count == 1


class _Outbound:
    async def send_raw_request(self, method: str, params: Mapping[str, Any] | None, opts: Any = None) -> dict[str, Any]:
        return {}

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: Any = None) -> None:
        return None


# --- sessions come and go --------------------------------------------------------------------


async def test_a_session_is_forgotten_when_its_connection_ends() -> None:
    notifier = ListChangeNotifier()
    await ProxyLike(notifier).connect_and_leave()
    assert notifier.session_count == 0


async def test_connections_that_ended_are_not_kept_in_memory() -> None:
    notifier = ListChangeNotifier()
    proxy = ProxyLike(notifier)
    for _ in range(20):
        await proxy.connect_and_leave()
    gc.collect()
    assert notifier.session_count == 0
    assert [ref for ref in proxy.connections if ref() is not None] == []


async def test_initialized_twice_on_one_connection_registers_it_once() -> None:
    notifier = ListChangeNotifier()
    connection = Connection.for_loop(_Outbound())
    for _ in range(2):  # the SDK builds a new ServerSession wrapper for every message
        notifier.add_session(ServerSession(cast(Any, None), connection))
    assert notifier.session_count == 1


async def test_a_handshake_era_client_hears_list_changed() -> None:
    notifier = ListChangeNotifier()
    proxy = ProxyLike(notifier)
    heard = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            heard.set()

    async with notifier.running(), Client(proxy.server, mode="legacy", message_handler=on_message):
        with anyio.fail_after(5):
            await proxy.initialized.wait()
            await notifier.notify({"tools"})
            await heard.wait()


async def test_a_2026_client_hears_list_changed_on_its_listen_stream() -> None:
    notifier = ListChangeNotifier()
    async with Client(ProxyLike(notifier).server) as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as events:
            await notifier.notify({"tools"})
            with anyio.fail_after(5):
                async for event in events:
                    assert isinstance(event, ToolsListChanged)
                    break


async def test_listen_count_counts_open_listen_streams() -> None:
    notifier = ListChangeNotifier()
    async with Client(ProxyLike(notifier).server) as client, client.listen(tools_list_changed=True):
        assert notifier.listen_count == 1
    assert notifier.listen_count == 0


# --- a round of notifications ------------------------------------------------------------


async def test_a_client_that_connects_during_a_round_gets_the_next_one() -> None:
    notifier = ListChangeNotifier()
    slow = add(notifier, FakeSession(hold=asyncio.Event()))
    async with notifier.running():
        with anyio.fail_after(5):
            first_round = await notifier.notify({"tools"})
            await slow.pinged.wait()  # the round is under way
            late = add(notifier, FakeSession())
            assert slow.hold is not None
            slow.hold.set()
            await first_round.wait()
            await notifier.notify({"tools"})
            await late.got_tools.wait()


async def test_a_client_whose_ping_fails_is_dropped_and_the_others_kept() -> None:
    notifier = ListChangeNotifier()
    add(notifier, FakeSession(dead=True))
    alive = add(notifier, FakeSession())
    async with notifier.running():
        with anyio.fail_after(5):
            await (await notifier.notify({"tools", "prompts"})).wait()
    assert notifier.session_count == 1
    assert alive.received == ["prompts", "tools"]


async def test_notify_returns_while_a_stuck_client_is_still_being_served() -> None:
    notifier = ListChangeNotifier(send_timeout=3600)
    stuck = add(notifier, FakeSession(hold=asyncio.Event()))
    healthy = add(notifier, FakeSession())
    async with notifier.running():
        with anyio.fail_after(5):
            done = await notifier.notify({"tools"})
            await healthy.got_tools.wait()
        assert not done.is_set() and stuck.received == []


async def test_a_stuck_client_is_dropped_after_the_send_timeout() -> None:
    notifier = ListChangeNotifier(send_timeout=0.05)
    add(notifier, FakeSession(hold=asyncio.Event()))
    healthy = add(notifier, FakeSession())
    async with notifier.running():
        with anyio.fail_after(5):
            await (await notifier.notify({"tools"})).wait()
    assert notifier.session_count == 1
    assert healthy.received == ["tools"]


async def test_a_round_over_20000_dead_sessions_forgets_them_without_pairwise_work() -> None:
    notifier = ListChangeNotifier()
    FakeSession.comparisons = 0
    for _ in range(20_000):
        add(notifier, FakeSession(dead=True))
    async with notifier.running():
        with anyio.fail_after(20):  # generous (about 1 s here): the point is the count below
            await (await notifier.notify({"tools"})).wait()
    assert notifier.session_count == 0
    assert FakeSession.comparisons < 20_000


async def test_a_large_round_lets_other_tasks_run_while_it_starts() -> None:
    notifier = ListChangeNotifier()
    for _ in range(5_000):
        add(notifier, FakeSession(dead=True))
    FakeSession.pings = 0
    most_between_ticks = 0

    async def ticker(stop: anyio.Event) -> None:  # another client's task, counting event-loop turns
        nonlocal most_between_ticks
        last = FakeSession.pings
        while not stop.is_set():
            await anyio.lowlevel.checkpoint()
            most_between_ticks = max(most_between_ticks, FakeSession.pings - last)
            last = FakeSession.pings

    async with notifier.running(), anyio.create_task_group() as group:
        stop = anyio.Event()
        group.start_soon(ticker, stop)
        with anyio.fail_after(60):
            await (await notifier.notify({"tools"})).wait()
        stop.set()
    assert FakeSession.pings == 5_000
    assert most_between_ticks <= 500  # not all 5,000 in one turn


async def test_close_ends_the_deliveries_in_flight() -> None:
    notifier = ListChangeNotifier(send_timeout=3600)
    stuck = add(notifier, FakeSession(hold=asyncio.Event()))
    async with notifier.running():
        done = await notifier.notify({"tools"})
        with anyio.fail_after(5):
            await stuck.pinged.wait()
            notifier.close()
            await done.wait()
    assert stuck.received == []
    assert notifier.session_count == 0


async def test_a_live_connection_is_kept_when_one_delivery_fails() -> None:
    # A slow ping or a missing GET stream is not the end of a connection; its exit stack says when.
    notifier = ListChangeNotifier(send_timeout=0.05)
    connection = Connection.for_loop(_Outbound())
    session = ServerSession(cast(Any, None), connection)

    async def hang() -> None:
        await asyncio.Event().wait()

    session.send_ping = hang  # type: ignore[method-assign]
    notifier.add_session(session)
    async with notifier.running():
        with anyio.fail_after(5):
            await (await notifier.notify({"tools"})).wait()
    assert notifier.session_count == 1
