"""Several 1C bases behind one proxy, end to end: demo 1C emulators on loopback with different
catalogs (each has the demo's `get_metadata`, so names collide), the proxy under uvicorn, the SDK's
own clients over Streamable HTTP, SSE and stdio.

Per-base endpoints (/bases/<name>/mcp, /bases/<name>/sse) serve a base exactly as a single-base
proxy does; the combined endpoints (/mcp, /sse) serve every base, names prefixed, URIs wrapped.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from py_server.check import run_check
from py_server.config import Settings
from py_server.demo.onec_emulator import EmulatorState, OneCEmulator

from .conftest import TEST_PASSWORD, http_proxy, proxy_settings, settings_env

pytestmark = pytest.mark.anyio

RAMASHKA = "file:///Контрагенты/Ромашка.md"
NOMENCLATURE = "metadata://Справочники/Номенклатура"
LOGO = "file:///Отчёты/Логотип.png"


def _text_tool(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": {"type": "object", "properties": {}}}


def _answer(text: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda arguments: {"content": [{"type": "text", "text": text}]}


def _erp(state: EmulatorState) -> None:
    """The demo base as it is."""


def _zup(state: EmulatorState) -> None:
    state.remove_tool("post_document")
    state.add_tool(_text_tool("zup_only", "Расчёт зарплаты (только в ЗУП)"), _answer("ЗУП: зарплата рассчитана"))


def _buh(state: EmulatorState) -> None:
    state.remove_tool("query_sales")
    state.add_tool(_text_tool("buh_only", "Оборотно-сальдовая ведомость"), _answer("БУХ: ОСВ сформирована"))


CATALOGS: dict[str, Callable[[EmulatorState], None]] = {"erp": _erp, "zup": _zup, "buh": _buh}


@dataclass
class Bases:
    """Running demo 1C bases and the bases file that names them."""

    emulators: dict[str, OneCEmulator]
    file: Path

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"bases_file": self.file, "rag_backend": "off", "catalog_ttl": 1, **overrides}
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def __getitem__(self, name: str) -> OneCEmulator:
        return self.emulators[name]

    def reset_counters(self) -> None:
        for emulator in self.emulators.values():
            emulator.state.reset_counters()

    def tool_calls(self) -> dict[str, int]:
        return {name: emulator.state.calls["tools/call"] for name, emulator in self.emulators.items()}


@pytest.fixture
def make_bases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Bases]]:
    """Start demo bases by name (each with its own catalog and password) and write their bases file."""
    with contextlib.ExitStack() as stack:

        def make(*names: str) -> Bases:
            emulators: dict[str, OneCEmulator] = {}
            lines: list[str] = []
            for name in names:
                state = EmulatorState(password=f"{TEST_PASSWORD}-{name}")
                CATALOGS[name](state)
                emulators[name] = stack.enter_context(OneCEmulator(state))
                variable = f"{name.upper()}_1C_PASSWORD"
                monkeypatch.setenv(variable, state.password)
                lines += [
                    f"[bases.{name}]",
                    f'url = "{emulators[name].url}"',
                    f'username = "{state.username}"',
                    f'password_env = "{variable}"',
                    "",
                ]
            path = tmp_path / "bases.toml"
            path.write_text("\n".join(lines), encoding="utf-8")
            return Bases(emulators, path)

        yield make


@contextlib.asynccontextmanager
async def connect(
    url: str, transport: str = "streamable_http", *, on_message: Callable[[Any], Any] | None = None
) -> AsyncIterator[tuple[ClientSession, types.InitializeResult]]:
    """An SDK client session to the endpoint under `url` (…/mcp or …/sse) and its initialize result."""
    async with contextlib.AsyncExitStack() as stack:
        if transport == "sse":
            read, write = await stack.enter_async_context(sse_client(f"{url}/sse"))
        else:
            client = await stack.enter_async_context(httpx2.AsyncClient(timeout=30))
            read, write = await stack.enter_async_context(streamable_http_client(f"{url}/mcp", http_client=client))
        session = await stack.enter_async_context(
            ClientSession(read, write, message_handler=on_message, read_timeout_seconds=30)
        )
        initialized = await session.initialize()
        yield session, initialized


class ListChanges:
    """Collects tools/list_changed notifications a client session receives."""

    def __init__(self) -> None:
        self.tools = anyio.Event()
        self.count = 0

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.count += 1
            self.tools.set()


def text_of(result: types.CallToolResult) -> str:
    return "".join(item.text for item in result.content if isinstance(item, types.TextContent))


async def names(session: ClientSession) -> dict[str, types.Tool]:
    return {tool.name: tool for tool in (await session.list_tools()).tools}


async def everything(session: ClientSession) -> dict[str, str]:
    """What an endpoint serves, each answer dumped as JSON (for a byte-for-byte comparison)."""
    return {
        "tools": (await session.list_tools()).model_dump_json(by_alias=True),
        "resources": (await session.list_resources()).model_dump_json(by_alias=True),
        "prompts": (await session.list_prompts()).model_dump_json(by_alias=True),
        "read": (await session.read_resource(RAMASHKA)).model_dump_json(by_alias=True),
        "call": (await session.call_tool("get_metadata", {"type": "Документы"})).model_dump_json(by_alias=True),
        "prompt": (await session.get_prompt("explain_object", {"name": "Справочник.Номенклатура"})).model_dump_json(
            by_alias=True
        ),
    }


# --- per-base endpoints are a single-base proxy --------------------------------------------


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_each_per_base_endpoint_serves_exactly_what_a_single_base_proxy_serves(
    make_bases: Callable[..., Bases], transport: str
) -> None:
    bases = make_bases("erp", "zup", "buh")
    served: dict[str, dict[str, str]] = {}
    initialized: dict[str, types.InitializeResult] = {}
    with http_proxy(bases.settings(rag_backend="local")) as multi:
        for name in bases.emulators:
            async with connect(f"{multi.url}/bases/{name}", transport) as (session, init):
                served[name], initialized[name] = await everything(session), init
    for name, emulator in bases.emulators.items():
        with http_proxy(proxy_settings(emulator, rag_backend="local", catalog_ttl=1)) as single:
            async with connect(single.url, transport) as (session, init):
                alone = await everything(session)
        assert served[name] == alone, name
        assert initialized[name].model_dump_json() == init.model_dump_json(), name

    # Each base's own catalog, unprefixed, with the local tool served once, unprefixed, on each.
    tools = {name: [tool["name"] for tool in json.loads(dump["tools"])["tools"]] for name, dump in served.items()}
    assert "zup_only" in tools["zup"] and "post_document" not in tools["zup"]
    assert "buh_only" in tools["buh"] and "query_sales" not in tools["buh"]
    assert "zup_only" not in tools["erp"] and "post_document" in tools["erp"]
    for listed in tools.values():
        assert listed.count("compliance_rag") == 1 and listed.count("get_metadata") == 1
        assert not any("__" in tool for tool in listed)
    assert RAMASHKA in served["zup"]["read"]  # verbatim, not percent-encoded nor wrapped


# --- the combined endpoint ------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
async def test_the_combined_endpoint_lists_every_base_prefixed_and_routes_each_call(
    make_bases: Callable[..., Bases], count: int
) -> None:
    bases = make_bases(*list(CATALOGS)[:count])
    with http_proxy(bases.settings(rag_backend="local")) as server:
        async with connect(server.url) as (session, _):
            tools = await names(session)
            prompts = {prompt.name: prompt for prompt in (await session.list_prompts()).prompts}

            for name in bases.emulators:
                tool = tools[f"{name}__get_metadata"]
                assert tool.description is not None and tool.description.startswith(f"[{name}] Возвращает список")
                assert prompts[f"{name}__explain_object"].description == f"[{name}] Описание объекта метаданных"
            assert "get_metadata" not in tools  # a 1C tool only ever appears with its base
            assert "zup__zup_only" in tools and "erp__zup_only" not in tools
            assert "erp__post_document" in tools and "zup__post_document" not in tools
            # The local extra: once, unprefixed, its own description.
            local = [tool for tool in tools if tool.endswith("compliance_rag")]
            assert local == ["compliance_rag"] and not (tools["compliance_rag"].description or "").startswith("[")
            expected = {f"{name}__{tool}" for name, onec in bases.emulators.items() for tool in onec.state.tools}
            assert tools.keys() == expected | {"compliance_rag"}

            # Each call reaches its own base, and only it.
            for name in bases.emulators:
                bases.reset_counters()
                result = await session.call_tool(f"{name}__get_metadata", {"type": "Справочники"})
                assert not result.is_error and "Номенклатура" in text_of(result)
                assert bases.tool_calls() == {other: int(other == name) for other in bases.emulators}
            bases.reset_counters()
            assert text_of(await session.call_tool("zup__zup_only", {})) == "ЗУП: зарплата рассчитана"
            prompt = await session.get_prompt("zup__explain_object", {"name": "Справочник.Номенклатура"})
            assert "Справочник.Номенклатура" in str(prompt.messages[0].content)
            assert bases["zup"].state.calls["tools/call"] == 1 and bases["zup"].state.calls["prompts/get"] == 1
            assert bases["erp"].state.calls["tools/call"] == bases["erp"].state.calls["prompts/get"] == 0
            # The local tool runs in the proxy: no base hears of it.
            bases.reset_counters()
            rag = await session.call_tool("compliance_rag", {"query": "повторный ремонт"})
            assert not rag.is_error
            assert set(bases.tool_calls().values()) == {0}


async def test_cyrillic_resource_uris_are_wrapped_and_unwrapped_byte_for_byte(
    make_bases: Callable[..., Bases],
) -> None:
    bases = make_bases("erp", "zup")
    with http_proxy(bases.settings()) as server:
        async with connect(server.url) as (combined, _), connect(f"{server.url}/bases/zup") as (alone, _):
            uris = [resource.uri for resource in (await combined.list_resources()).resources]
            for name in ("erp", "zup"):
                for original in (RAMASHKA, NOMENCLATURE, LOGO):
                    assert f"onec-base://{name}/{original}" in uris
            assert len(uris) == 2 * len(bases["erp"].state.resources)
            listed = next(r for r in (await combined.list_resources()).resources if r.uri.endswith(RAMASHKA))
            assert listed.description is not None and listed.description.startswith("[erp] Карточка контрагента")

            bases.reset_counters()
            for original in (RAMASHKA, LOGO):
                wrapped = f"onec-base://zup/{original}"
                read = await combined.read_resource(wrapped)
                direct = await alone.read_resource(original)
                assert [item.uri for item in read.contents] == [wrapped]  # the contents' URI wrapped too
                assert [item.uri for item in direct.contents] == [original]
                # Apart from the URI, what comes back is the base's own answer.
                assert read.contents[0].model_copy(update={"uri": original}) == direct.contents[0]
            assert bases["zup"].state.calls["resources/read"] == 4  # the emulator matches URIs exactly
            assert bases["erp"].state.calls["resources/read"] == 0
            assert "ООО «Ромашка»" in (await combined.read_resource(f"onec-base://erp/{RAMASHKA}")).contents[0].text  # type: ignore[union-attr]

            # An unwrapped URI on the combined endpoint names no base.
            with pytest.raises(MCPError, match=r"onec-base://<base>/<URI>, with a base of: erp, zup"):
                await combined.read_resource(RAMASHKA)
            with pytest.raises(MCPError, match=r"with a base of: erp, zup"):
                await combined.read_resource(f"onec-base://nope/{RAMASHKA}")


async def test_a_name_with_an_unknown_base_is_a_json_rpc_error_listing_the_bases(
    make_bases: Callable[..., Bases],
) -> None:
    bases = make_bases("erp", "zup", "buh")
    with http_proxy(bases.settings()) as server:
        async with connect(server.url) as (session, _):
            for name in ("nope__get_metadata", "get_metadata", "zup__post_document", "zup__"):
                with pytest.raises(MCPError) as raised:
                    await session.call_tool(name, {})
                assert raised.value.error.code == types.INVALID_PARAMS
                assert f"Unknown tool: '{name}'" in raised.value.error.message
                assert "<base>__<name>, with a base of: erp, zup, buh" in raised.value.error.message
            with pytest.raises(MCPError, match="with a base of: erp, zup, buh"):
                await session.get_prompt("nope__explain_object", {"name": "x"})
    assert set(bases.tool_calls().values()) == {0}


async def test_a_custom_separator_names_the_tools(make_bases: Callable[..., Bases]) -> None:
    bases = make_bases("erp", "zup")
    with http_proxy(bases.settings(base_separator=".")) as server:
        async with connect(server.url) as (session, _):
            tools = await names(session)
            assert {"erp.get_metadata", "zup.get_metadata", "zup.zup_only"} <= tools.keys()
            assert not any("__" in name for name in tools)
            bases.reset_counters()
            assert not (await session.call_tool("zup.get_metadata", {})).is_error
            assert bases.tool_calls() == {"erp": 0, "zup": 1}
            with pytest.raises(MCPError, match=r"named <base>\.<name>"):
                await session.call_tool("zup__get_metadata", {})


async def test_the_combined_sse_endpoint_routes_like_streamable_http(make_bases: Callable[..., Bases]) -> None:
    bases = make_bases("erp", "zup")
    with http_proxy(bases.settings()) as server:
        async with connect(server.url, "sse") as (session, _):
            assert {"erp__get_metadata", "zup__zup_only"} <= (await names(session)).keys()
            bases.reset_counters()
            assert text_of(await session.call_tool("zup__zup_only", {})) == "ЗУП: зарплата рассчитана"
            read = await session.read_resource(f"onec-base://erp/{RAMASHKA}")
            assert read.contents[0].uri == f"onec-base://erp/{RAMASHKA}"
            assert bases.tool_calls() == {"erp": 0, "zup": 1}
            assert bases["erp"].state.calls["resources/read"] == 1


# --- bases are independent ------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_a_stopped_base_leaves_the_others_answering_and_its_return_is_announced(
    make_bases: Callable[..., Bases], transport: str
) -> None:
    bases = make_bases("erp", "zup", "buh")
    combined_changes, zup_changes = ListChanges(), ListChanges()
    with http_proxy(bases.settings()) as server:
        async with (
            connect(server.url, transport, on_message=combined_changes) as (combined, _),
            connect(f"{server.url}/bases/zup", transport, on_message=zup_changes) as (zup, _),
        ):
            before = await names(combined)
            bases["zup"].stop()
            down = await combined.call_tool("zup__get_metadata", {})
            assert down.is_error and "1C is unavailable" in text_of(down)
            bases.reset_counters()
            for name in ("erp", "buh"):
                assert not (await combined.call_tool(f"{name}__get_metadata", {})).is_error
            assert bases.tool_calls() == {"erp": 1, "zup": 0, "buh": 1}
            # The stopped base's tools stay listed from its last known catalog.
            assert (await names(combined)).keys() == before.keys()
            assert "zup_only" in await names(zup)

            bases["zup"].state.add_tool(_text_tool("zup_new", "Новый отчёт ЗУП"), _answer("новый"))
            bases["zup"].start()
            with anyio.fail_after(15):
                await combined_changes.tools.wait()
                await zup_changes.tools.wait()
            assert "zup__zup_new" in await names(combined)
            assert "zup_new" in await names(zup)
            assert text_of(await combined.call_tool("zup__zup_new", {})) == "новый"


async def test_a_base_down_at_start_does_not_hold_up_the_others_and_joins_when_it_comes_up(
    make_bases: Callable[..., Bases],
) -> None:
    bases = make_bases("erp", "zup")
    bases["zup"].stop()
    changes, erp_changes = ListChanges(), ListChanges()
    with http_proxy(bases.settings()) as server:
        async with (
            connect(server.url, on_message=changes) as (combined, _),
            connect(f"{server.url}/bases/erp", on_message=erp_changes) as (erp, _),
        ):
            tools = await names(combined)
            assert "erp__get_metadata" in tools and not any(name.startswith("zup__") for name in tools)
            bases["zup"].start()
            with anyio.fail_after(15):
                await changes.tools.wait()
            assert {"zup__get_metadata", "zup__zup_only"} <= (await names(combined)).keys()
            await erp.list_tools()  # a round trip on the erp endpoint after the notice went out
            assert erp_changes.count == 0  # zup's catalog is none of its business


async def test_a_slow_base_does_not_hold_up_another(make_bases: Callable[..., Bases]) -> None:
    bases = make_bases("erp", "zup")
    with http_proxy(bases.settings()) as server:
        async with connect(server.url) as (session, _):
            await session.list_tools()
            bases["zup"].state.latency = 2.0
            slow: list[types.CallToolResult] = []

            async def call_zup() -> None:
                slow.append(await session.call_tool("zup__zup_only", {}))

            async with anyio.create_task_group() as group:
                group.start_soon(call_zup)
                with anyio.fail_after(5):
                    while bases["zup"].state.in_flight == 0:  # noqa: ASYNC110 - set in the emulator's thread
                        await anyio.sleep(0.01)
                fast = await session.call_tool("erp__get_metadata", {})
                assert bases["zup"].state.in_flight == 1 and not slow  # erp answered while zup still works
            assert not fast.is_error
            assert text_of(slow[0]) == "ЗУП: зарплата рассчитана"


async def test_a_base_refusing_the_login_leaves_the_others_working(
    make_bases: Callable[..., Bases], monkeypatch: pytest.MonkeyPatch
) -> None:
    bases = make_bases("erp", "zup")
    monkeypatch.setenv("ZUP_1C_PASSWORD", "wrong")
    with http_proxy(bases.settings()) as server:
        async with connect(server.url) as (session, _):
            tools = await names(session)
            assert "erp__get_metadata" in tools and not any(name.startswith("zup__") for name in tools)
            assert not (await session.call_tool("erp__get_metadata", {})).is_error
            refused = await session.call_tool("zup__get_metadata", {})
            assert refused.is_error and "1C is unavailable" in text_of(refused)
        async with httpx2.AsyncClient() as client:
            status = (await client.get(f"{server.url}/health")).json()
    assert "zup: 1C refused the proxy's login" in status["reason"]


# --- health and check -----------------------------------------------------------------------


def test_health_reports_each_base_and_readiness_follows_ready_when(make_bases: Callable[..., Bases]) -> None:
    bases = make_bases("erp", "zup")
    with http_proxy(bases.settings()) as server:
        healthy = httpx.get(f"{server.url}/health")
    assert healthy.status_code == 200
    assert healthy.json()["reason"] == "1C answers for all 2 bases"
    assert set(healthy.json()["bases"]) == {"erp", "zup"}
    assert healthy.json()["bases"]["zup"]["url"].startswith(bases["zup"].url + "/")
    assert healthy.json()["ready_when"] == "all"

    bases["zup"].stop()
    for ready_when, expected in (("all", 503), ("any", 200)):
        with http_proxy(bases.settings(ready_when=ready_when)) as server:
            report = httpx.get(f"{server.url}/health")
            ready = httpx.get(f"{server.url}/health/ready")
        assert (report.status_code, ready.status_code) == (expected, expected), ready_when
        body = report.json()
        assert body["reason"] == "1 of 2 bases answer; zup: 1C is unreachable"
        assert "round_trip_ms" in body["bases"]["erp"] and "error" not in body["bases"]["erp"]
        assert "error" in body["bases"]["zup"] and "round_trip_ms" not in body["bases"]["zup"]
        assert ready.json() == {"status": body["status"], "reason": body["reason"]}


def _blocks(output: str) -> dict[str, str]:
    """`check`'s per-base blocks by base name."""
    found = {}
    for block in output.split("\n\n"):
        first = block.strip().splitlines()[0]
        if first.startswith("base "):
            found[first.split()[1].rstrip(":")] = block
    return found


