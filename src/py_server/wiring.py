"""Compose a ready proxy from settings: the 1C client, the local extras, the policies and the core.

proxy = build_proxy(settings)
"""

from __future__ import annotations

from .config import Settings, require_consistent_identity, require_onec_url
from .extras import create_extras
from .group_policy import GroupPolicies, load_policy_file
from .mcp_server import MCPProxy
from .onec_client import OneCClient, TotalSlots
from .policy import Policy, PolicyResolver, Rules, SamePolicyForAll


def build_proxy(settings: Settings) -> MCPProxy:
    """Raises ConfigError when MCP_ONEC_URL is missing or the identity settings do not fit together."""
    require_onec_url(settings)
    require_consistent_identity(settings)
    # With personal 1C logins, one set of slots bounds what 1C runs for everybody together.
    total = TotalSlots(settings.onec_max_concurrency) if settings.onec_auth == "passthrough" else None
    client = OneCClient.from_settings(settings, total_slots=total)
    return MCPProxy(settings, client, create_extras(settings), policies=build_policies(settings))


def build_policies(settings: Settings) -> PolicyResolver:
    """The global policy for everybody, or with MCP_POLICY_FILE the rules of each user's groups on top."""
    policy = Policy(Rules.from_settings(settings))
    if settings.policy_file is None:
        return SamePolicyForAll(policy)
    return GroupPolicies(policy, load_policy_file(settings.policy_file))
