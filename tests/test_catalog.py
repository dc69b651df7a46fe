"""The 1C catalog cache on its own: a fake 1C client, a fake clock, no server."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest

from py_server.catalog import Catalog, Kind
from py_server.errors import (
    OneCAuthError,
    OneCConnectionError,
    OneCError,
    OneCHTTPError,
    OneCProtocolError,
    OneCRpcError,
    OneCTimeoutError,
)
from py_server.onec_client import Discovery, OneCClient

pytestmark = pytest.mark.anyio

TTL = 60.0
METHODS = ("discover", "tools", "resources", "templates", "prompts")


def tool(name: str) -> dict[str, Any]:
    return {"name": name, "inputSchema": {"type": "object", "properties": {}}}


def resource(name: str) -> dict[str, Any]:
    return {"uri": f"onec://{name}", "name": name}


def prompt(name: str) -> dict[str, Any]:
    return {"name": name}


def template(name: str) -> dict[str, Any]:
    return {"uriTemplate": f"onec://{name}/{{id}}", "name": name}


def method_not_found() -> OneCRpcError:
    return OneCRpcError("1C returned error -32601: Method not found", code=-32601, detail="Method not found")


class FakeOneC:
    """Stands in for OneCClient: answers from `lists`, raises what `failures` holds, counts calls.

    A method listed in `hold` does not answer until its event is set; `entered` is set when it
    is called.
    """

    def __init__(self, capabilities: dict[str, bool] | None = None) -> None:
        self.capabilities = capabilities
        self.lists: dict[str, list[dict[str, Any]]] = {
            "tools": [tool("get_metadata")],
            "resources": [resource("catalog")],
            "prompts": [prompt("report")],
            "templates": [],
        }
        self.failures: dict[str, OneCError] = {}
        self.hold: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {method: asyncio.Event() for method in METHODS}
        self.calls: Counter[str] = Counter()

    async def _answer(self, method: str) -> None:
        self.calls[method] += 1
        self.entered[method].set()
        if method in self.hold:
            await self.hold[method].wait()
        if method in self.failures:
            raise self.failures[method]

    async def discover(self) -> Discovery:
        await self._answer("discover")
        return Discovery("manifest" if self.capabilities else "rpc", self.capabilities)

    async def list_tools(self) -> list[dict[str, Any]]:
        await self._answer("tools")
        return self.lists["tools"]

    async def list_resources(self) -> list[dict[str, Any]]:
        await self._answer("resources")
        return self.lists["resources"]

    async def list_prompts(self) -> list[dict[str, Any]]:
        await self._answer("prompts")
        return self.lists["prompts"]

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        await self._answer("templates")
        return self.lists["templates"]


class FakeTime:
    """A clock that only moves when the refresher sleeps, so a TTL passes in no time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


class Changes:
    """The change callback: records each call and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.seen: list[set[Kind]] = []
        self.event = asyncio.Event()

    async def __call__(self, kinds: set[Kind]) -> None:
        self.seen.append(kinds)
        self.event.set()


class LogWatch(logging.Handler):
    """Sets an event when the catalog logs a message containing `text`."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.event = asyncio.Event()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1
            self.event.set()


@pytest.fixture
def watch_log() -> Iterator[Any]:
    catalog_logger = logging.getLogger("py_server.catalog")
    watches: list[LogWatch] = []

    def watch(text: str) -> LogWatch:
        watches.append(LogWatch(text))
        catalog_logger.addHandler(watches[-1])
        return watches[-1]

    level = catalog_logger.level
    catalog_logger.setLevel(logging.INFO)
    yield watch
    catalog_logger.setLevel(level)
    for handler in watches:
        catalog_logger.removeHandler(handler)


def make_catalog(onec: FakeOneC, **options: Any) -> Catalog:
    return Catalog(cast(OneCClient, onec), ttl=TTL, **options)


def names(items: list[Any]) -> list[str]:
    return [item.name for item in items]


# --- the start-up wait -------------------------------------------------------------------


