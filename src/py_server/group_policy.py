"""Rules per group of users, from the TOML file of `MCP_POLICY_FILE`, on top of the global policy.

An OAuth token names its user's groups in a claim; the file maps groups to the governance settings
in lower case. An item is served when the global policy (`MCP_TOOLS_*`, `MCP_READ_ONLY`...) serves
it, at least one of the user's listed groups allows it, and none of them denies it: the groups'
allows add up, every group's deny applies, and a group's `read_only` limits only what that group
allows. A group without an allow list for a kind allows every item of that kind. A user in no
listed group gets the global policy alone (`default = "allow"`), or is refused (`default = "deny"`).

    claim = "groups"
    default = "deny"
    [groups.accountants]
    tools_allow = ["*"]
    [groups.interns]
    read_only = true
    tools_deny = ["execute_*"]

    policies = GroupPolicies(Policy(Rules.from_settings(settings)), load_policy_file(settings.policy_file))
    refusal = policies.admits(identity.groups)          # None, or the one-line reason for a 403
    policies.policy_for(caller).check_tool(name, tool)  # Denial naming the file, group and key, or None
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from mcp import types

from .callers import Caller
from .errors import ConfigError
from .policy import LIST_KEYS, BasePolicy, Denial, Kind, Policy, Rules
from .redaction import clip
from .toml_check import boolean, describe, did_you_mean, group_key, parse_toml, pattern_list, read_text, shown

__all__ = ["GroupPolicies", "GroupPolicy", "PolicyFile", "load_policy_file", "parse_policy_file"]

SETTING = "MCP_POLICY_FILE"
DEFAULT_CLAIM = "groups"
CACHE_SIZE = 256  # combined policies kept, one per set of listed groups: real users share a few sets
GROUP_KEYS = (*LIST_KEYS, "read_only")
TOP_KEYS = ("claim", "default", "groups")
Default = Literal["deny", "allow"]


def group_setting(name: str) -> str:
    """The setting prefix of a group's rules, as a denial names them: `MCP_POLICY_FILE [groups.interns]`."""
    return f"{SETTING} [groups.{group_key(name)}]"


