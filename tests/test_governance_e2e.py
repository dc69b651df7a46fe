"""Governance seen from a real client over stdio and Streamable HTTP: the tool policy, read-only
mode and the audit log, against the demo 1C base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from py_server.demo.onec_emulator import OneCEmulator

from .conftest import TEST_PASSWORD, http_proxy, mcp_session, proxy_settings

pytestmark = pytest.mark.anyio
E2E_TRANSPORTS = ("stdio", "streamable_http")
TOKEN = "audit-t0ken-never-logged"


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("transport", E2E_TRANSPORTS)
async def test_a_denied_tool_is_neither_listed_nor_callable(emulator: OneCEmulator, transport: str) -> None:
    settings = proxy_settings(emulator, tools_deny=["post_*"])
    async with mcp_session(transport, settings) as session:
        listed = [tool.name for tool in (await session.list_tools()).tools]
        with pytest.raises(MCPError) as refused:
            await session.call_tool("post_document", {"number": "ТД00-000003"})
    assert "post_document" not in listed and "get_metadata" in listed
    assert "MCP_TOOLS_DENY (pattern 'post_*')" in refused.value.error.message
    assert "Unknown tool" not in refused.value.error.message
    assert emulator.state.calls["tools/call"] == 0


@pytest.mark.parametrize("transport", E2E_TRANSPORTS)
async def test_read_only_hides_a_writing_tool_and_keeps_the_readers(emulator: OneCEmulator, transport: str) -> None:
    settings = proxy_settings(emulator, read_only=True, read_only_tools=["get_metadata"])
    async with mcp_session(transport, settings) as session:
        listed = {tool.name for tool in (await session.list_tools()).tools}
        with pytest.raises(MCPError) as refused:
            await session.call_tool("post_document", {"number": "ТД00-000003"})
        allowed = await session.call_tool("get_metadata", {})
    assert listed == {"get_metadata", "query_sales", "current_user"}  # named by the admin; declare readOnlyHint
    assert "MCP_READ_ONLY" in refused.value.error.message
    assert not allowed.is_error
    assert emulator.state.calls["tools/call"] == 1


@pytest.mark.parametrize("transport", E2E_TRANSPORTS)
async def test_hidden_resources_and_prompts_are_refused_with_their_setting(
    emulator: OneCEmulator, transport: str
) -> None:
    settings = proxy_settings(emulator, resources_deny=["file://*"], prompts_allow=["sales_*"])
    async with mcp_session(transport, settings) as session:
        resources = (await session.list_resources()).resources
        prompts = [prompt.name for prompt in (await session.list_prompts()).prompts]
        hidden_uri = next(uri for uri in emulator.state.resources if uri.startswith("file://"))
        with pytest.raises(MCPError) as read_refused:
            await session.read_resource(hidden_uri)
        with pytest.raises(MCPError) as prompt_refused:
            await session.get_prompt("monthly_report", {})
    assert resources and not any(str(resource.uri).startswith("file://") for resource in resources)
    assert prompts == ["sales_analysis"]
    assert "MCP_RESOURCES_DENY" in read_refused.value.error.message
    assert "MCP_PROMPTS_ALLOW" in prompt_refused.value.error.message


@pytest.mark.parametrize("transport", E2E_TRANSPORTS)
async def test_the_audit_log_has_one_line_per_call_with_its_outcome(
    emulator: OneCEmulator, transport: str, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    settings = proxy_settings(emulator, audit_log=str(log), audit_arguments=True, tools_deny=["post_*"])
    async with mcp_session(transport, settings) as session:
        await session.list_tools()
        await session.call_tool("get_metadata", {})
        await session.call_tool("describe_object", {"name": "Справочник.НетТакого"})  # 1C: isError
        with pytest.raises(MCPError):
            await session.call_tool("post_document", {"number": "ТД00-000003"})
        with pytest.raises(MCPError):
            await session.call_tool("no_such_tool", {})
        await session.read_resource(next(iter(emulator.state.resources)))
    lines = audit_lines(log)
    assert [(line["method"], line["target"], line["outcome"]) for line in lines] == [
        ("tools/call", "get_metadata", "ok"),
        ("tools/call", "describe_object", "tool_error"),
        ("tools/call", "post_document", "denied"),
        ("tools/call", "no_such_tool", "error"),
        ("resources/read", next(iter(emulator.state.resources)), "ok"),
    ]
    assert {line["transport"] for line in lines} == {transport}
    assert lines[1]["arguments"] == {"name": "Справочник.НетТакого"}
    assert lines[0]["result_bytes"] > 0 and lines[0]["duration_ms"] >= 0
    assert TEST_PASSWORD not in log.read_text(encoding="utf-8")


async def test_the_audit_log_names_the_http_credential_not_its_secret(emulator: OneCEmulator, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    settings = proxy_settings(emulator, audit_log=str(log), auth_token=TOKEN)
    async with mcp_session("streamable_http", settings, headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        await session.call_tool("get_metadata", {})
    (line,) = audit_lines(log)
    assert line["who"] == "bearer-token"
    assert line["session"]
    assert TOKEN not in log.read_text(encoding="utf-8")


def test_health_detail_shows_what_the_policy_hides_and_patterns_that_match_nothing(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator, tools_deny=["post_*", "post_docment"], read_only=True)) as server:
        policy = httpx.get(f"{server.url}/health").json()["policy"]
    assert policy["hidden"]["tools"]["post_document"] == "MCP_TOOLS_DENY"
    assert policy["hidden"]["tools"]["get_metadata"] == "MCP_READ_ONLY"
    assert policy["warnings"] == ["MCP_TOOLS_DENY pattern 'post_docment' matches no tool"]


ROMASHKA_PII = (
    "7762096653",
    "40702810927365791706",
    "+7 (495) 788-12-34",
    "info@romashka.example.ru",
    "+7 (916) 482-17-35",
)
ROMASHKA_KEPT = (
    "ООО «Ромашка»",
    "776201001",
    "1027766392334",
    "125009, г. Москва, ул. Тверская, д. 7, оф. 12",
    "044525974",
)


@pytest.mark.parametrize("transport", E2E_TRANSPORTS)
async def test_masked_personal_data_never_reaches_the_client_and_the_rest_is_unchanged(
    emulator: OneCEmulator, transport: str
) -> None:
    async with mcp_session(transport, proxy_settings(emulator, mask_pii=["all"])) as session:
        first = await session.call_tool("get_counterparty", {"name": "ромашка"})
        again = await session.call_tool("get_counterparty", {"name": "ромашка"})
        card = await session.read_resource("file:///Контрагенты/Ромашка.md")
    text = first.content[0].text  # type: ignore[union-attr]
    structured = json.dumps(first.structured_content, ensure_ascii=False)
    card_text = card.contents[0].text  # type: ignore[union-attr]
    for value in ROMASHKA_PII:
        assert value not in text and value not in structured and value not in card_text, value
    for value in ROMASHKA_KEPT:
        assert value in structured, value
    assert "[ИНН#" in text and "[СЧЁТ#" in structured and "[EMAIL#" in card_text
    assert again.content[0].text == text  # type: ignore[union-attr]  # the same value, the same tag
    assert first.meta is not None and first.meta["onec-mcp-proxy/masked"]["inn"] >= 1


@pytest.mark.parametrize("transport", E2E_TRANSPORTS)
async def test_without_masking_the_same_data_arrives_as_1c_sent_it(emulator: OneCEmulator, transport: str) -> None:
    async with mcp_session(transport, proxy_settings(emulator)) as session:
        result = await session.call_tool("get_counterparty", {"name": "ромашка"})
    structured = json.dumps(result.structured_content, ensure_ascii=False)
    assert all(value in structured for value in ROMASHKA_PII[:4])
    assert result.meta is None or "onec-mcp-proxy/masked" not in result.meta


async def test_images_are_never_masked(emulator: OneCEmulator) -> None:
    arguments = {"period_start": "2024-01-01", "period_end": "2024-12-31"}
    async with mcp_session("streamable_http", proxy_settings(emulator)) as plain:
        expected = await plain.call_tool("sales_chart", arguments)
    async with mcp_session("streamable_http", proxy_settings(emulator, mask_pii=["all"])) as masked:
        got = await masked.call_tool("sales_chart", arguments)
    images = [item for item in got.content if item.type == "image"]
    assert images and images == [item for item in expected.content if item.type == "image"]


async def test_audited_arguments_are_masked_like_results(emulator: OneCEmulator, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    settings = proxy_settings(emulator, audit_log=str(log), audit_arguments=True, mask_pii=["inn"])
    async with mcp_session("streamable_http", settings) as session:
        await session.call_tool("get_counterparty", {"inn": "7762096653"})
    (line,) = audit_lines(log)
    assert "7762096653" not in log.read_text(encoding="utf-8")
    assert line["arguments"]["inn"].startswith("[ИНН#")
    assert line["masked"]["inn"] >= 1


async def test_a_large_result_is_masked_in_a_worker_thread(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from py_server import mcp_server

    on_event_loop: list[bool] = []
    monkeypatch.setattr(mcp_server, "MASK_IN_THREAD_BYTES", 100)  # the staff list is a few KB
    original = mcp_server.Masker.mask_call_result

    def recording(self: Any, result: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_event_loop.append(True)
        except RuntimeError:  # no loop runs in this thread: a worker
            on_event_loop.append(False)
        return original(self, result)

    monkeypatch.setattr(mcp_server.Masker, "mask_call_result", recording)
    async with mcp_session("streamable_http", proxy_settings(emulator, mask_pii=["all"])) as session:
        result = await session.call_tool("list_staff", {})
    assert on_event_loop == [False]
    assert "[СНИЛС#" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", E2E_TRANSPORTS)
async def test_1c_error_text_for_resources_and_prompts_is_masked_too(emulator: OneCEmulator, transport: str) -> None:
    async with mcp_session(transport, proxy_settings(emulator, mask_pii=["email", "inn"])) as session:
        with pytest.raises(MCPError) as read_error:
            await session.read_resource("file:///Контрагенты/ivanov@romashka.example.ru")
        with pytest.raises(MCPError) as prompt_error:
            await session.get_prompt("отчёт ИНН 7762096653", {})
    assert "ivanov@romashka.example.ru" not in read_error.value.error.message
    assert "[EMAIL#" in read_error.value.error.message
    assert "7762096653" not in prompt_error.value.error.message
