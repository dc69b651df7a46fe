"""`compliance_rag`: search a warranty/consumer-law knowledge base (Cloud.ru Managed RAG or local).

extra = create(settings)                 # an Extra for the local tool registry
stats = build_index(Path("docs"), Path("kb.sqlite"))
print(format_stats(stats))               # `onec-mcp-proxy kb index DIR`
"""

from __future__ import annotations

import time

import httpx

from ...config import Settings
from .iam import Clock, IamTokenProvider
from .local_kb import IndexStats, KnowledgeBaseError, LocalKnowledgeBase, build_index, format_stats
from .managed import ManagedRagBackend
from .models import ComplianceRagStructured, RagDocument
from .tool import ComplianceExtra, choose_backend

__all__ = [
    "ComplianceExtra",
    "ComplianceRagStructured",
    "IamTokenProvider",
    "IndexStats",
    "KnowledgeBaseError",
    "LocalKnowledgeBase",
    "ManagedRagBackend",
    "RagDocument",
    "build_index",
    "choose_backend",
    "create",
    "format_stats",
]


def create(
    settings: Settings, *, http_client: httpx.AsyncClient | None = None, clock: Clock = time.monotonic
) -> ComplianceExtra:
    """The compliance_rag extra for `settings` (no tools when MCP_RAG_BACKEND=off or misconfigured)."""
    return ComplianceExtra(settings, http_client=http_client, clock=clock)