async def test_lists_wait_for_a_hanging_first_fetch_only_once_in_total() -> None:
    onec = FakeOneC()
    onec.hold["discover"] = asyncio.Event()  # 1C accepts the connection and never answers
    wait = 0.3
    async with make_catalog(onec, first_fetch_wait=wait).running() as catalog:  # the one wait
        with anyio.fail_after(wait):  # each list waiting again would take 4 x `wait`
            for kind in ("tools", "resources", "prompts", "tools"):
                assert await catalog.items(cast(Kind, kind)) == []


async def test_a_catalog_that_arrives_after_the_start_up_wait_is_announced() -> None:
    onec = FakeOneC()
    onec.hold["discover"] = asyncio.Event()
    changes = Changes()
    async with make_catalog(onec, first_fetch_wait=0.01, on_change=changes).running() as catalog:
        assert await catalog.items("tools") == []
        onec.hold["discover"].set()
        with anyio.fail_after(5):
            await changes.event.wait()
        assert changes.seen == [{"tools", "resources", "prompts"}]
        assert names(await catalog.items("tools")) == ["get_metadata"]


# --- refreshing on a miss ----------------------------------------------------------------


async def test_concurrent_refreshes_share_one_fetch() -> None:
    onec = FakeOneC()
    onec.hold["tools"] = asyncio.Event()
    catalog = make_catalog(onec)
    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(catalog.refresh)
        await onec.entered["tools"].wait()
        onec.hold["tools"].set()
    assert onec.calls["tools"] == 1


async def test_concurrent_unknown_names_share_one_refresh_and_see_its_result() -> None:
    onec, clock = FakeOneC(), FakeTime()
    catalog = make_catalog(onec, clock=clock)
    await catalog.refresh()
    clock.now += 100  # long past the miss interval
    onec.lists["tools"] = [tool("get_metadata"), tool("new_report")]
    onec.hold["tools"] = asyncio.Event()
    onec.entered["tools"] = asyncio.Event()
    results: list[bool] = []

    async def call() -> None:
        results.append(await catalog.has_tool("new_report"))

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(call)
        await onec.entered["tools"].wait()
        onec.hold["tools"].set()
    assert results == [True] * 10
    assert onec.calls["tools"] == 2  # the start and one shared refresh


async def test_misses_refresh_at_most_once_per_interval_while_tools_list_keeps_failing() -> None:
    onec, clock = FakeOneC(), FakeTime()
    catalog = make_catalog(onec, clock=clock, miss_refresh_interval=2.0)
    await catalog.refresh()
    onec.failures["tools"] = OneCRpcError("1C returned error -32000: boom", code=-32000, detail="boom")
    clock.now += 100
    assert await catalog.has_tool("first_unknown") is False  # refreshes: the last one is old
    clock.now += 0.5
    assert await catalog.has_tool("second_unknown") is False  # no refresh: one started 0.5 s ago
    assert onec.calls["tools"] == 2


async def test_an_unknown_name_refreshes_again_once_the_interval_has_passed() -> None:
    onec, clock = FakeOneC(), FakeTime()
    catalog = make_catalog(onec, clock=clock, miss_refresh_interval=2.0)
    await catalog.refresh()
    clock.now += 100
    assert await catalog.has_tool("new_report") is False
    onec.lists["tools"] = [tool("get_metadata"), tool("new_report")]
    clock.now += 2.0
    assert await catalog.has_tool("new_report") is True


# --- failures, one kind at a time ----------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        OneCHTTPError("1C answered HTTP 500: Internal Server Error", status_code=500),
        OneCProtocolError("1C's resources/list result has no 'resources' list of objects"),
        OneCRpcError("1C returned error -32000: boom", code=-32000, detail="boom"),
    ],
    ids=["http", "protocol", "rpc"],
)
async def test_a_failing_list_leaves_the_other_kinds_to_refresh(failure: OneCError) -> None:
    onec = FakeOneC()
    catalog = make_catalog(onec)
    await catalog.refresh()
    onec.failures["resources"] = failure
    onec.lists["tools"] = [tool("new_report")]
    onec.lists["prompts"] = [prompt("new_prompt")]
    assert await catalog.refresh() == {"tools", "prompts"}
    assert names(await catalog.items("tools")) == ["new_report"]
    assert names(await catalog.items("prompts")) == ["new_prompt"]
    assert names(await catalog.items("resources")) == ["catalog"]  # the last known list stays
    assert catalog.section("resources").error == str(failure)
    assert catalog.last_error is None


