"""The registry of 1C connections on its own: the real clients against the demo 1C base on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest
from pydantic import SecretStr

from py_server.config import Settings
from py_server.demo.onec_data import DemoUser
from py_server.demo.onec_emulator import OneCEmulator
from py_server.errors import OneCAuthError, OneCBusyError, OneCConnectionError
from py_server.identity import Identity, OneCLogin
from py_server.onec_client import OneCClient, TotalSlots
from py_server.upstreams import IdentityLimitError, OneCConnection, UpstreamRegistry

from .conftest import TEST_PASSWORD, proxy_settings

pytestmark = pytest.mark.anyio

SLOW = 0.2  # seconds each JSON-RPC call takes in 1C while a test needs calls in flight


class TrackedClient(OneCClient):
    """The real 1C client; `closed` is set once `aclose()` has finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = asyncio.Event()

    async def aclose(self) -> None:
        await super().aclose()
        self.closed.set()


@dataclasses.dataclass
class Proxy:
    registry: UpstreamRegistry
    service: TrackedClient
    personal: list[TrackedClient]  # every personal client the registry made, in order

    async def use(self, identity: Identity) -> OneCConnection:
        """`identity`'s connection, as one request uses it (and then lets go of it)."""
        async with self.registry.connection(identity) as onec:
            return onec

    async def connect(self, identity: Identity) -> OneCConnection:
        """`identity`'s connection, as a new session's request gets it: its login checked first."""
        await self.registry.verify(identity)
        return await self.use(identity)


