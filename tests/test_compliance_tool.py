"""ComplianceExtra / the compliance_rag tool: backend choice, the tool definition, results that the
SDK client accepts (outputSchema), _meta, error results, status(), and no secret anywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from jsonschema.validators import validator_for
from mcp import Client, types
from mcp.server import Server
from referencing import Registry

from py_server.config import Settings
from py_server.extras.compliance import ComplianceExtra, LocalKnowledgeBase, create
from py_server.extras.compliance.tool import choose_backend

IAM_URL = "https://iam.api.cloud.ru/api/v1/auth/token"
RETRIEVE_URL = "https://kb-1.managed-rag.inference.cloud.ru/api/v2/retrieve"
SECRET = "TOP-SECRET-key-value"
TOKEN = "eyJ-very-secret-access-token"
DESIGN_TIMEOUT_TEXT = (
    "База знаний временно недоступна (таймаут запроса). Пожалуйста, попробуйте позже или обратитесь к администратору."
)
SUCCESS_META = {
    "execution_time_ms",
    "data_source",
    "record_count",
    "timestamp",
    "backend",
    "retrieve_limit",
    "knowledge_base_version",
}
RAG_ENV = (
    "KEY_ID",
    "KEY_SECRET",
    "AUTH_URL",
    "RETRIEVE_URL_TEMPLATE",
    "KNOWLEDGE_BASE_ID",
    "KNOWLEDGE_BASE_VERSION_ID",
    "RETRIEVE_LIMIT",
    "EVOLUTION_PROJECT_ID",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("MCP_RAG_", "MCP_KB_")) or name in RAG_ENV:
            monkeypatch.delenv(name)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def managed_settings(**values: Any) -> Settings:
    base = {
        "rag_backend": "auto",
        "rag_key_id": "kid",
        "rag_key_secret": SECRET,
        "rag_knowledge_base_id": "kb-1",
        "rag_knowledge_base_version": "v3",
        "rag_retrieve_limit": 2,
    }
    return settings(**(base | values))


def assert_valid(result: types.CallToolResult, tool: types.Tool) -> None:
    """What the SDK client does: validate structuredContent against outputSchema, refs in-document."""
    assert tool.output_schema is not None
    cls = validator_for(tool.output_schema)
    cls.check_schema(tool.output_schema)
    errors = list(cls(tool.output_schema, registry=Registry()).iter_errors(result.structured_content))
    assert errors == []


def dump(result: types.CallToolResult) -> str:
    return result.model_dump_json(by_alias=True)


# --- backend choice --------------------------------------------------------------------------------


def test_backend_choice() -> None:
    assert choose_backend(settings(rag_backend="off")) == (None, "MCP_RAG_BACKEND=off")
    assert choose_backend(settings())[0] == "local"  # auto without Cloud.ru settings
    assert choose_backend(managed_settings())[0] == "managed"
    assert choose_backend(managed_settings(rag_backend="local"))[0] == "local"
    assert choose_backend(managed_settings(rag_knowledge_base_id=None))[0] == "local"
    kind, why = choose_backend(settings(rag_backend="managed", rag_key_id="kid", rag_key_secret="  "))
    assert kind is None
    assert "MCP_RAG_KEY_SECRET" in why and "MCP_RAG_KNOWLEDGE_BASE_ID" in why and "MCP_RAG_KEY_ID" not in why


@pytest.mark.anyio
async def test_off_and_misconfigured_managed_serve_no_tool() -> None:
    for extra in (create(settings(rag_backend="off")), create(settings(rag_backend="managed", rag_key_id="k"))):
        assert extra.tools == []
        status = await extra.status()
        assert status.state == "not configured" and status.tools == []
        result = await extra.call({"query": "x"})  # even a stray call returns a result, not an exception
        assert result.is_error
        await extra.aclose()


# --- local backend -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_local_tool_definition_and_result() -> None:
    extra = create(settings(rag_backend="local", rag_retrieve_limit=4))
    [tool] = extra.tools
    definition = tool.definition
    assert definition.name == "compliance_rag" and definition.title
    assert "повторный ремонт" in (definition.description or "")
    assert definition.input_schema["required"] == ["query"]
    assert definition.input_schema["properties"]["query"]["minLength"] == 1
    assert definition.output_schema and definition.output_schema["type"] == "object"
    assert definition.annotations is not None
    assert definition.annotations.read_only_hint is True and definition.annotations.open_world_hint is False

    result = await tool.handler({"query": "Что делать в случае повторного ремонта?"})
    assert not result.is_error
    assert_valid(result, definition)
    data = result.structured_content
    assert data["total_documents"] == len(data["documents"]) == 4
    assert data["knowledge_base_version"].startswith("local-")
    assert data["documents"][0]["metadata"]["source"].startswith("04_povtornyi_remont")
    meta = result.meta or {}
    assert meta.keys() >= SUCCESS_META
    assert meta["data_source"] == "local_kb" and meta["backend"] == "local"
    assert meta["record_count"] == 4 and meta["retrieve_limit"] == 4
    assert meta["knowledge_base_version"] == data["knowledge_base_version"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["timestamp"])
    text = result.content[0].text  # type: ignore[union-attr]
    assert "Источник: 04_povtornyi_remont" in text and "не являются юридической консультацией" in text
    status = await extra.status()
    assert status.state == "reachable" and "6 documents" in status.detail and status.tools == ["compliance_rag"]
    await extra.aclose()


@pytest.mark.anyio
async def test_nothing_found_is_a_success_with_zero_documents(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nпро кондиционер\n", encoding="utf-8")
    extra = create(settings(rag_backend="local", kb_dir=tmp_path, kb_index=tmp_path / "i" / "kb.sqlite"))
    result = await extra.call({"query": "турбина"})
    assert not result.is_error
    assert result.structured_content["documents"] == [] and (result.meta or {})["record_count"] == 0
    assert "ничего не найдено" in result.content[0].text  # type: ignore[union-attr]
    assert (tmp_path / "i" / "kb.sqlite").exists()
    await extra.aclose()


@pytest.mark.anyio
async def test_missing_kb_dir_fails_cleanly(tmp_path: Path) -> None:
    extra = create(settings(rag_backend="local", kb_dir=tmp_path / "absent"))
    status = await extra.status()
    assert status.state == "failing" and "does not exist" in status.detail
    result = await extra.call({"query": "ремонт"})
    assert result.is_error and (result.meta or {})["error_type"] == "unexpected_error"
    assert "Локальная база знаний недоступна" in result.content[0].text  # type: ignore[union-attr]
    await extra.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("arguments", [{"query": ""}, {"query": "  \n\t"}, {}, {"query": None}, {"query": 42}])
async def test_empty_query_is_invalid_query_and_sends_nothing(arguments: dict[str, Any]) -> None:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as client:
        iam = mock.post(IAM_URL).mock(return_value=httpx.Response(200, json={"access_token": TOKEN}))
        retrieve = mock.post(RETRIEVE_URL).mock(return_value=httpx.Response(200, json={"results": []}))
        extra = create(managed_settings(), http_client=client)
        result = await extra.call(arguments)
    assert result.is_error and (result.meta or {})["error_type"] == "invalid_query"
    assert "Пустой запрос" in result.content[0].text  # type: ignore[union-attr]
    assert not iam.called and not retrieve.called


@pytest.mark.anyio
async def test_empty_query_on_the_local_backend_does_not_even_build_the_index() -> None:
    extra = create(settings(rag_backend="local"))
    result = await extra.call({"query": "   "})
    assert result.is_error and (result.meta or {})["error_type"] == "invalid_query"
    assert (result.meta or {})["backend"] == "local"
    assert isinstance(extra.backend, LocalKnowledgeBase) and extra.backend.stats is None
    await extra.aclose()


@pytest.mark.anyio
async def test_an_unexpected_bug_becomes_an_error_result(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = create(settings(rag_backend="local"))

    async def broken(query: str) -> list[Any]:
        raise RuntimeError("boom")

    assert extra.backend is not None
    monkeypatch.setattr(extra.backend, "retrieve", broken)
    result = await extra.call({"query": "ремонт"})
    assert result.is_error and (result.meta or {})["error_type"] == "unexpected_error"
    assert "RuntimeError" in result.content[0].text  # type: ignore[union-attr]
    await extra.aclose()


# --- managed backend ----------------------------------------------------------------------------------------


def results(n: int) -> dict[str, Any]:
    return {
        "results": [
            {"content": f"Фрагмент {i}", "metadata": {"filename": "rag_data.pdf", "page": i}, "score": 0.3 + i / 10}
            for i in range(n)
        ]
    }


@pytest.mark.anyio
async def test_managed_result_is_valid_and_leaks_nothing() -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(IAM_URL).mock(return_value=httpx.Response(200, json={"access_token": TOKEN, "expires_in": 3600}))
        mock.post(RETRIEVE_URL).mock(return_value=httpx.Response(200, json=results(2)))
        extra = create(managed_settings(), http_client=client)
        [tool] = extra.tools
        result = await tool.handler({"query": "повторный ремонт"})
        status = await extra.status()
        await extra.aclose()
        assert not client.is_closed  # an injected client belongs to the caller
    assert tool.definition.annotations and tool.definition.annotations.open_world_hint is True
    assert not result.is_error
    assert_valid(result, tool.definition)
    meta = result.meta or {}
    assert meta.keys() >= SUCCESS_META
    assert (meta["data_source"], meta["backend"], meta["record_count"]) == ("managed_rag", "managed", 2)
    assert meta["knowledge_base_version"] == "v3" and meta["retrieve_limit"] == 2
    second = result.structured_content["documents"][1]
    assert second["metadata"] == {"source": "rag_data.pdf", "page": 1, "filename": "rag_data.pdf"}
    assert second["relevance_score"] == pytest.approx(0.4)
    assert "Источник: rag_data.pdf, стр. 0" in result.content[0].text  # type: ignore[union-attr]
    assert status.state == "reachable" and "kb-1" in status.detail
    for text in (dump(result), json.dumps(status.as_dict(), ensure_ascii=False)):
        assert SECRET not in text and TOKEN not in text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("iam_reply", "retrieve_effect", "error_type", "status"),
    [
        (None, httpx.ReadTimeout, "timeout", None),
        (None, httpx.ConnectError, "network_error", None),
        (None, httpx.Response(500), "http_error", 500),
        (None, httpx.Response(401), "authentication_failed", 401),
        (None, httpx.Response(200, text="<html>"), "unexpected_error", None),
        (httpx.Response(401, json={"error": "bad key"}), None, "authentication_error", 401),
        (httpx.ConnectError, None, "authentication_error", None),
    ],
)
async def test_managed_failures_are_error_results(
    iam_reply: Any, retrieve_effect: Any, error_type: str, status: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as client:
        iam = mock.post(IAM_URL)
        if iam_reply is None:
            iam.mock(return_value=httpx.Response(200, json={"access_token": TOKEN, "expires_in": 3600}))
        elif isinstance(iam_reply, httpx.Response):
            iam.mock(return_value=iam_reply)
        else:
            iam.mock(side_effect=iam_reply)
        retrieve = mock.post(RETRIEVE_URL)
        if isinstance(retrieve_effect, httpx.Response):
            retrieve.mock(return_value=retrieve_effect)
        else:
            retrieve.mock(side_effect=retrieve_effect)
        extra = create(managed_settings(), http_client=client)
        result = await extra.call({"query": "ваш запрос"})
    assert result.is_error and result.structured_content is None
    meta = result.meta or {}
    assert meta["error_type"] == error_type and meta.get("http_status") == status
    assert meta["query"] == "ваш запрос" and {"execution_time_ms", "timestamp"} <= meta.keys()
    text = result.content[0].text  # type: ignore[union-attr]
    if error_type == "timeout":
        assert text == DESIGN_TIMEOUT_TEXT
    if error_type == "authentication_error":
        assert "MCP_RAG_" in text
    for blob in (dump(result), caplog.text):
        assert SECRET not in blob and TOKEN not in blob


@pytest.mark.anyio
async def test_managed_status_failing_names_settings_not_values() -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(IAM_URL).mock(return_value=httpx.Response(403))
        extra = create(managed_settings(), http_client=client)
        status = await extra.status()
    assert status.state == "failing" and status.tools == ["compliance_rag"]
    assert "MCP_RAG_KEY_ID" in status.detail and SECRET not in status.detail


@pytest.mark.anyio
async def test_own_client_is_closed() -> None:
    extra = ComplianceExtra(managed_settings())
    client = extra._client
    assert client is not None and not client.is_closed
    await extra.aclose()
    assert client.is_closed


# --- through the real SDK: the client validates structuredContent against outputSchema ---------------------


@pytest.mark.anyio
async def test_sdk_client_accepts_the_result() -> None:
    extra = create(settings(rag_backend="local"))
    [tool] = extra.tools

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool.definition])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await tool.handler(params.arguments or {})

    server = Server("compliance-test", on_list_tools=list_tools, on_call_tool=call_tool)
    async with Client(server) as client:
        listed = await client.list_tools()
        assert [t.name for t in listed.tools] == ["compliance_rag"]
        result = await client.call_tool("compliance_rag", {"query": "тридцать дней в году гарантии"})
        assert not result.is_error
        assert result.structured_content["documents"][0]["metadata"]["source"].startswith("03_30_dney")
        assert (result.meta or {})["data_source"] == "local_kb"
    await extra.aclose()
