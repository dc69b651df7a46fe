"""Compose a ready proxy from settings: the 1C bases, the local extras, the policies and the core.

proxy = build_proxy(settings)
"""

from __future__ import annotations

from collections.abc import Mapping

from .bases import load_bases
from .config import Settings, require_consistent_identity, require_onec_url
from .errors import ConfigError
from .extras import create_extras
from .mcp_server import BaseSpec, MCPProxy
from .onec_client import OneCClient, TotalSlots
from .policy import Policy, PolicyResolver, Rules, SamePolicyForAll


def build_proxy(settings: Settings, *, only_base: str | None = None) -> MCPProxy:
    """The proxy of every base, or of `only_base` alone (stdio --base: the others are not even polled).

    Raises ConfigError when a base has no URL or is not in the file, the bases file is bad, or the
    identity settings do not fit together."""
    require_consistent_identity(settings)
    configs = load_bases(settings)
    if only_base is not None:
        configs = tuple(base for base in configs if base.name == only_base)
        if not configs:
            names = ", ".join(base.name for base in load_bases(settings))
            raise ConfigError(f"--base {only_base}: no such base; the bases are {names}")
    bases = []
    for base in configs:
        require_onec_url(base.settings)
        policies = build_policies(base.settings, base.policy_labels)
        bases.append(BaseSpec(base.name, base.settings, build_client(base.settings), policies))
    return MCPProxy(settings, extras=create_extras(settings), policies=build_policies(settings), bases=bases)


def build_client(settings: Settings) -> OneCClient:
    """A base's service client; with personal 1C logins, one set of slots bounds what 1C runs for everybody."""
    total = TotalSlots(settings.onec_max_concurrency) if settings.onec_auth == "passthrough" else None
    return OneCClient.from_settings(settings, total_slots=total)


def build_policies(settings: Settings, labels: Mapping[str, str] | None = None) -> PolicyResolver:
    """The global policy for everybody, or with MCP_POLICY_FILE the rules of each user's groups on top.
    `labels` name the rules a base sets itself in the bases file."""
    policy = Policy(Rules.from_settings(settings, labels))
    if settings.policy_file is None:
        return SamePolicyForAll(policy)
    from .group_policy import GroupPolicies, load_policy_file

    return GroupPolicies(policy, load_policy_file(settings.policy_file))