async def test_check_prints_one_block_per_base_and_fails_when_one_base_fails(
    make_bases: Callable[..., Bases],
) -> None:
    bases = make_bases("erp", "zup", "buh")
    out = io.StringIO()
    assert await run_check(bases.settings(), out=out) == 0, out.getvalue()
    blocks = _blocks(out.getvalue())
    assert list(blocks) == ["erp", "zup", "buh"]
    for name, block in blocks.items():
        assert block.startswith(f"base {name}: 1C HTTP service: {bases[name].url}/hs/mcp  (user: demo)")
        assert "[FAIL]" not in block and "[warn]" not in block
    # Each block lists its own base's catalog.
    assert "post_document" in blocks["erp"] and "post_document" not in blocks["zup"]
    assert "query_sales" in blocks["zup"] and "query_sales" not in blocks["buh"]

    bases["zup"].stop()
    out = io.StringIO()
    assert await run_check(bases.settings(), out=out) == 1
    blocks = _blocks(out.getvalue())
    assert "[FAIL] cannot talk to 1C" in blocks["zup"]
    assert "[FAIL]" not in blocks["erp"] + blocks["buh"]
    assert out.getvalue().count("[FAIL]") == 1


async def test_check_warns_about_prefixed_names_over_64_characters(make_bases: Callable[..., Bases]) -> None:
    bases = make_bases("erp", "zup")
    long, fits = "r" * 60, "f" * 59  # zup__ + 60 = 65 characters; zup__ + 59 = 64
    for name in (long, fits):
        bases["zup"].state.add_tool(_text_tool(name, "длинное имя"), _answer("ok"))
    out = io.StringIO()
    assert await run_check(bases.settings(), out=out) == 0  # a warning, not a failure
    blocks = _blocks(out.getvalue())
    warnings = [line for line in blocks["zup"].splitlines() if line.startswith("[warn]")]
    assert warnings == [f"[warn] tools named longer than 64 characters on /mcp (many clients refuse them): zup__{long}"]
    assert "[warn]" not in blocks["erp"]

    out = io.StringIO()
    assert await run_check(bases.settings(base_separator="."), out=out) == 0
    assert "[warn]" not in out.getvalue()  # zup. + 60 = 64 characters


