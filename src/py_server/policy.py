"""What the assistant may see and use: allow and deny lists over tools, resources and prompts, and
a read-only mode that cannot be bypassed.

Rules are glob patterns (`fnmatch`, case-sensitive) over tool names (local tools included),
resource URIs and prompt names. For each item, in this order: a matching deny pattern hides it
(deny wins); a non-empty allow list that does not match hides it; with `MCP_READ_ONLY` a tool is
served only if it declares `annotations.readOnlyHint: true` or matches `MCP_READ_ONLY_TOOLS`.
A tool whose annotations are not known (1C's catalog not loaded yet) is hidden in read-only mode:
the mode fails closed. A hidden item is not listed, and asking for it is refused with the setting
that hides it, so an admin can tell policy from a typo.

`PolicyResolver` picks a caller's policy: `SamePolicyForAll` gives everyone the one from the
settings; `group_policy.GroupPolicies` combines it with the rules of the caller's groups. Both hand
out a `BasePolicy`, so the handlers ask every policy the same questions.

    policy = Policy(Rules.from_settings(settings))
    denial = policy.check_tool("post_document", tool)   # Denial("MCP_READ_ONLY", ...) or None
"""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mcp import types

from .callers import Caller
from .config import Settings
from .redaction import clip

__all__ = ["LIST_KEYS", "BasePolicy", "Denial", "Policy", "PolicyResolver", "Rule", "Rules", "SamePolicyForAll"]

Kind = Literal["tools", "resources", "prompts"]
_NOUN: dict[Kind, str] = {"tools": "tool", "resources": "resource", "prompts": "prompt"}
# The list settings, in lower case: the `Rules` fields (and the keys of a group in MCP_POLICY_FILE).
LIST_KEYS = (
    "tools_allow",
    "tools_deny",
    "resources_allow",
    "resources_deny",
    "prompts_allow",
    "prompts_deny",
    "read_only_tools",
)


@dataclass(frozen=True)
class Rule:
    """One list setting: its name (for messages) and its patterns."""

    setting: str
    patterns: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matching(self, name: str) -> str | None:
        """The first pattern that matches `name`, or None."""
        return next((pattern for pattern in self.patterns if fnmatch.fnmatchcase(name, pattern)), None)


@dataclass(frozen=True)
class Denial:
    """Why an item is hidden: the setting, and the pattern when one matched."""

    setting: str
    pattern: str | None = None
    detail: str = ""

    def message(self, kind: Kind, name: str) -> str:
        why = f" (pattern '{self.pattern}')" if self.pattern else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"The {_NOUN[kind]} '{clip(name)}' is hidden by the proxy's policy, {self.setting}{why}{detail}"


@dataclass(frozen=True)
class Rules:
    """One set of rules; each knows the setting it came from, so a denial can name it."""

    tools_allow: Rule = field(default_factory=lambda: Rule("MCP_TOOLS_ALLOW"))
    tools_deny: Rule = field(default_factory=lambda: Rule("MCP_TOOLS_DENY"))
    resources_allow: Rule = field(default_factory=lambda: Rule("MCP_RESOURCES_ALLOW"))
    resources_deny: Rule = field(default_factory=lambda: Rule("MCP_RESOURCES_DENY"))
    prompts_allow: Rule = field(default_factory=lambda: Rule("MCP_PROMPTS_ALLOW"))
    prompts_deny: Rule = field(default_factory=lambda: Rule("MCP_PROMPTS_DENY"))
    read_only: bool = False
    read_only_tools: Rule = field(default_factory=lambda: Rule("MCP_READ_ONLY_TOOLS"))
    read_only_setting: str = "MCP_READ_ONLY"  # where `read_only` was set, for its denials

    @classmethod
    def from_settings(cls, settings: Settings, labels: Mapping[str, str] | None = None) -> Rules:
        """The rules of `settings`, each named by its setting (MCP_TOOLS_ALLOW ... MCP_READ_ONLY_TOOLS)
        or by `labels` (setting field -> where it is written, e.g. a base's key in the bases file)."""
        names = labels or {}

        def rule(key: str) -> Rule:
            return Rule(names.get(key, f"MCP_{key.upper()}"), tuple(getattr(settings, key)))

        return cls._build(rule, settings.read_only, names.get("read_only", "MCP_READ_ONLY"))

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> Rules:
        """Rules from a table already checked (lists of patterns, a bool `read_only`), each rule named
        `{where} {key}`, e.g. `MCP_POLICY_FILE [groups.interns] tools_deny`, so a denial says where it
        is written. A missing key is an empty list (or not read-only); a string is one pattern."""

        def rule(key: str) -> Rule:
            value = table.get(key, ())
            return Rule(f"{where} {key}", (value,) if isinstance(value, str) else tuple(value))

        return cls._build(rule, table.get("read_only", False) is True, f"{where} read_only")

    @classmethod
    def _build(cls, rule: Callable[[str], Rule], read_only: bool, read_only_setting: str = "MCP_READ_ONLY") -> Rules:
        return cls(
            tools_allow=rule("tools_allow"),
            tools_deny=rule("tools_deny"),
            resources_allow=rule("resources_allow"),
            resources_deny=rule("resources_deny"),
            prompts_allow=rule("prompts_allow"),
            prompts_deny=rule("prompts_deny"),
            read_only=read_only,
            read_only_tools=rule("read_only_tools"),
            read_only_setting=read_only_setting,
        )

    def lists(self, kind: Kind) -> tuple[Rule, Rule]:
        """(allow, deny) for `kind`."""
        return getattr(self, f"{kind}_allow"), getattr(self, f"{kind}_deny")

    @property
    def restricts(self) -> bool:
        """False when nothing is hidden, so handlers can skip the work."""
        return self.read_only or any(rule for kind in _NOUN for rule in self.lists(kind))


