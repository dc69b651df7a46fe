"""`resources/templates/list` end to end: the SDK's own client asks, as many clients do at connect time.

A 1C that lists templates has them served as they are (wrapped on the endpoint that serves every
base); the reference extension, which answers -32601, gives an empty list instead of an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from py_server.config import Settings
from py_server.demo.onec_emulator import DEMO_RESOURCE_TEMPLATES, EmulatorState, OneCEmulator

from .conftest import TEST_PASSWORD, http_proxy, mcp_session, proxy_settings

pytestmark = pytest.mark.anyio

CATALOGS = "metadata://Справочники/{name}"
DOCUMENTS = "metadata://Документы/{name}"
NOMENCLATURE = "metadata://Справочники/Номенклатура"


@pytest.fixture
def templated() -> Iterator[OneCEmulator]:
    """The demo base as a newer 1C backend that lists resource templates."""
    state = EmulatorState(password=TEST_PASSWORD, resource_templates=list(DEMO_RESOURCE_TEMPLATES))
    with OneCEmulator(state) as running:
        yield running


def dumped(templates: list[types.ResourceTemplate]) -> list[dict[str, Any]]:
    return [template.model_dump(by_alias=True, exclude_none=True) for template in templates]


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_the_client_gets_1c_s_templates_as_1c_lists_them(templated: OneCEmulator, transport: str) -> None:
    async with mcp_session(transport, proxy_settings(templated)) as session:
        listed = await session.list_resource_templates()
        # A URI made from a template is read like any resource.
        read = await session.read_resource(CATALOGS.replace("{name}", "Номенклатура"))
    assert dumped(listed.resource_templates) == list(DEMO_RESOURCE_TEMPLATES)
    assert [item.uri for item in read.contents] == [NOMENCLATURE]


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_a_1c_without_templates_gives_an_empty_list_not_an_error(emulator: OneCEmulator, transport: str) -> None:
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        initialized = session.initialize_result
        assert initialized is not None and initialized.capabilities.resources is not None  # advertised, so asked
        for _ in range(3):
            assert (await session.list_resource_templates()).resource_templates == []
        assert (await session.list_resources()).resources  # resources are served as before
    # Asked once at start; the lists are answered from memory.
    assert emulator.state.calls["resources/templates/list"] == 1


async def test_the_resource_policy_hides_templates_it_matches(templated: OneCEmulator) -> None:
    settings = proxy_settings(templated, resources_deny=["metadata://Документы/*"])
    async with mcp_session("streamable_http", settings) as session:
        listed = await session.list_resource_templates()
    assert [template.uri_template for template in listed.resource_templates] == [CATALOGS]


class ResourceChanges:
    def __init__(self) -> None:
        self.event = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceListChangedNotification):
            self.event.set()


async def test_a_new_template_in_1c_is_announced_as_a_resources_change(templated: OneCEmulator) -> None:
    changes = ResourceChanges()
    async with mcp_session("streamable_http", proxy_settings(templated, catalog_ttl=1), message_handler=changes) as s:
        assert len((await s.list_resource_templates()).resource_templates) == 2
        added = {"uriTemplate": "file:///Отчёты/{file}", "name": "Отчёт"}
        templated.state.resource_templates = [*DEMO_RESOURCE_TEMPLATES, added]
        with anyio.fail_after(15):
            await changes.event.wait()  # the next poll of 1C finds it
        listed = await s.list_resource_templates()
    assert [template.uri_template for template in listed.resource_templates][-1] == "file:///Отчёты/{file}"


# --- several bases ------------------------------------------------------------------------------


@contextlib.contextmanager
def two_bases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """erp lists templates, zup is the reference extension (no templates); their bases file's settings."""
    lines: list[str] = []
    with contextlib.ExitStack() as stack:
        for name, templates in (("erp", list(DEMO_RESOURCE_TEMPLATES)), ("zup", None)):
            state = EmulatorState(password=f"{TEST_PASSWORD}-{name}", resource_templates=templates)
            onec = stack.enter_context(OneCEmulator(state))
            monkeypatch.setenv(f"{name.upper()}_1C_PASSWORD", state.password)
            lines += [f"[bases.{name}]", f'url = "{onec.url}"', 'username = "demo"']
            lines += [f'password_env = "{name.upper()}_1C_PASSWORD"', ""]
        path = tmp_path / "bases.toml"
        path.write_text("\n".join(lines), encoding="utf-8")
        yield Settings(_env_file=None, bases_file=path, rag_backend="off")  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[ClientSession]:
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx2.AsyncClient(timeout=30))
        read, write = await stack.enter_async_context(streamable_http_client(f"{url}/mcp", http_client=client))
        session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=30))
        await session.initialize()
        yield session


async def test_the_combined_endpoint_wraps_each_base_s_templates_like_its_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with two_bases(tmp_path, monkeypatch) as settings, http_proxy(settings) as server:
        async with connect(server.url) as combined, connect(f"{server.url}/bases/erp") as erp:
            listed = (await combined.list_resource_templates()).resource_templates
            alone = (await erp.list_resource_templates()).resource_templates
            wrapped = listed[0].uri_template.replace("{name}", "Номенклатура")
            read = await combined.read_resource(wrapped)
    assert [template.uri_template for template in listed] == [
        f"onec-base://erp/{CATALOGS}",
        f"onec-base://erp/{DOCUMENTS}",
    ]
    assert listed[0].description == f"[erp] {DEMO_RESOURCE_TEMPLATES[0]['description']}"
    assert dumped(alone) == list(DEMO_RESOURCE_TEMPLATES)  # the base's own endpoint: as 1C lists them
    # The URI a client makes from a wrapped template reads that base's resource.
    assert [item.uri for item in read.contents] == [f"onec-base://erp/{NOMENCLATURE}"]
