"""Compose a ready proxy from settings: the 1C client, the local extras and the core.

proxy = build_proxy(settings)
"""

from __future__ import annotations

from .config import Settings, require_onec_url
from .extras import create_extras
from .mcp_server import MCPProxy
from .onec_client import OneCClient


def build_proxy(settings: Settings) -> MCPProxy:
    """Raises ConfigError when MCP_ONEC_URL is missing."""
    require_onec_url(settings)
    return MCPProxy(settings, OneCClient.from_settings(settings), create_extras(settings))
