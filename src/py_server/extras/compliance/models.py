"""The `compliance_rag` tool's input and output models.

The output follows the design's schema (section 5): both backends (Managed RAG and the local
knowledge base) fill the same model, so a client never sees which one answered except in `_meta`.
`format_text` renders it as the Russian text of the result's `content`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

DISCLAIMER = "Материалы базы знаний носят справочный характер и не являются юридической консультацией."


class ComplianceRagArgs(BaseModel):
    """The tool's arguments; its JSON schema is the tool's `inputSchema`."""

    query: str = Field(
        min_length=1,
        description=(
            "Вопрос на естественном языке о гарантийных правилах и законодательстве, "
            "например: «Что делать в случае повторного ремонта?»"
        ),
    )


class RagDocument(BaseModel):
    """One passage found in the knowledge base."""

    content: str = Field(description="Текст найденного фрагмента")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Источник фрагмента: source (файл), page или heading, position и прочее",
    )
    relevance_score: float | None = Field(
        default=None,
        description=(
            "Оценка, как её вернул источник. Managed RAG: score сервиса (может быть расстоянием); "
            "локальная база: -bm25, больше — лучше. Порядок документов — порядок релевантности."
        ),
    )


class ComplianceRagStructured(BaseModel):
    """`structuredContent` of a successful `compliance_rag` call."""

    query: str
    documents: list[RagDocument]
    total_documents: int
    knowledge_base_version: str


def format_text(result: ComplianceRagStructured, *, local: bool) -> str:
    """The readable Russian text of a successful call: passages with source and score."""
    if not result.documents:
        return (
            f"По запросу «{result.query}» в базе знаний ничего не найдено. "
            "Попробуйте переформулировать вопрос другими словами."
        )
    note = "оценка — bm25, чем больше, тем лучше" if local else "порядок — как вернул сервис, оценка — score сервиса"
    lines = [f"Найдено фрагментов в базе знаний: {result.total_documents} по запросу «{result.query}» ({note})."]
    for number, doc in enumerate(result.documents, 1):
        meta = doc.metadata
        where = f"Источник: {meta.get('source') or 'не указан'}"
        if meta.get("page") is not None:
            where += f", стр. {meta['page']}"
        if meta.get("heading"):
            where += f", раздел «{meta['heading']}»"
        if doc.relevance_score is not None:
            where += f", оценка {doc.relevance_score:.4g}"
        lines.append(f"\n{number}. {where}\n{doc.content.strip()}")
    if local:
        lines.append(f"\n{DISCLAIMER}")
    return "\n".join(lines)