# --- stdio ----------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["zup", None])
async def test_stdio_serves_one_base_with_base_and_every_base_without(
    make_bases: Callable[..., Bases], base: str | None
) -> None:
    bases = make_bases("erp", "zup")
    args = ["-m", "py_server", "stdio"] + (["--base", base] if base else [])
    params = StdioServerParameters(command=sys.executable, args=args, env=settings_env(bases.settings()))
    async with stdio_client(params) as (read, write), ClientSession(read, write, read_timeout_seconds=30) as session:
        await session.initialize()
        tools = await names(session)
        if base is not None:
            assert "zup_only" in tools and "post_document" not in tools and "get_metadata" in tools
            assert not any("__" in name for name in tools)
            assert not (await session.call_tool("get_metadata", {})).is_error
            uri = RAMASHKA
        else:
            assert {"erp__post_document", "zup__zup_only", "erp__get_metadata", "zup__get_metadata"} <= tools.keys()
            assert not (await session.call_tool("erp__get_metadata", {})).is_error
            uri = f"onec-base://zup/{RAMASHKA}"
        read_result = await session.read_resource(uri)
        assert read_result.contents[0].uri == uri
    assert bases["zup"].state.calls["resources/read"] == 1
    assert bases.tool_calls() == ({"erp": 0, "zup": 1} if base else {"erp": 1, "zup": 0})