@pytest.mark.parametrize(
    "failure",
    [
        OneCConnectionError("Cannot connect to 1C"),
        OneCTimeoutError("1C did not answer within MCP_ONEC_TIMEOUT=30"),
        OneCAuthError("1C refused the login (HTTP 401)", status_code=401),
    ],
    ids=["connection", "timeout", "auth"],
)
async def test_1c_unreachable_keeps_every_list(failure: OneCError) -> None:
    onec = FakeOneC()
    catalog = make_catalog(onec)
    await catalog.refresh()
    onec.failures["resources"] = failure
    onec.lists["prompts"] = [prompt("new_prompt")]
    assert await catalog.refresh() == set()
    assert onec.calls["prompts"] == 1  # not asked: 1C as a whole is gone
    assert names(await catalog.items("prompts")) == ["report"]
    assert catalog.last_error == str(failure)


async def test_a_kind_1c_refused_once_is_asked_again_at_the_next_refresh() -> None:
    onec = FakeOneC()
    catalog = make_catalog(onec)
    onec.failures["prompts"] = method_not_found()
    await catalog.refresh()
    assert catalog.supports("prompts") is False
    del onec.failures["prompts"]  # the extension in 1C was updated
    assert await catalog.refresh() == {"prompts"}
    assert catalog.supports("prompts") is True
    assert names(await catalog.items("prompts")) == ["report"]


async def test_a_kind_the_manifest_omits_is_not_asked_for() -> None:
    onec = FakeOneC(capabilities={"tools": True, "resources": True, "prompts": False})
    catalog = make_catalog(onec)
    await catalog.refresh()
    await catalog.refresh()
    assert onec.calls["prompts"] == 0
    assert catalog.supports("prompts") is False


async def test_a_timeout_keeps_what_discovery_found() -> None:
    onec = FakeOneC()
    catalog = make_catalog(onec)
    await catalog.refresh()
    onec.failures["tools"] = OneCTimeoutError("1C did not answer within MCP_ONEC_TIMEOUT=30")
    await catalog.refresh()
    assert catalog.discovery is not None
    del onec.failures["tools"]
    await catalog.refresh()
    assert onec.calls["discover"] == 1


async def test_a_lost_connection_discovers_1c_again() -> None:
    onec = FakeOneC()
    catalog = make_catalog(onec)
    await catalog.refresh()
    onec.failures["tools"] = OneCConnectionError("Cannot connect to 1C")
    await catalog.refresh()
    del onec.failures["tools"]
    await catalog.refresh()
    assert onec.calls["discover"] == 2


# --- pausing while nobody is there ------------------------------------------------------


async def test_polling_pauses_when_no_client_is_connected_and_nothing_was_asked(watch_log: Any) -> None:
    onec, clock = FakeOneC(), FakeTime()
    paused = watch_log("polling paused")
    catalog = make_catalog(onec, connected_clients=lambda: 0, clock=clock, sleep=clock.sleep)
    async with catalog.running():
        with anyio.fail_after(5):
            await paused.event.wait()
        assert catalog.status()["polling_paused"] is True
        assert onec.calls["tools"] == 1


async def test_a_request_while_paused_answers_from_the_last_catalog_and_resumes_polling(watch_log: Any) -> None:
    onec, clock = FakeOneC(), FakeTime()
    paused, resumed = watch_log("polling paused"), watch_log("polling resumed")
    changes = Changes()
    catalog = make_catalog(onec, connected_clients=lambda: 0, clock=clock, sleep=clock.sleep, on_change=changes)
    async with catalog.running():
        with anyio.fail_after(5):
            await paused.event.wait()
        changes.event.clear()  # set by the first fetch
        onec.lists["tools"] = [tool("new_report")]
        assert names(await catalog.items("tools")) == ["get_metadata"]  # at once, from memory
        with anyio.fail_after(5):
            await changes.event.wait()  # the background refresh found the new tool
        assert names(await catalog.items("tools")) == ["new_report"]
    assert resumed.count == 1


