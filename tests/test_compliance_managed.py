"""ManagedRagBackend against a mocked Cloud.ru: request shape, result mapping and order, the 401
refresh-and-retry path, and every failure's error_type."""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from pydantic import SecretStr

from py_server.errors import UpstreamError
from py_server.extras.compliance.iam import IamTokenProvider
from py_server.extras.compliance.managed import ManagedRagBackend, retrieve_endpoint

IAM_URL = "https://iam.api.cloud.ru/api/v1/auth/token"
TEMPLATE = "https://{kb_id}.managed-rag.inference.cloud.ru/api/v2/retrieve"
KB_ID = "kb-42"
RETRIEVE_URL = f"https://{KB_ID}.managed-rag.inference.cloud.ru/api/v2/retrieve"
SECRET = "managed-secret-value"

RESULTS = [
    {
        "content": "В случае повторного ремонта по той же причине...",
        "metadata": {"filename": "rag_data.pdf", "filetype": "text/pdf", "page": 21, "position": 0},
        "score": 0.4557,
        "id": "a1",
    },
    {"content": "Второй фрагмент", "metadata": {"filename": "policy.pdf", "page": 3}, "score": 0.61, "id": "b2"},
    {"content": "Третий фрагмент", "metadata": {"filename": "law.pdf"}, "score": 0.2},
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def token_reply(token: str) -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "expires_in": 3600})


def backend(client: httpx.AsyncClient, *, limit: int = 3, template: str = TEMPLATE) -> ManagedRagBackend:
    tokens = IamTokenProvider(client, auth_url=IAM_URL, key_id="kid", key_secret=SecretStr(SECRET))
    return ManagedRagBackend(
        client, tokens, retrieve_url=template, knowledge_base_id=KB_ID, knowledge_base_version="v7", limit=limit
    )


def test_retrieve_url_template_and_full_url() -> None:
    assert retrieve_endpoint(TEMPLATE, KB_ID) == RETRIEVE_URL
    assert retrieve_endpoint("https://rag.example/api/v2/retrieve", KB_ID) == "https://rag.example/api/v2/retrieve"


@pytest.mark.anyio
async def test_success_sends_the_contract_body_and_keeps_the_service_order() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as client:
        mock.post(IAM_URL).mock(return_value=token_reply("tok-1"))
        route = mock.post(RETRIEVE_URL).mock(return_value=httpx.Response(200, json={"results": RESULTS}))
        docs = await backend(client, limit=5).retrieve("Что делать в случае повторного ремонта?")
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer tok-1"
    assert json.loads(request.content) == {
        "knowledge_base_version": "v7",
        "query": "Что делать в случае повторного ремонта?",
        "retrieval_configuration": {"number_of_results": 5, "retrieval_type": "SEMANTIC"},
    }
    # Scores 0.4557, 0.61, 0.2: neither ascending nor descending, so any re-sort would show.
    assert [d.relevance_score for d in docs] == [0.4557, 0.61, 0.2]
    assert [d.content for d in docs] == [r["content"] for r in RESULTS]
    first = docs[0].metadata
    assert first["source"] == "rag_data.pdf" and first["page"] == 21
    assert first["filetype"] == "text/pdf" and first["position"] == 0 and first["id"] == "a1"
    assert docs[2].metadata["source"] == "law.pdf" and docs[2].metadata["page"] is None
    assert list(first)[:2] == ["source", "page"]  # the design's keys first, then the service's


@pytest.mark.anyio
async def test_empty_results_and_odd_entries() -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(IAM_URL).mock(return_value=token_reply("t"))
        mock.post(RETRIEVE_URL).mock(
            side_effect=[
                httpx.Response(200, json={"results": []}),
                httpx.Response(200, json={"results": [{"content": 5, "score": "high", "metadata": None}]}),
            ]
        )
        rag = backend(client)
        assert await rag.retrieve("q") == []
        [odd] = await rag.retrieve("q")
    assert odd.content == "" and odd.relevance_score is None and odd.metadata["source"] is None


@pytest.mark.anyio
async def test_401_refreshes_the_token_once_and_retries() -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        iam = mock.post(IAM_URL).mock(side_effect=[token_reply("expired"), token_reply("fresh")])
        route = mock.post(RETRIEVE_URL).mock(
            side_effect=[httpx.Response(401), httpx.Response(200, json={"results": RESULTS[:1]})]
        )
        docs = await backend(client).retrieve("q")
    assert len(docs) == 1
    assert iam.call_count == 2
    assert [c.request.headers["authorization"] for c in route.calls] == ["Bearer expired", "Bearer fresh"]


@pytest.mark.anyio
async def test_two_401s_are_authentication_failed() -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        iam = mock.post(IAM_URL).mock(side_effect=[token_reply("a"), token_reply("b")])
        route = mock.post(RETRIEVE_URL).mock(return_value=httpx.Response(401))
        with pytest.raises(UpstreamError) as info:
            await backend(client).retrieve("q")
    assert info.value.error_type == "authentication_failed"
    assert info.value.http_status == 401
    assert route.call_count == 2 and iam.call_count == 2  # exactly one retry
    assert "MCP_RAG_KEY_ID" in str(info.value)


@pytest.mark.anyio
async def test_token_failure_is_authentication_error_and_retrieve_is_not_called() -> None:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as client:
        mock.post(IAM_URL).mock(return_value=httpx.Response(401))
        route = mock.post(RETRIEVE_URL).mock(return_value=httpx.Response(200, json={"results": []}))
        with pytest.raises(UpstreamError) as info:
            await backend(client).retrieve("q")
    assert info.value.error_type == "authentication_error"
    assert not route.called
    assert SECRET not in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("effect", "error_type", "status", "needle"),
    [
        (httpx.ReadTimeout, "timeout", None, "таймаут запроса"),
        (httpx.ConnectError, "network_error", None, "сетевая ошибка"),
        (httpx.Response(500, text="boom"), "http_error", 500, "HTTP 500"),
        (httpx.Response(403), "http_error", 403, "доступ запрещён"),
        (httpx.Response(404), "http_error", 404, "MCP_RAG_RETRIEVE_URL"),
        (httpx.Response(200, text="{not json"), "unexpected_error", None, "неожиданном формате"),
        (httpx.Response(200, json={"results": "nope"}), "unexpected_error", None, "неожиданном формате"),
        (httpx.Response(200, json=["a", "list"]), "unexpected_error", None, "неожиданном формате"),
        (httpx.Response(200, json={"results": ["text"]}), "unexpected_error", None, "неожиданном формате"),
    ],
)
async def test_failures_map_to_error_types(effect: object, error_type: str, status: int | None, needle: str) -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(IAM_URL).mock(return_value=token_reply("t"))
        route = mock.post(RETRIEVE_URL)
        if isinstance(effect, httpx.Response):
            route.mock(return_value=effect)
        else:
            route.mock(side_effect=effect)
        with pytest.raises(UpstreamError) as info:
            await backend(client).retrieve("q")
    assert info.value.error_type == error_type
    assert info.value.http_status == status
    assert needle in str(info.value)


@pytest.mark.anyio
async def test_token_is_reused_across_calls_and_probe() -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        iam = mock.post(IAM_URL).mock(return_value=token_reply("t"))
        mock.post(RETRIEVE_URL).mock(return_value=httpx.Response(200, json={"results": []}))
        rag = backend(client)
        assert "kb-42" in await rag.probe()
        await rag.retrieve("a")
        await rag.retrieve("b")
    assert iam.call_count == 1