# --- found in review: each failed before its fix ---


async def test_a_base_name_ending_in_part_of_the_separator_is_reachable(make_bases: Callable[..., Bases]) -> None:
    bases = make_bases("erp", "zup")
    text = bases.file.read_text(encoding="utf-8").replace("[bases.erp]", "[bases.erp_]")
    bases.file.write_text(text, encoding="utf-8")
    with http_proxy(bases.settings()) as server:
        async with connect(server.url) as (session, _):
            assert "erp___get_metadata" in await names(session)
            assert not (await session.call_tool("erp___get_metadata", {})).is_error


async def test_a_resource_link_in_a_tool_result_can_be_read_on_the_combined_endpoint(
    make_bases: Callable[..., Bases],
) -> None:
    bases = make_bases("erp", "zup")
    link = {"type": "resource_link", "uri": RAMASHKA, "name": "Ромашка.md"}
    bases["erp"].state.add_tool(_text_tool("link", "Ссылка на карточку"), lambda arguments: {"content": [link]})
    with http_proxy(bases.settings()) as server:
        async with connect(server.url) as (session, _):
            result = await session.call_tool("erp__link", {})
            linked = result.content[0]
            assert isinstance(linked, types.ResourceLink)
            read = await session.read_resource(linked.uri)
    assert "ООО «Ромашка»" in read.contents[0].text  # type: ignore[union-attr]