async def test_polling_goes_on_while_a_client_is_connected() -> None:
    onec, clock = FakeOneC(), FakeTime()
    catalog = make_catalog(onec, connected_clients=lambda: 1, clock=clock, sleep=clock.sleep)
    async with catalog.running():
        with anyio.fail_after(5):
            while onec.calls["tools"] < 3:  # every fetch is one TTL later on the fake clock
                onec.entered["tools"] = asyncio.Event()
                await onec.entered["tools"].wait()
        assert catalog.status()["polling_paused"] is False


async def test_without_a_client_count_polling_never_pauses() -> None:
    onec, clock = FakeOneC(), FakeTime()
    catalog = make_catalog(onec, clock=clock, sleep=clock.sleep)  # stdio: always one client
    async with catalog.running():
        with anyio.fail_after(5):
            while onec.calls["tools"] < 3:
                onec.entered["tools"] = asyncio.Event()
                await onec.entered["tools"].wait()
        assert catalog.status()["polling_paused"] is False


async def test_requests_within_each_ttl_keep_polling_without_a_connected_client() -> None:
    onec, clock = FakeOneC(), FakeTime()

    async def sleep(seconds: float) -> None:  # a stateless HTTP client lists a second before each poll
        await clock.sleep(seconds - 1)
        await catalog.items("tools")
        await clock.sleep(1)

    catalog = make_catalog(onec, connected_clients=lambda: 0, clock=clock, sleep=sleep)
    async with catalog.running():
        with anyio.fail_after(5):
            while onec.calls["tools"] < 3:
                onec.entered["tools"] = asyncio.Event()
                await onec.entered["tools"].wait()
        assert catalog.status()["polling_paused"] is False


async def test_1c_coming_back_is_announced_even_with_the_same_lists() -> None:
    onec = FakeOneC()
    catalog = make_catalog(onec)
    await catalog.refresh()
    onec.failures["tools"] = OneCConnectionError("Cannot connect to 1C")
    assert await catalog.refresh() == set()
    del onec.failures["tools"]
    # Nothing changed in 1C, but clients saw it fail: they are told to look again.
    assert await catalog.refresh() == {"tools", "resources", "prompts"}
    assert await catalog.refresh() == set()  # and only once


# --- resource templates ---------------------------------------------------------------------


async def test_resource_templates_come_with_the_resources_and_their_change_is_a_resources_change() -> None:
    onec = FakeOneC()
    onec.lists["templates"] = [template("document")]
    catalog = make_catalog(onec)
    await catalog.refresh()
    assert [t.uri_template for t in await catalog.templates()] == ["onec://document/{id}"]
    onec.lists["templates"] = [template("document"), template("report")]
    # Clients have no templates/list_changed: resources/list_changed is what makes them list again.
    assert await catalog.refresh() == {"resources"}
    assert names(await catalog.templates()) == ["document", "report"]
    assert await catalog.refresh() == set()


async def test_a_1c_without_templates_is_not_asked_again_until_it_is_discovered_again() -> None:
    onec = FakeOneC()
    onec.failures["templates"] = method_not_found()
    catalog = make_catalog(onec)
    for _ in range(3):
        assert await catalog.refresh() in ({"tools", "resources", "prompts"}, set())
    assert onec.calls["templates"] == 1  # remembered, not asked at every refresh
    assert await catalog.templates() == []
    assert catalog.status()["resource_templates"]["supported"] is False
    # 1C goes away and comes back (a restart, an updated extension): it is asked again.
    del onec.failures["templates"]
    onec.lists["templates"] = [template("document")]
    onec.failures["tools"] = OneCConnectionError("Cannot connect to 1C")
    await catalog.refresh()
    del onec.failures["tools"]
    assert "resources" in await catalog.refresh()
    assert onec.calls["templates"] == 2
    assert names(await catalog.templates()) == ["document"]


