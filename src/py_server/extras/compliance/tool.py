"""The `compliance_rag` tool and its extra: one output, two backends.

    extra = ComplianceExtra(settings)          # picks Managed RAG or the local knowledge base
    result = await extra.tools[0].handler({"query": "Что делать в случае повторного ремонта?"})

Backend choice (MCP_RAG_BACKEND): "off" → no tool; "managed" → Cloud.ru Managed RAG (needs key id,
secret and knowledge base id); "local" → SQLite FTS5 over local documents; "auto" → managed when all
three Cloud.ru settings are set, else local. Every call returns a CallToolResult; failures are
`isError` results whose `_meta.error_type` says what failed. No key, secret or token is ever put
in a result or a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mcp import types
from pydantic import SecretStr

from ...config import Settings, env_name
from ...errors import UpstreamError
from ...local_tools import ExtraStatus, LocalTool, error_result, execution_meta
from .local_kb import KnowledgeBaseError, LocalKnowledgeBase
from .models import ComplianceRagArgs, ComplianceRagStructured, RagDocument, format_text

if TYPE_CHECKING:
    import httpx

    from .iam import Clock

logger = logging.getLogger(__name__)

TOOL_NAME = "compliance_rag"
TITLE = "Поиск в базе знаний по гарантии и правам потребителя"
_MANAGED_SETTINGS = ("rag_key_id", "rag_key_secret", "rag_knowledge_base_id")


class RagBackend(Protocol):
    backend: str  # "managed" | "local"
    data_source: str  # "managed_rag" | "local_kb"
    open_world: bool
    limit: int

    @property
    def knowledge_base_version(self) -> str: ...
    async def retrieve(self, query: str) -> list[RagDocument]: ...
    async def probe(self) -> str: ...
    async def warm_up(self) -> None: ...
    async def aclose(self) -> None: ...


def _is_set(value: str | SecretStr | None) -> bool:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return bool(text and text.strip())


def choose_backend(settings: Settings) -> tuple[Literal["managed", "local"] | None, str]:
    """The backend to use, or None and why not (names the settings to set)."""
    missing = [env_name(f) for f in _MANAGED_SETTINGS if not _is_set(getattr(settings, f))]
    if settings.rag_backend == "off":
        return None, "MCP_RAG_BACKEND=off"
    if settings.rag_backend == "managed" and missing:
        return None, f"MCP_RAG_BACKEND=managed, but {', '.join(missing)} not set"
    if settings.rag_backend == "local" or (settings.rag_backend == "auto" and missing):
        return "local", ""
    return "managed", ""


def tool_definition(backend: RagBackend) -> types.Tool:
    how = (
        "Семантический поиск в базе знаний Cloud.ru Evolution Managed RAG."
        if backend.backend == "managed"
        else "Полнотекстовый поиск с учётом русской морфологии по локальной базе знаний (без интернета)."
    )
    return types.Tool(
        name=TOOL_NAME,
        title=TITLE,
        description=(
            "Находит фрагменты документов о гарантийном обслуживании автомобилей и правах потребителя: "
            "Закон «О защите прав потребителей» (ст. 18–23), срок ремонта не более 45 дней, правило "
            "30 дней в каждом году гарантии, повторный ремонт и существенный недостаток, неустойка 1% "
            f"в день, документы дилера. {how} Возвращает фрагменты с источником и оценкой. Используйте "
            "вместе с warranty_days и warranty_history, чтобы оценить конкретный автомобиль. "
            "Справочные материалы, не юридическая консультация."
        ),
        input_schema=ComplianceRagArgs.model_json_schema(),
        output_schema=ComplianceRagStructured.model_json_schema(),
        annotations=types.ToolAnnotations(
            title=TITLE,
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=backend.open_world,  # the local index never leaves the machine
        ),
    )


class ComplianceExtra:
    name = TOOL_NAME

    def __init__(
        self,
        settings: Settings,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None
        self._owns_client = http_client is None
        kind, self._problem = choose_backend(settings)
        self.backend: RagBackend | None = None
        if kind == "managed":
            import httpx

            from .iam import IamTokenProvider
            from .managed import ManagedRagBackend

            # One pooled client for IAM and retrieve: both go to Cloud.ru, keep-alive helps both.
            self._client = http_client or httpx.AsyncClient(timeout=settings.rag_timeout)
            assert settings.rag_key_id and settings.rag_key_secret and settings.rag_knowledge_base_id
            tokens = IamTokenProvider(
                self._client,
                auth_url=settings.rag_auth_url,
                key_id=settings.rag_key_id,
                key_secret=settings.rag_key_secret,
                style=settings.rag_auth_style,
                grant_type=settings.rag_grant_type,
                timeout=settings.rag_timeout,
                clock=clock,
            )
            self.backend = ManagedRagBackend(
                self._client,
                tokens,
                retrieve_url=settings.rag_retrieve_url,
                knowledge_base_id=settings.rag_knowledge_base_id,
                knowledge_base_version=settings.rag_knowledge_base_version,
                limit=settings.rag_retrieve_limit,
                timeout=settings.rag_timeout,
            )
        elif kind == "local":
            # Nothing is read yet: the index is built by warm_up() in the background, or by the first call.
            self.backend = LocalKnowledgeBase(settings.kb_dir, settings.kb_index, limit=settings.rag_retrieve_limit)
        self._tools = [LocalTool(definition=tool_definition(self.backend), handler=self.call)] if self.backend else []

    @property
    def tools(self) -> Sequence[LocalTool]:
        return self._tools

    async def warm_up(self) -> None:
        """Local: build or refresh the index in a worker thread, so that the first call finds it
        ready (a call made meanwhile waits for this build). Managed: nothing (no call is made to
        Cloud.ru before a client asks). Never raises."""
        if self.backend is not None:
            await self.backend.warm_up()

    async def status(self) -> ExtraStatus:
        """Managed: get (or reuse) an IAM token; local: build/open the index. Never raises."""
        names = [tool.name for tool in self._tools]
        if self.backend is None:
            return ExtraStatus(self.name, "not configured", self._problem, names)
        label = self.backend.backend
        if self._settings.rag_backend == "auto" and self.backend.backend == "local":
            label += " (MCP_RAG_BACKEND=auto, Cloud.ru credentials not set)"
        try:
            detail = await self.backend.probe()
        except Exception as exc:  # the health check reports, it does not fail
            reason = str(exc) if isinstance(exc, UpstreamError | KnowledgeBaseError) else type(exc).__name__
            return ExtraStatus(self.name, "failing", f"{label}: {reason}", names)
        return ExtraStatus(self.name, "reachable", f"{label}: {detail}", names)

    async def call(self, arguments: dict[str, Any]) -> types.CallToolResult:
        """The tool handler: never raises; failures are isError results with _meta.error_type."""
        started = time.perf_counter()
        backend = self.backend
        query = arguments.get("query") if isinstance(arguments, dict) else None
        if backend is None:
            return self._error(query, "unexpected_error", f"Инструмент не настроен: {self._problem}.", started)
        if not isinstance(query, str) or not query.strip():
            return self._error(
                query,
                "invalid_query",
                "Пустой запрос: передайте в параметре query вопрос на естественном языке, "
                "например «Что делать в случае повторного ремонта?».",
                started,
            )
        query = query.strip()
        logger.info("compliance_rag (%s): query %r", backend.backend, query[:200])
        try:
            documents = await backend.retrieve(query)
            structured = ComplianceRagStructured(
                query=query,
                documents=documents,
                total_documents=len(documents),
                knowledge_base_version=backend.knowledge_base_version,
            )
            text = format_text(structured, local=backend.backend == "local")
        except UpstreamError as exc:
            return self._error(query, exc.error_type, str(exc), started, http_status=exc.http_status)
        except KnowledgeBaseError as exc:
            text = f"Локальная база знаний недоступна: {exc}. Обратитесь к администратору."
            return self._error(query, "unexpected_error", text, started)
        except Exception as exc:  # a bug must still become a clean isError result
            logger.exception("compliance_rag failed")
            text = (
                f"Непредвиденная ошибка при поиске в базе знаний ({type(exc).__name__}). Обратитесь к администратору."
            )
            return self._error(query, "unexpected_error", text, started)
        meta = self._meta(started, query) | {
            "record_count": len(documents),
            "retrieve_limit": backend.limit,
            "knowledge_base_version": structured.knowledge_base_version,
        }
        logger.info("compliance_rag (%s): %d document(s)", backend.backend, len(documents))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=structured.model_dump(mode="json"),
            _meta=meta,
        )

    def _meta(self, started: float, query: Any) -> dict[str, Any]:
        backend = self.backend
        return {
            "query": query if isinstance(query, str) else None,
            **execution_meta(started),
            "backend": backend.backend if backend else None,
            "data_source": backend.data_source if backend else None,
        }

    def _error(
        self, query: Any, error_type: str, text: str, started: float, *, http_status: int | None = None
    ) -> types.CallToolResult:
        meta = self._meta(started, query) | {"error_type": error_type}
        if http_status is not None:
            meta["http_status"] = http_status
        level = logging.INFO if error_type == "invalid_query" else logging.WARNING  # a caller's mistake
        logger.log(level, "compliance_rag failed (%s): %s", error_type, text)
        return error_result(text, meta=meta)

    async def aclose(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()
        if self._client is not None and self._owns_client:
            await self._client.aclose()