async def test_check_names_the_bases_service_accounts(make_bases: Callable[..., Bases]) -> None:
    bases = make_bases("erp", "zup")
    out = io.StringIO()
    assert await run_check(bases.settings(), out=out) == 0
    assert "the service account '-'" not in out.getvalue()


async def test_a_login_check_on_the_combined_endpoint_waits_for_the_first_base_that_accepts() -> None:
    from py_server.config import Settings
    from py_server.identity import Identity
    from py_server.mcp_server import BaseSpec, MCPProxy
    from py_server.onec_client import OneCClient
    from py_server.wiring import build_policies

    settings = Settings(_env_file=None, onec_url="http://127.0.0.1:9/x", rag_backend="off")  # type: ignore[call-arg]
    specs = [
        BaseSpec(name, settings, OneCClient.from_settings(settings), build_policies(settings)) for name in ("a", "b")
    ]
    proxy = MCPProxy(settings, bases=specs)
    hanging, checked = anyio.Event(), []

    async def never(identity: Identity) -> None:
        await hanging.wait()

    async def accepts(identity: Identity) -> None:
        checked.append(identity)

    proxy.bases["a"].upstreams.verify = never  # type: ignore[method-assign]
    proxy.bases["b"].upstreams.verify = accepts  # type: ignore[method-assign]
    with anyio.fail_after(2):  # not the slow base's timeout
        await proxy.verify_login(Identity("ivanov"))
    assert checked == [Identity("ivanov")]
    for spec in specs:
        await spec.client.aclose()
