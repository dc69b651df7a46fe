"""`compliance_rag`: search a warranty/consumer-law knowledge base (Cloud.ru Managed RAG or local).

extra = create(settings)                 # an Extra for the local tool registry
stats = build_index(Path("docs"), Path("kb.sqlite"))
print(format_stats(stats))               # `onec-mcp-proxy kb index DIR`

Importing the package costs nothing: each name below is imported from its module when first
used, so `kb index` does not load the MCP SDK and a proxy without Managed RAG never loads its
client.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ...lazy_exports import lazy_exports

if TYPE_CHECKING:
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

_MODULES = {
    "ComplianceExtra": "tool",
    "choose_backend": "tool",
    "ComplianceRagStructured": "models",
    "RagDocument": "models",
    "IamTokenProvider": "iam",
    "IndexStats": "local_kb",
    "KnowledgeBaseError": "local_kb",
    "LocalKnowledgeBase": "local_kb",
    "build_index": "local_kb",
    "format_stats": "local_kb",
    "ManagedRagBackend": "managed",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)


def create(
    settings: Settings, *, http_client: httpx.AsyncClient | None = None, clock: Clock = time.monotonic
) -> ComplianceExtra:
    """The compliance_rag extra for `settings` (no tools when MCP_RAG_BACKEND=off or misconfigured)."""
    from .tool import ComplianceExtra

    return ComplianceExtra(settings, http_client=http_client, clock=clock)