@dataclass(frozen=True, eq=False)
class PolicyFile:
    """A checked `MCP_POLICY_FILE`: the claim holding a user's groups, the default for a user in no
    listed group, and each group's `Rules` (in the file's order)."""

    path: Path
    claim: str
    default: Default
    groups: Mapping[str, Rules]

    def groups_in(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """The user's groups from a token's claims: the claim's list, or its string as one group.

        A claim name with dots that is not a top-level claim is followed as a path
        (`realm_access.roles`); URL-like claim names (`https://example.com/groups`) are found as they are.
        Anything that is not a string is ignored: a group is a name.
        """
        value: Any = claims.get(self.claim)
        if value is None and "." in self.claim:
            value = claims
            for part in self.claim.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            return (value,) if value else ()
        if isinstance(value, list | tuple):
            return tuple(item for item in value if isinstance(item, str) and item)
        return ()


def load_policy_file(path: Path) -> PolicyFile:
    """Read and check the policy file (UTF-8, a BOM accepted).

    Raises:
        ConfigError: one line naming the file and, when it is about one, the group and the key.
    """
    return parse_policy_file(read_text(path, lambda message: ConfigError(f"{SETTING} {path}: {message}")), path)


def parse_policy_file(text: str, path: Path) -> PolicyFile:
    """Check the TOML text of a policy file; `path` only names it in messages.

    Raises:
        ConfigError: one line naming the file, the group and the key that are wrong.
    """

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{SETTING} {path}: {message}")

    document = parse_toml(
        text,
        fail,
        empty="it needs a [groups.NAME] table for each group of users",
        non_ascii_hint='a name beyond A-Z, 0-9, _ and - needs quotes: [groups."Бухгалтерия"]',
    )

    for key, value in document.items():
        if key not in TOP_KEYS:
            if isinstance(value, dict):
                raise fail(f"unknown table [{group_key(key)}]; a group's rules go in [groups.{group_key(key)}]")
            raise fail(f"unknown key {key!r}{did_you_mean(key, TOP_KEYS)}; the keys are {', '.join(TOP_KEYS)}")

    claim = document.get("claim", DEFAULT_CLAIM)
    if not isinstance(claim, str) or not claim.strip():
        raise fail(f"claim must be the name of the token claim that holds a user's groups, not {shown(claim)}")
    default = document.get("default", "deny")
    if default not in ("deny", "allow"):
        raise fail(f'default must be "deny" or "allow", not {shown(default)}')

    tables = document.get("groups")
    if tables is None or tables == {}:
        raise fail("the file lists no groups; add a [groups.NAME] table for each group of users")
    if not isinstance(tables, dict):
        raise fail(f"groups must be a set of [groups.NAME] tables, not {describe(tables)}")
    groups: dict[str, Rules] = {}
    for name, table in tables.items():
        where = f"[groups.{group_key(name)}]"
        if not name.strip():
            raise fail(f"{where}: a group needs a name")
        if not isinstance(table, dict):
            raise fail(f"{where} must be a table of rules, not {describe(table)}")
        groups[name] = Rules.from_table(_checked_group(table, where, fail), group_setting(name))
    return PolicyFile(path=path, claim=claim.strip(), default=default, groups=groups)


def _checked_group(table: dict[str, Any], where: str, fail_file: Callable[[str], ConfigError]) -> dict[str, Any]:
    """One group's table, checked: known keys, lists of non-empty patterns (a string is one pattern)."""

    def fail(message: str) -> ConfigError:
        return fail_file(f"{where} {message}")

    checked: dict[str, Any] = {}
    for key, value in table.items():
        if key not in GROUP_KEYS:
            raise fail(f"unknown key {key!r}{did_you_mean(key, GROUP_KEYS)}; the keys are {', '.join(GROUP_KEYS)}")
        checked[key] = boolean(key, value, fail) if key == "read_only" else pattern_list(key, value, fail)
    return checked


class GroupPolicy(BasePolicy):
    """The global policy plus the rules of a user's listed groups (at least one).

    Order, so that the denial names the rule an admin must look at: the global policy first, then
    any group's deny list, then the allow lists and `read_only` of each group, where one group
    allowing the item is enough.
    """

    def __init__(self, global_policy: Policy, groups: Mapping[str, Policy]) -> None:
        if not groups:
            raise ValueError("GroupPolicy needs at least one group; a user in none gets the global policy")
        self.global_policy = global_policy
        self.groups = dict(groups)

    def check(self, kind: Kind, name: str) -> Denial | None:
        return self._decide(kind, name, self.global_policy.check(kind, name), lambda policy: policy.check(kind, name))

    def check_tool(self, name: str, tool: types.Tool | None) -> Denial | None:
        return self._decide(
            "tools", name, self.global_policy.check_tool(name, tool), lambda policy: policy.check_tool(name, tool)
        )

    def _decide(
        self, kind: Kind, name: str, global_denial: Denial | None, check: Callable[[Policy], Denial | None]
    ) -> Denial | None:
        if global_denial is not None:
            return global_denial
        for policy in self.groups.values():
            deny = policy.rules.lists(kind)[1]
            if (pattern := deny.matching(name)) is not None:
                return Denial(deny.setting, pattern)
        refusals: dict[str, Denial] = {}
        for group, policy in self.groups.items():
            denial = check(policy)
            if denial is None:
                return None
            refusals[group] = denial
        if len(refusals) == 1:  # one group: its own denial says it best
            return next(iter(refusals.values()))
        reasons = ", ".join(f"{group_key(group)}: {_key_of(denial)}" for group, denial in refusals.items())
        groups = ", ".join(group_key(group) for group in refusals)
        return Denial(f"{SETTING} (groups {groups})", detail=f"none of the user's groups allows it ({reasons})")


def _key_of(denial: Denial) -> str:
    """The key of a group's rule from its setting name (`... [groups.interns] tools_allow`)."""
    return denial.setting.rsplit(" ", 1)[-1]


class _NoAccess(BasePolicy):
    """Everything hidden, for a caller in no listed group under `default = "deny"`.

    Such a user is refused at sign-in; this keeps the rule if a caller reaches a handler anyway.
    """

    def __init__(self, denial: Denial) -> None:
        self._denial = denial

    def check(self, kind: Kind, name: str) -> Denial | None:
        return self._denial

    def check_tool(self, name: str, tool: types.Tool | None) -> Denial | None:
        return self._denial


class GroupPolicies:
    """A `PolicyResolver`: the caller's policy from the groups their identity carries.

    Group names are compared exactly (case-sensitive, as the identity provider writes them); groups
    the file does not list are ignored. The combined policy is built once per set of listed groups.
    """

    def __init__(self, global_policy: Policy, policy_file: PolicyFile, *, cache_size: int = CACHE_SIZE) -> None:
        self._global = global_policy
        self.policy_file = policy_file
        self._groups = {name: Policy(rules) for name, rules in policy_file.groups.items()}
        self._no_access = _NoAccess(
            Denial(f"{SETTING} default", detail='it is "deny" and the user is in none of the groups the file lists')
        )
        self._combined = lru_cache(maxsize=cache_size)(self._combine)

    @property
    def default(self) -> Policy:
        """The global policy: what `check` and `/health` report."""
        return self._global

    def policy_for(self, caller: Caller) -> BasePolicy:
        # Groups come from OAuth tokens, which only HTTP clients carry: the one local user of a stdio
        # proxy (its own 1C login in its own client config) gets the global policy.
        if caller.transport == "stdio":
            return self._global
        return self.policy_for_groups(caller.identity.groups)

    @property
    def claim(self) -> str:
        """The token claim that holds a user's groups."""
        return self.policy_file.claim

    def policy_for_groups(self, groups: Iterable[str]) -> BasePolicy:
        """The policy of a user in `groups`: global alone, global plus the listed groups, or nothing."""
        listed = self._listed(groups)
        if listed:
            return self._combined(listed)
        return self._global if self.policy_file.default == "allow" else self._no_access

    def admits(self, groups: Sequence[str]) -> str | None:
        """None when a user in `groups` may sign in, else the one-line reason (for a 403)."""
        if self.policy_file.default == "allow" or self._listed(groups):
            return None
        if isinstance(groups, str):
            groups = (groups,)
        if not groups:
            claim = json.dumps(self.policy_file.claim, ensure_ascii=False)
            return f'Access refused by {SETTING}: the token\'s {claim} claim names no group, and its default is "deny"'
        names = clip(", ".join(groups))
        return f'Access refused by {SETTING}: none of the user\'s groups ({names}) is listed, and its default is "deny"'

    def warnings(
        self, tools: Sequence[types.Tool], resources: Sequence[types.Resource], prompts: Sequence[types.Prompt]
    ) -> list[str]:
        """The groups' patterns that match nothing in the catalog (a typo?), like `Policy.report`'s."""
        return [
            warning
            for policy in self._groups.values()
            for warning in policy.report(tools, resources, prompts)["warnings"]
        ]

    def _listed(self, groups: Iterable[str]) -> frozenset[str]:
        if isinstance(groups, str):  # one group, not its letters
            groups = (groups,)
        return frozenset(group for group in groups if group in self._groups)

    def _combine(self, listed: frozenset[str]) -> GroupPolicy:
        # The file's order, so denials list the groups as the admin wrote them.
        return GroupPolicy(self._global, {name: policy for name, policy in self._groups.items() if name in listed})