class BasePolicy(ABC):
    """What the handlers ask of a caller's policy: one item (`check`, `check_tool`), or which of a list
    to show. A subclass decides items; the lists follow from that."""

    @abstractmethod
    def check(self, kind: Kind, name: str) -> Denial | None:
        """Why the resource URI, prompt name or tool name is hidden, or None if it is served."""

    @abstractmethod
    def check_tool(self, name: str, tool: types.Tool | None) -> Denial | None:
        """Why the tool is hidden (lists and read-only), or None. `tool` is None when not known yet."""

    def visible_tools(self, tools: Iterable[types.Tool]) -> list[types.Tool]:
        return [tool for tool in tools if self.check_tool(tool.name, tool) is None]

    def visible_resources(self, resources: Iterable[types.Resource]) -> list[types.Resource]:
        return [resource for resource in resources if self.check("resources", resource.uri) is None]

    def visible_prompts(self, prompts: Iterable[types.Prompt]) -> list[types.Prompt]:
        return [prompt for prompt in prompts if self.check("prompts", prompt.name) is None]


class Policy(BasePolicy):
    """One `Rules`: the global policy, or one group's."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    # --- one item -----------------------------------------------------------------------

    def check(self, kind: Kind, name: str) -> Denial | None:
        """The allow and deny lists for one resource URI, prompt name or tool name."""
        allow, deny = self.rules.lists(kind)
        if (pattern := deny.matching(name)) is not None:
            return Denial(deny.setting, pattern)
        if allow and allow.matching(name) is None:
            return Denial(allow.setting, detail="not in the allow list")
        return None

    def check_tool(self, name: str, tool: types.Tool | None) -> Denial | None:
        """The lists, then read-only. `tool` is None when its definition is not known."""
        denial = self.check("tools", name)
        if denial is not None or not self.rules.read_only:
            return denial
        if self.rules.read_only_tools.matching(name) is not None:
            return None
        setting = self.rules.read_only_setting
        if tool is None:
            return Denial(setting, detail="the tool's annotations are not known yet, so it is not served")
        annotations = tool.annotations
        if annotations is not None and annotations.read_only_hint is True:
            return None
        return Denial(
            setting,
            detail=f"it does not declare annotations.readOnlyHint; "
            f"name it in {self.rules.read_only_tools.setting} if it only reads",
        )

    # --- what it does, for check and /health --------------------------------------------

    def report(
        self, tools: Sequence[types.Tool], resources: Sequence[types.Resource], prompts: Sequence[types.Prompt]
    ) -> dict[str, Any]:
        """What the policy hides (item -> setting) and which patterns match nothing (warnings)."""
        hidden: dict[str, dict[str, str]] = {
            "tools": {t.name: d.setting for t in tools if (d := self.check_tool(t.name, t)) is not None},
            "resources": {r.uri: d.setting for r in resources if (d := self.check("resources", r.uri)) is not None},
            "prompts": {p.name: d.setting for p in prompts if (d := self.check("prompts", p.name)) is not None},
        }
        names: dict[Kind, list[str]] = {
            "tools": [tool.name for tool in tools],
            "resources": [resource.uri for resource in resources],
            "prompts": [prompt.name for prompt in prompts],
        }
        rules = [(kind, rule) for kind in names for rule in self.rules.lists(kind)]
        rules.append(("tools", self.rules.read_only_tools))
        warnings = [
            f"{rule.setting} pattern '{pattern}' matches no {_NOUN[kind]}"
            for kind, rule in rules
            for pattern in rule.patterns
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names[kind])
        ]
        return {"hidden": {kind: items for kind, items in hidden.items() if items}, "warnings": warnings}


class PolicyResolver(Protocol):
    """Picks the policy for a caller: where per-user (or per-base) rules plug in."""

    @property
    def default(self) -> Policy:
        """The policy of a caller with no rules of their own (what `check` and `/health` report)."""
        ...

    def policy_for(self, caller: Caller) -> BasePolicy: ...


class SamePolicyForAll:
    """Every caller gets the policy from the settings."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    @property
    def default(self) -> Policy:
        return self._policy

    def policy_for(self, caller: Caller) -> Policy:
        return self._policy