@contextlib.asynccontextmanager
async def running(settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> AsyncIterator[Proxy]:
    """A running registry whose service client shares the total slots, as the wiring builds it."""
    total = TotalSlots(settings.onec_max_concurrency)
    personal: list[TrackedClient] = []

    def make(login: OneCLogin) -> OneCClient:
        client = TrackedClient.from_settings(settings, login=login, total_slots=total)
        personal.append(client)
        return client

    service = TrackedClient.from_settings(settings, total_slots=total)
    registry = UpstreamRegistry(settings, service, client_factory=make, clock=clock)
    async with registry.running():
        yield Proxy(registry, service, personal)


def passthrough(emulator: OneCEmulator, **overrides: Any) -> Settings:
    return proxy_settings(emulator, onec_auth="passthrough", **overrides)


def person(user: str, password: str | None = None) -> Identity:
    """A person with their own 1C login (the demo users' password is their name, except Иванов's)."""
    return Identity(user, onec_login=OneCLogin(user, SecretStr(user if password is None else password)))


ACCOUNTANT = person("accountant")
STOREKEEPER = person("storekeeper")
IVANOV = person("Иванов", "пароль")


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition` holds (what it waits for needs no network)."""
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def call_in_flight(tg: anyio.abc.TaskGroup, onec: OneCConnection, results: list[Any]) -> None:
    """Start a call of `current_user` and return once it holds its slot (1C answers after SLOW)."""

    async def call() -> None:
        results.append(await onec.call_tool("current_user", {}))

    before = onec.client.in_flight
    tg.start_soon(call)
    await until(lambda: onec.client.in_flight > before)


def closed(onec: OneCConnection) -> asyncio.Event:
    """Set once the connection's client is closed."""
    assert isinstance(onec.client, TrackedClient)
    return onec.client.closed


def text_of(result: dict[str, Any]) -> str:
    return "\n".join(item["text"] for item in result["content"] if item.get("type") == "text")


def change_password(emulator: OneCEmulator, user: str, password: str) -> None:
    emulator.state.users[user] = dataclasses.replace(emulator.state.users[user], password=password)


# --- which connection -----------------------------------------------------------------------


async def test_an_identity_without_a_login_gets_the_service_connection(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        await proxy.registry.verify(Identity("ops"))  # nothing to check: the settings' account
        async with proxy.registry.connection(Identity("ops")) as onec:
            assert onec.upstream is proxy.registry.service
            assert onec.client is proxy.service
            assert onec.headers is None
        assert proxy.registry.size == 0
    assert emulator.state.calls["ping"] == 0


async def test_a_login_gets_a_personal_connection_with_its_own_client(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        first = await proxy.use(ACCOUNTANT)
        again = await proxy.use(person("accountant"))  # another request, the same login
        other_password = await proxy.use(person("accountant", "other"))
        assert first.upstream is again.upstream
        assert first.client is not proxy.service
        assert other_password.upstream is not first.upstream
        assert other_password.client is not first.client
        assert proxy.registry.size == 2
        answer = await first.call_tool("current_user", {})
    assert "Пользователь 1С: accountant" in text_of(answer)


# --- verifying a login ----------------------------------------------------------------------


async def test_a_login_is_checked_with_1c_once(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        for _ in range(3):
            await proxy.registry.verify(person("accountant"))
        await proxy.use(ACCOUNTANT)
        await proxy.registry.verify(ACCOUNTANT)
        upstream = (await proxy.use(ACCOUNTANT)).upstream
        assert upstream.verified
    assert emulator.state.user_calls["accountant", "ping"] == 1


async def test_a_wrong_password_is_refused_and_its_connection_dropped(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        with pytest.raises(OneCAuthError) as refused:
            await proxy.registry.verify(person("accountant", "nope"))
        assert refused.value.status_code == 401
        assert proxy.registry.size == 0
        [dropped] = proxy.personal
        with anyio.fail_after(5):
            await dropped.closed.wait()
    assert "accountant" in str(refused.value) and "nope" not in str(refused.value)


async def test_a_user_without_the_right_to_the_service_is_refused_with_403(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        with pytest.raises(OneCAuthError) as refused:
            await proxy.registry.verify(person("norights"))
        assert refused.value.status_code == 403
        assert proxy.registry.size == 0


async def test_concurrent_checks_of_a_wrong_password_are_all_refused_as_such(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        outcomes = await asyncio.gather(
            *(proxy.registry.verify(person("accountant", "nope")) for _ in range(2)), return_exceptions=True
        )
    assert [type(outcome) for outcome in outcomes] == [OneCAuthError, OneCAuthError]


async def test_a_login_cannot_be_checked_while_1c_is_down(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        emulator.stop()
        with pytest.raises(OneCConnectionError):
            await proxy.registry.verify(ACCOUNTANT)
        emulator.start()
        await proxy.registry.verify(ACCOUNTANT)  # the same connection, checked now that 1C answers
        assert proxy.registry.size == 1
        assert len(proxy.personal) == 1
    assert emulator.state.user_calls["accountant", "ping"] == 1


# --- bounded: MCP_ONEC_MAX_IDENTITIES -------------------------------------------------------


async def test_a_login_beyond_the_limit_closes_the_least_recently_used_idle_connection(
    emulator: OneCEmulator,
) -> None:
    async with running(passthrough(emulator, onec_max_identities=2)) as proxy:
        accountant = await proxy.connect(ACCOUNTANT)
        storekeeper = await proxy.connect(STOREKEEPER)
        await proxy.use(ACCOUNTANT)  # used again: the storekeeper's is the older one
        ivanov = await proxy.connect(IVANOV)
        with anyio.fail_after(5):
            await closed(storekeeper).wait()
        assert proxy.registry.size == 2
        assert not closed(accountant).is_set() and not closed(ivanov).is_set()
        assert (await proxy.use(ACCOUNTANT)).upstream is accountant.upstream
        with pytest.raises(RuntimeError, match="closed"):
            await storekeeper.call_tool("current_user", {})


async def test_no_room_when_every_personal_connection_is_busy(emulator: OneCEmulator) -> None:
    results: list[Any] = []
    async with running(passthrough(emulator, onec_max_identities=2)) as proxy:
        connections = [await proxy.connect(ACCOUNTANT), await proxy.connect(STOREKEEPER)]
        emulator.state.latency = SLOW
        async with anyio.create_task_group() as tg:
            for onec in connections:
                await call_in_flight(tg, onec, results)
            with pytest.raises(IdentityLimitError, match="MCP_ONEC_MAX_IDENTITIES") as refused:
                await proxy.registry.verify(IVANOV)
        assert proxy.registry.size == 2
        assert not any(client.closed.is_set() for client in proxy.personal)
    assert isinstance(refused.value, OneCBusyError)
    assert len(results) == 2  # the calls in flight were not disturbed
    assert emulator.state.user_calls["Иванов", "ping"] == 0


async def test_a_connection_held_by_a_request_is_neither_evicted_nor_closed_as_idle(
    emulator: OneCEmulator,
) -> None:
    now = 1000.0
    settings = passthrough(emulator, onec_max_identities=1, onec_identity_idle=60)
    async with running(settings, clock=lambda: now) as proxy:
        await proxy.registry.verify(ACCOUNTANT)
        async with proxy.registry.connection(ACCOUNTANT) as held:
            with pytest.raises(IdentityLimitError):
                await proxy.registry.verify(STOREKEEPER)
            now += 61
            assert proxy.registry.close_idle() == 0
            assert not closed(held).is_set()
        assert proxy.registry.close_idle() == 0  # let go of just now: its idle time starts again
        now += 61
        assert proxy.registry.close_idle() == 1


class SlowLogins(dict[str, DemoUser]):
    """1C's users, looked up slowly (a busy 1C checks logins slowly); `checking` is set at the first."""

    def __init__(self, users: dict[str, DemoUser]) -> None:
        super().__init__(users)
        self.checking = threading.Event()

    def get(self, key: str, default: Any = None) -> Any:
        self.checking.set()
        time.sleep(SLOW)  # in the emulator's thread: 1C's own latency
        return super().get(key, default)


async def test_a_login_being_checked_takes_no_room_and_is_still_refused(emulator: OneCEmulator) -> None:
    logins = SlowLogins(emulator.state.users)
    emulator.state.users = logins
    refusals: list[OneCAuthError] = []

    async def check_wrong_password() -> None:
        with pytest.raises(OneCAuthError) as refused:  # 1C's answer, never a success for want of one
            await proxy.registry.verify(person("accountant", "nope"))
        refusals.append(refused.value)

    async with running(passthrough(emulator, onec_max_identities=1)) as proxy, anyio.create_task_group() as tg:
        tg.start_soon(check_wrong_password)
        await anyio.to_thread.run_sync(logins.checking.wait, 5)  # 1C is checking the wrong password ...
        await proxy.registry.verify(STOREKEEPER)  # ... when another person takes the only room
        assert proxy.registry.size == 1
    assert [refused.status_code for refused in refusals] == [401]


# --- idle connections -----------------------------------------------------------------------


async def test_connections_idle_past_the_limit_are_closed_fresh_and_busy_ones_kept(emulator: OneCEmulator) -> None:
    now = 1000.0
    results: list[Any] = []
    async with running(passthrough(emulator, onec_identity_idle=60), clock=lambda: now) as proxy:
        stale = await proxy.connect(ACCOUNTANT)
        busy = await proxy.connect(STOREKEEPER)
        now += 30
        fresh = await proxy.connect(IVANOV)
        emulator.state.latency = SLOW
        async with anyio.create_task_group() as tg:
            await call_in_flight(tg, busy, results)
            now += 31  # the accountant and the storekeeper unused for 61 s, Иванов for 31 s
            assert proxy.registry.close_idle() == 1
        with anyio.fail_after(5):
            await closed(stale).wait()
        assert not closed(busy).is_set() and not closed(fresh).is_set()
        assert proxy.registry.size == 2
        assert proxy.registry.close_idle() == 1  # its call is done: the storekeeper's is idle now
        assert proxy.registry.size == 1
    assert len(results) == 1


# --- concurrency: per identity and in total -------------------------------------------------


async def test_all_identities_together_never_run_more_than_the_total_in_1c(emulator: OneCEmulator) -> None:
    settings = passthrough(emulator, onec_max_concurrency=3, onec_identity_concurrency=2)
    async with running(settings) as proxy:
        connections = [await proxy.use(identity) for identity in (ACCOUNTANT, STOREKEEPER, IVANOV)]
        emulator.state.latency = SLOW
        emulator.state.reset_counters()
        with anyio.fail_after(10):
            results = await asyncio.gather(
                *(onec.call_tool("current_user", {}) for onec in connections for _ in range(3))
            )
    assert len(results) == 9
    assert not any(result["isError"] for result in results)
    assert emulator.state.max_in_flight == 3
    assert emulator.state.calls["tools/call"] == 9


async def test_one_identity_never_runs_more_than_its_own_cap(emulator: OneCEmulator) -> None:
    settings = passthrough(emulator, onec_max_concurrency=3, onec_identity_concurrency=2)
    async with running(settings) as proxy:
        onec = await proxy.use(ACCOUNTANT)
        emulator.state.latency = SLOW
        emulator.state.reset_counters()
        with anyio.fail_after(10):
            results = await asyncio.gather(*(onec.call_tool("current_user", {}) for _ in range(3)))
    assert not any(result["isError"] for result in results)
    assert emulator.state.max_in_flight == 2


async def test_a_call_that_waits_too_long_for_the_total_is_busy(emulator: OneCEmulator) -> None:
    settings = passthrough(emulator, onec_max_concurrency=1, onec_queue_timeout=0.05)
    results: list[Any] = []
    async with running(settings) as proxy:
        accountant = await proxy.use(ACCOUNTANT)
        storekeeper = await proxy.use(STOREKEEPER)
        emulator.state.latency = SLOW
        async with anyio.create_task_group() as tg:
            await call_in_flight(tg, accountant, results)
            with pytest.raises(OneCBusyError, match=r"MCP_ONEC_MAX_CONCURRENCY=1") as busy:
                await storekeeper.call_tool("current_user", {})
    assert "MCP_ONEC_QUEUE_TIMEOUT" in str(busy.value)
    assert len(results) == 1
    assert emulator.state.user_calls["storekeeper", "tools/call"] == 0


# --- a login 1C refuses later ---------------------------------------------------------------


async def test_a_login_refused_later_fails_the_call_and_is_checked_again(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        await proxy.registry.verify(ACCOUNTANT)
        before = await proxy.use(ACCOUNTANT)
        change_password(emulator, "accountant", "changed")
        with pytest.raises(OneCAuthError) as refused:
            await before.call_tool("current_user", {})
        assert refused.value.status_code == 401
        with pytest.raises(OneCAuthError):
            await proxy.registry.verify(ACCOUNTANT)  # a new connection, and 1C refuses it
        assert proxy.registry.size == 0
        with anyio.fail_after(5):
            await asyncio.gather(*(client.closed.wait() for client in proxy.personal))
    assert emulator.state.user_calls["accountant", "ping"] == 1  # 1C counts only what it let in


async def test_after_a_refusal_the_next_request_gets_a_new_connection_checked_again(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        await proxy.registry.verify(ACCOUNTANT)
        before = await proxy.use(ACCOUNTANT)
        change_password(emulator, "accountant", "changed")
        with pytest.raises(OneCAuthError):
            await before.call_tool("current_user", {})
        change_password(emulator, "accountant", "accountant")  # the admin puts it back
        await proxy.registry.verify(ACCOUNTANT)
        after = await proxy.use(ACCOUNTANT)
        assert after.upstream is not before.upstream
        assert after.upstream.verified
        assert not (await after.call_tool("current_user", {}))["isError"]
        assert proxy.registry.size == 1
    assert emulator.state.user_calls["accountant", "ping"] == 2


# --- catalogs -------------------------------------------------------------------------------


async def test_each_login_reads_its_own_catalog(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator, onec_catalog="per_identity")) as proxy:
        storekeeper = await proxy.use(STOREKEEPER)
        accountant = await proxy.use(ACCOUNTANT)
        storekeeper_tools = {tool.name for tool in await storekeeper.catalog.items("tools")}
        accountant_tools = {tool.name for tool in await accountant.catalog.items("tools")}
        assert storekeeper.catalog is not accountant.catalog
        assert proxy.registry.service.catalog not in (storekeeper.catalog, accountant.catalog)
    assert "current_user" in storekeeper_tools and "post_document" not in storekeeper_tools
    assert "post_document" in accountant_tools


async def test_a_shared_catalog_is_the_service_accounts(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator, onec_catalog="shared")) as proxy:
        storekeeper = await proxy.use(STOREKEEPER)
        accountant = await proxy.use(ACCOUNTANT)
        tools = {tool.name for tool in await storekeeper.catalog.items("tools")}
        assert storekeeper.catalog is proxy.registry.service.catalog is accountant.catalog
    assert "post_document" in tools
    assert emulator.state.user_calls["storekeeper", "tools/list"] == 0


# --- the service account on behalf of a signed-in user --------------------------------------


async def test_a_signed_in_user_reaches_1c_as_the_service_account_named_in_a_header(emulator: OneCEmulator) -> None:
    async with running(proxy_settings(emulator)) as proxy:
        onec = await proxy.use(Identity("petrova", on_behalf_of="Петрова"))
        answer = await onec.call_tool("current_user", {})
        assert onec.upstream is proxy.registry.service
    assert onec.headers == {"X-MCP-User": "%D0%9F%D0%B5%D1%82%D1%80%D0%BE%D0%B2%D0%B0"}
    assert "Действует от имени: Петрова" in text_of(answer)
    assert f"Пользователь 1С: {emulator.username}" in text_of(answer)


# --- what ops see, and shutdown -------------------------------------------------------------


async def test_status_has_counts_and_names_nobody(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator, onec_max_identities=5)) as proxy:
        await proxy.registry.verify(ACCOUNTANT)
        await proxy.registry.verify(IVANOV)
        status = proxy.registry.status()
    assert status == {
        "mode": "passthrough",
        "catalog": "per_identity",
        "personal_connections": 2,
        "max_identities": 5,
        "in_flight": 0,
    }
    shown = json.dumps(status, ensure_ascii=False)
    for secret in ("accountant", "Иванов", "пароль", TEST_PASSWORD, "onec:"):
        assert secret not in shown


async def test_every_client_is_closed_when_the_registry_stops(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator, onec_max_identities=1)) as proxy:
        await proxy.use(ACCOUNTANT)
        await proxy.use(STOREKEEPER)  # the accountant's is evicted on the way
    clients = [proxy.service, *proxy.personal]
    assert len(clients) == 3
    assert all(client.closed.is_set() for client in clients)
    for client in clients:
        with pytest.raises(RuntimeError, match="closed"):
            await client.call_tool("current_user", {})


# --- regressions from review ------------------------------------------------------------------


async def test_the_service_catalog_has_one_refresher_however_many_requests_use_it(emulator: OneCEmulator) -> None:
    async with running(proxy_settings(emulator)) as proxy:
        for _ in range(3):
            await proxy.use(Identity("ivanov"))
        refreshers = [task for task in asyncio.all_tasks() if task.get_name() == "onec-catalog-refresh"]
    assert len(refreshers) == 1


async def test_a_wrong_login_is_remembered_so_1c_is_asked_once(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        for _ in range(3):
            with pytest.raises(OneCAuthError):
                await proxy.registry.verify(person("accountant", "wrong"))
    assert emulator.state.calls["HTTP 401"] == 1


async def test_a_personal_catalogs_first_fetch_is_not_announced(emulator: OneCEmulator) -> None:
    announced: list[tuple[set[str], str | None]] = []

    async def on_change(kinds: set[Any], audience: str | None) -> None:
        announced.append((kinds, audience))

    settings = passthrough(emulator)
    service = OneCClient.from_settings(settings)
    registry = UpstreamRegistry(settings, service, on_change=on_change)
    async with registry.running():
        async with registry.connection(person("accountant")) as onec:
            assert await onec.catalog.items("tools")
        announced_first = list(announced)
        emulator.state.add_tool({"name": "new_tool", "inputSchema": {"type": "object"}}, lambda _: {"content": []})
        async with registry.connection(person("accountant")) as onec:
            await onec.catalog.refresh()
    assert [audience for _, audience in announced_first] == [None]  # the service catalog's, for everybody
    key = person("accountant").connection_key
    assert ({"tools"}, key) in announced  # a later change goes to that person's sessions only


async def test_wrong_logins_evict_nobody(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator, onec_max_identities=1)) as proxy:
        accountant = await proxy.connect(ACCOUNTANT)
        for guess in ("a", "b", "c"):
            with pytest.raises(OneCAuthError):
                await proxy.registry.verify(person("storekeeper", guess))
        assert (await proxy.use(ACCOUNTANT)).upstream is accountant.upstream
        assert not closed(accountant).is_set()


async def test_a_login_1c_refused_is_not_tried_again_at_once(emulator: OneCEmulator) -> None:
    async with running(passthrough(emulator)) as proxy:
        onec = await proxy.connect(STOREKEEPER)
        change_password(emulator, "storekeeper", "changed")
        with pytest.raises(OneCAuthError):
            await onec.call_tool("current_user", {})
        refused_before = emulator.state.calls["HTTP 401"]
        for _ in range(3):  # e.g. the combined endpoint listing every base for this person
            with pytest.raises(OneCAuthError):
                await proxy.use(STOREKEEPER)
            with pytest.raises(OneCAuthError):
                await proxy.registry.verify(STOREKEEPER)
        assert emulator.state.calls["HTTP 401"] == refused_before  # 1C saw no new failed login
