"""Cloud.ru Evolution Managed RAG: POST /api/v2/retrieve with an IAM bearer token.

    backend = ManagedRagBackend(client, tokens, retrieve_url=url, knowledge_base_id=kb_id)
    documents = await backend.retrieve("Что делать в случае повторного ремонта?")

A 401 invalidates the token and retries once with a new one (the design's "up to 2 attempts");
a second 401 is `authentication_failed`. The service's result order is kept: in the one published
response the scores rise down the list, so `score` may be a distance and must not be re-sorted.
Every failure is an UpstreamError whose text is what the user reads.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import httpx

from ...errors import UpstreamError
from .iam import IamTokenProvider
from .models import RagDocument

logger = logging.getLogger(__name__)

_LATER = "Пожалуйста, попробуйте позже или обратитесь к администратору."


def retrieve_endpoint(template: str, knowledge_base_id: str) -> str:
    """`{kb_id}` in MCP_RAG_RETRIEVE_URL is the knowledge base id; a full URL is used as is."""
    # str.replace, not str.format: a URL may carry other braces, and they are not placeholders.
    return template.replace("{kb_id}", knowledge_base_id)


def to_document(item: Any) -> RagDocument:
    """One `results[]` entry → RagDocument; source = metadata.filename, the rest kept as sent."""
    if not isinstance(item, dict):
        raise ValueError("results[] entry is not an object")
    raw_meta = item.get("metadata")
    raw_meta = raw_meta if isinstance(raw_meta, dict) else {}
    metadata: dict[str, Any] = {
        "source": raw_meta.get("filename") or raw_meta.get("source"),
        "page": raw_meta.get("page"),
    }
    metadata.update((key, value) for key, value in raw_meta.items() if key not in metadata)
    if item.get("id") is not None:
        metadata["id"] = item["id"]
    score = item.get("score")
    numeric = isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score)
    content = item.get("content")
    return RagDocument(
        content=content if isinstance(content, str) else "",
        metadata=metadata,
        relevance_score=float(score) if numeric else None,
    )


class ManagedRagBackend:
    backend = "managed"
    data_source = "managed_rag"
    open_world = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        tokens: IamTokenProvider,
        *,
        retrieve_url: str,
        knowledge_base_id: str,
        knowledge_base_version: str = "latest",
        limit: int = 3,
        timeout: float = 20.0,
    ) -> None:
        self._client = client
        self.tokens = tokens
        self.url = retrieve_endpoint(retrieve_url, knowledge_base_id)
        self.knowledge_base_id = knowledge_base_id
        self.knowledge_base_version = knowledge_base_version
        self.limit = limit
        self._timeout = timeout

    async def retrieve(self, query: str) -> list[RagDocument]:
        """The service's passages for `query`, in the service's order.

        Raises:
            UpstreamError: authentication_error, authentication_failed, http_error (+http_status),
                timeout, network_error or unexpected_error (a reply we cannot read).
        """
        body = {
            "knowledge_base_version": self.knowledge_base_version,
            "query": query,
            "retrieval_configuration": {"number_of_results": self.limit, "retrieval_type": "SEMANTIC"},
        }
        token = await self.tokens.get_token()
        response = await self._post(body, token)
        if response.status_code == 401:
            logger.info("Managed RAG answered 401: refreshing the IAM token and retrying once")
            self.tokens.invalidate(token)
            token = await self.tokens.get_token()
            response = await self._post(body, token)
            if response.status_code == 401:
                raise UpstreamError(
                    "База знаний отклонила токен доступа (HTTP 401) и после его обновления. "
                    "Проверьте, что у сервисного аккаунта MCP_RAG_KEY_ID есть доступ к базе знаний "
                    f"{self.knowledge_base_id} (MCP_RAG_KNOWLEDGE_BASE_ID). {_LATER}",
                    error_type="authentication_failed",
                    http_status=401,
                )
        if response.status_code >= 400:
            raise UpstreamError(
                f"База знаний вернула ошибку HTTP {response.status_code}{_status_hint(response.status_code)}. {_LATER}",
                error_type="http_error",
                http_status=response.status_code,
            )
        return self._parse(response)

    async def _post(self, body: dict[str, Any], token: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            return await self._client.post(self.url, json=body, headers=headers, timeout=self._timeout)
        except httpx.TimeoutException:
            raise UpstreamError(
                f"База знаний временно недоступна (таймаут запроса). {_LATER}", error_type="timeout"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"База знаний временно недоступна (сетевая ошибка: {type(exc).__name__}). "
                f"Проверьте MCP_RAG_RETRIEVE_URL и сетевой доступ к {httpx.URL(self.url).host}. {_LATER}",
                error_type="network_error",
            ) from None

    def _parse(self, response: httpx.Response) -> list[RagDocument]:
        try:
            payload = response.json()
            results = payload.get("results") if isinstance(payload, dict) else None
            if not isinstance(results, list):
                raise ValueError("no results list")
            return [to_document(item) for item in results]
        except ValueError as exc:  # JSONDecodeError is a ValueError
            logger.warning("Managed RAG reply not understood: %s", exc)
            raise UpstreamError(
                "База знаний вернула ответ в неожиданном формате. Обратитесь к администратору.",
                error_type="unexpected_error",
            ) from None

    async def probe(self) -> str:
        """Get a token (cached if still valid): the light check behind /health. Raises UpstreamError."""
        await self.tokens.get_token()
        return (
            f"IAM token OK ({self.tokens.style}); knowledge base {self.knowledge_base_id}, "
            f"version {self.knowledge_base_version}"
        )

    async def warm_up(self) -> None:
        """Nothing to prepare: no request goes to Cloud.ru before a client asks for one."""

    async def aclose(self) -> None:
        """The HTTP client belongs to whoever created it (ComplianceExtra)."""


def _status_hint(status: int) -> str:
    if status == 403:
        return " (доступ запрещён: проверьте права сервисного аккаунта на базу знаний)"
    if status == 404:
        return " (не найдено: проверьте MCP_RAG_RETRIEVE_URL и MCP_RAG_KNOWLEDGE_BASE_ID)"
    if status == 429:
        return " (слишком много запросов)"
    if status >= 500:
        return " (ошибка на стороне сервиса)"
    return ""