async def test_a_failing_templates_list_keeps_the_last_templates_and_the_resources_go_on() -> None:
    onec = FakeOneC()
    onec.lists["templates"] = [template("document")]
    catalog = make_catalog(onec)
    await catalog.refresh()
    onec.failures["templates"] = OneCRpcError("1C returned error -32603: boom", code=-32603, detail="boom")
    onec.lists["resources"] = [resource("new")]
    assert await catalog.refresh() == {"resources"}
    assert names(await catalog.items("resources")) == ["new"]
    assert names(await catalog.templates()) == ["document"]
    assert onec.calls["templates"] == 2  # not a -32601: asked again at the next refresh


async def test_templates_are_not_asked_for_when_1c_serves_no_resources() -> None:
    onec = FakeOneC(capabilities={"tools": True, "resources": False, "prompts": True})
    catalog = make_catalog(onec)
    await catalog.refresh()
    assert onec.calls["templates"] == 0
    assert await catalog.templates() == []


async def test_an_invalid_template_is_skipped_and_the_others_are_served() -> None:
    onec = FakeOneC()
    onec.lists["templates"] = [{"name": "no_uri_template"}, template("document")]
    catalog = make_catalog(onec)
    await catalog.refresh()
    assert names(await catalog.templates()) == ["document"]
    assert catalog.status()["resource_templates"]["skipped"][0].startswith("resource template #0 'no_uri_template'")


# --- what the log says about failures ---------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "py_server.catalog" and r.levelno == logging.WARNING]


async def test_a_failure_before_any_catalog_says_there_is_none_yet_once(caplog: pytest.LogCaptureFixture) -> None:
    onec = FakeOneC()
    onec.failures["discover"] = OneCConnectionError("Cannot connect to 1C at http://srv/base/hs/mcp/manifest")
    catalog = make_catalog(onec)
    with caplog.at_level(logging.INFO, logger="py_server.catalog"):
        for _ in range(3):
            await catalog.refresh()
    assert warnings_of(caplog) == [
        "1C catalog refresh failed, and there is no 1C catalog yet (no 1C tools, resources or prompts are "
        "served until 1C answers): Cannot connect to 1C at http://srv/base/hs/mcp/manifest"
    ]


async def test_a_failure_after_a_fetch_says_how_old_the_served_catalog_is(caplog: pytest.LogCaptureFixture) -> None:
    onec, clock = FakeOneC(), FakeTime()
    catalog = make_catalog(onec, clock=clock)
    await catalog.refresh()
    clock.now += 42
    onec.failures["tools"] = OneCConnectionError("Cannot connect to 1C")
    with caplog.at_level(logging.INFO, logger="py_server.catalog"):
        await catalog.refresh()
        clock.now += 600
        await catalog.refresh()  # the same reason: said once
        onec.failures["tools"] = OneCTimeoutError("1C did not answer")
        await catalog.refresh()  # another reason: said again
        del onec.failures["tools"]
        await catalog.refresh()  # 1C is back
        onec.failures["tools"] = OneCTimeoutError("1C did not answer")
        await catalog.refresh()  # the same reason as before, after a recovery: said again
    assert warnings_of(caplog) == [
        "1C catalog refresh failed, serving the catalog fetched 42 s ago: Cannot connect to 1C",
        "1C catalog refresh failed, serving the catalog fetched 11 min ago: 1C did not answer",
        "1C catalog refresh failed, serving the catalog fetched 0 s ago: 1C did not answer",
    ]


async def test_a_failing_list_says_whether_it_keeps_any_items(caplog: pytest.LogCaptureFixture) -> None:
    onec, clock = FakeOneC(), FakeTime()
    bug = OneCRpcError("1C returned error -32603: Передано значение недопустимого типа", code=-32603, detail="x")
    onec.failures["prompts"] = bug  # the reference extension's prompts/list bug, from the start
    catalog = make_catalog(onec, clock=clock)
    with caplog.at_level(logging.INFO, logger="py_server.catalog"):
        await catalog.refresh()
        await catalog.refresh()
        onec.failures["resources"] = bug
        clock.now += 90
        await catalog.refresh()
    assert warnings_of(caplog) == [
        f"1C prompts/list failed, and none were fetched before, so none are served: {bug}",
        f"1C resources/list failed, keeping the 1 fetched 90 s ago: {bug}",
    ]
