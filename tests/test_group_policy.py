"""Rules per group from MCP_POLICY_FILE: the file checked line by line, groups' allows adding up,
every deny applying, read-only per group, the global policy on top, and who may sign in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import types

from py_server.callers import Caller
from py_server.config import Settings
from py_server.errors import ConfigError
from py_server.group_policy import GroupPolicies, GroupPolicy, PolicyFile, load_policy_file, parse_policy_file
from py_server.identity import Identity
from py_server.policy import BasePolicy, Policy, PolicyResolver, Rules

READ = types.ToolAnnotations(read_only_hint=True)
TOOLS = [
    types.Tool(name="get_metadata", input_schema={"type": "object"}, annotations=READ),
    types.Tool(name="query_sales", input_schema={"type": "object"}, annotations=READ),
    types.Tool(name="post_document", input_schema={"type": "object"}),
    types.Tool(name="execute_query", input_schema={"type": "object"}),
]
TOOL = {tool.name: tool for tool in TOOLS}
RESOURCES = [
    types.Resource(uri="metadata://Справочники/Номенклатура", name="n"),
    types.Resource(uri="file://Руководство.md", name="m"),
]
PROMPTS = [types.Prompt(name="sales_analysis"), types.Prompt(name="monthly_report")]

EXAMPLE = """
claim = "groups"
default = "deny"

[groups.accountants]
tools_allow = ["*"]

[groups.interns]
read_only = true
tools_deny = ["execute_*"]
"""


@dataclass(frozen=True)
class StandIn:
    """A caller as callers.Caller will be once it carries the request's Identity."""

    identity: Identity
    name: str = "someone"
    transport: str = "streamable_http"


def write(tmp_path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding=encoding)
    return path


def resolver(text: str = EXAMPLE, **settings: Any) -> GroupPolicies:
    global_policy = Policy(Rules.from_settings(Settings(_env_file=None, **settings)))  # type: ignore[call-arg]
    return GroupPolicies(global_policy, parse_policy_file(text, Path("policy.toml")))


def caller(*groups: str) -> Any:
    return StandIn(Identity("ivanov", groups=groups))


def served(policy: BasePolicy) -> list[str]:
    return [tool.name for tool in policy.visible_tools(TOOLS)]


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as error:
        parse_policy_file(text, Path("/etc/onec/policy.toml"))
    message = str(error.value)
    assert "\n" not in message and message.startswith("MCP_POLICY_FILE /etc/onec/policy.toml: ")
    return message.removeprefix("MCP_POLICY_FILE /etc/onec/policy.toml: ")


# --- the file -------------------------------------------------------------------------------


def test_the_example_file_is_read_with_its_claim_default_and_groups(tmp_path: Path) -> None:
    policy_file = load_policy_file(write(tmp_path, EXAMPLE))
    assert policy_file.claim == "groups" and policy_file.default == "deny"
    assert list(policy_file.groups) == ["accountants", "interns"]
    interns = policy_file.groups["interns"]
    assert interns.read_only and interns.tools_deny.patterns == ("execute_*",)
    assert interns.tools_deny.setting == "MCP_POLICY_FILE [groups.interns] tools_deny"
    assert not interns.tools_allow and interns.read_only_setting == "MCP_POLICY_FILE [groups.interns] read_only"


def test_claim_and_default_have_safe_defaults() -> None:
    policy_file = parse_policy_file("[groups.staff]\n", Path("p.toml"))
    assert policy_file.claim == "groups" and policy_file.default == "deny"


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    policy_file = load_policy_file(
        write(tmp_path, "[groups.\"бухгалтерия\"]\ntools_allow = ['*']\n", encoding="utf-8-sig")
    )
    assert list(policy_file.groups) == ["бухгалтерия"]


def test_a_string_is_one_pattern_where_a_list_is_expected() -> None:
    policy_file = parse_policy_file('[groups.interns]\ntools_deny = "execute_*"\n', Path("p.toml"))
    assert policy_file.groups["interns"].tools_deny.patterns == ("execute_*",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty; it needs a [groups.NAME] table for each group of users"),
        ("  \n# only a comment\n", "the file lists no groups; add a [groups.NAME] table for each group of users"),
        ('default = "allow"\n', "the file lists no groups; add a [groups.NAME] table for each group of users"),
        ("[groups.a]\ntools_deny = [", "not valid TOML: "),
        ('defualt = "deny"\n[groups.a]\n', "unknown key 'defualt' (did you mean 'default'?)"),
        ("[interns]\nread_only = true\n", "unknown table [interns]; a group's rules go in [groups.interns]"),
        ('default = "Deny"\n[groups.a]\n', 'default must be "deny" or "allow", not "Deny"'),
        ("claim = 5\n[groups.a]\n", "claim must be the name of the token claim that holds a user's groups, not 5"),
        ("groups = 3\n", "groups must be a set of [groups.NAME] tables, not a number"),
        ("[groups]\ninterns = true\n", "[groups.interns] must be a table of rules, not a boolean"),
        (
            '[groups.interns]\ntool_deny = ["x"]\n',
            "[groups.interns] unknown key 'tool_deny' (did you mean 'tools_deny'?)",
        ),
        ('[groups.interns]\nread_only = "yes"\n', '[groups.interns] read_only must be true or false, not "yes"'),
        (
            "[groups.interns]\ntools_deny = 5\n",
            "[groups.interns] tools_deny must be a list of glob patterns, not a number",
        ),
        (
            "[groups.interns]\nprompts_allow = ['a', 1]\n",
            "[groups.interns] prompts_allow[1] must be a glob pattern (a non-empty string), not 1",
        ),
        (
            '[groups.interns]\ntools_deny = "execute_*, post_*"\n',
            '[groups.interns] tools_deny is one string with commas; write a list: tools_deny = ["execute_*", "post_*"]',
        ),
        ('[groups."Domain Users"]\nreadonly = true\n', "[groups.\"Domain Users\"] unknown key 'readonly'"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_group_and_key(text: str, message: str) -> None:
    assert config_error(text).startswith(message)


def test_a_missing_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^MCP_POLICY_FILE .*missing\.toml: cannot read it"):
        load_policy_file(tmp_path / "missing.toml")


def test_an_unquoted_cyrillic_group_name_gets_a_hint() -> None:
    assert config_error("[groups.Бухгалтерия]\n").endswith('needs quotes: [groups."Бухгалтерия"]')


def test_a_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy_file(write(tmp_path, '[groups."бухгалтерия"]\n', encoding="cp1251"))


@pytest.mark.parametrize(
    ("claim", "claims", "groups"),
    [
        ("groups", {"groups": ["accountants", "interns"]}, ("accountants", "interns")),
        ("groups", {"groups": "accountants"}, ("accountants",)),
        ("groups", {"groups": "Domain Users"}, ("Domain Users",)),
        ("groups", {"groups": ["a", 1, None, ""]}, ("a",)),
        ("groups", {}, ()),
        ("realm_access.roles", {"realm_access": {"roles": ["interns"]}}, ("interns",)),
        ("https://example.com/groups", {"https://example.com/groups": ["interns"]}, ("interns",)),
    ],
)
def test_the_groups_claim_may_be_a_list_or_one_string(claim: str, claims: dict[str, Any], groups: tuple[str]) -> None:
    policy_file = PolicyFile(path=Path("p.toml"), claim=claim, default="deny", groups={})
    assert policy_file.groups_in(claims) == groups


# --- combining groups -----------------------------------------------------------------------


def test_one_group_gets_what_it_allows() -> None:
    policies = resolver()
    assert served(policies.policy_for(caller("accountants"))) == [tool.name for tool in TOOLS]
    assert served(policies.policy_for(caller("interns"))) == ["get_metadata", "query_sales"]


def test_a_user_in_several_groups_gets_the_union_of_their_allows() -> None:
    policies = resolver(
        "[groups.sales]\ntools_allow = ['query_*']\n"
        "[groups.catalog]\ntools_allow = ['get_*']\nresources_allow = ['metadata://*']\n"
    )
    both = policies.policy_for(caller("sales", "catalog"))
    assert served(both) == ["get_metadata", "query_sales"]
    # catalog allows only metadata://, sales has no resources_allow: it allows every resource
    assert both.visible_resources(RESOURCES) == RESOURCES
    assert served(policies.policy_for(caller("sales"))) == ["query_sales"]


def test_a_groups_read_only_limits_only_that_group() -> None:
    policies = resolver(EXAMPLE.replace('tools_deny = ["execute_*"]', ""))
    assert served(policies.policy_for(caller("accountants", "interns"))) == [tool.name for tool in TOOLS]


def test_every_groups_deny_applies_even_when_another_group_allows() -> None:
    policy = resolver().policy_for(caller("accountants", "interns"))
    assert served(policy) == ["get_metadata", "query_sales", "post_document"]
    denial = policy.check_tool("execute_query", TOOL["execute_query"])
    assert denial is not None
    assert denial.message("tools", "execute_query") == (
        "The tool 'execute_query' is hidden by the proxy's policy, "
        "MCP_POLICY_FILE [groups.interns] tools_deny (pattern 'execute_*')"
    )


def test_a_groups_read_only_denial_names_the_group() -> None:
    denial = resolver().policy_for(caller("interns")).check_tool("post_document", TOOL["post_document"])
    assert denial is not None and denial.setting == "MCP_POLICY_FILE [groups.interns] read_only"
    assert "name it in MCP_POLICY_FILE [groups.interns] read_only_tools if it only reads" in denial.detail


def test_a_groups_read_only_tools_serve_a_tool_without_annotations() -> None:
    policies = resolver("[groups.interns]\nread_only = true\nread_only_tools = ['post_*']\n")
    assert served(policies.policy_for(caller("interns"))) == ["get_metadata", "query_sales", "post_document"]
    assert policies.policy_for(caller("interns")).check_tool("execute_query", None) is not None


def test_when_no_group_allows_an_item_the_denial_names_each_groups_reason() -> None:
    policies = resolver("[groups.sales]\ntools_allow = ['query_*']\n[groups.interns]\nread_only = true\n")
    denial = policies.policy_for(caller("interns", "sales")).check_tool("post_document", TOOL["post_document"])
    assert denial is not None
    assert denial.message("tools", "post_document") == (
        "The tool 'post_document' is hidden by the proxy's policy, MCP_POLICY_FILE (groups sales, interns): "
        "none of the user's groups allows it (sales: tools_allow, interns: read_only)"
    )


def test_resources_and_prompts_follow_the_groups_lists() -> None:
    policies = resolver(
        "[groups.sales]\nprompts_allow = ['sales_*']\nresources_deny = ['file://*']\n"
        "[groups.reports]\nprompts_allow = ['monthly_*']\n"
    )
    policy = policies.policy_for(caller("sales", "reports"))
    assert policy.visible_prompts(PROMPTS) == PROMPTS
    assert policy.visible_resources(RESOURCES) == RESOURCES[:1]
    denial = policies.policy_for(caller("reports")).check("prompts", "sales_analysis")
    assert denial is not None and denial.setting == "MCP_POLICY_FILE [groups.reports] prompts_allow"


def test_the_global_policy_applies_on_top_of_the_groups() -> None:
    policies = resolver(tools_deny="post_*", read_only=True, read_only_tools="execute_*")
    policy = policies.policy_for(caller("accountants"))
    assert served(policy) == ["get_metadata", "query_sales", "execute_query"]
    denial = policy.check_tool("post_document", TOOL["post_document"])
    assert denial is not None and denial.message("tools", "post_document") == (
        "The tool 'post_document' is hidden by the proxy's policy, MCP_TOOLS_DENY (pattern 'post_*')"
    )


def test_groups_the_file_does_not_list_are_ignored() -> None:
    policies = resolver()
    assert served(policies.policy_for(caller("interns", "staff"))) == served(policies.policy_for(caller("interns")))


# --- users in no listed group -------------------------------------------------------------


def test_default_deny_refuses_a_user_in_no_listed_group_at_sign_in() -> None:
    policies = resolver()
    assert policies.admits(["accountants", "staff"]) is None
    assert policies.admits(["staff", "guests"]) == (
        "Access refused by MCP_POLICY_FILE: none of the user's groups (staff, guests) is listed, "
        'and its default is "deny"'
    )
    assert policies.admits([]) == (
        'Access refused by MCP_POLICY_FILE: the token\'s "groups" claim names no group, and its default is "deny"'
    )


def test_default_deny_hides_everything_from_a_user_who_got_past_sign_in() -> None:
    policy = resolver().policy_for(caller("staff"))
    assert served(policy) == [] and policy.visible_prompts(PROMPTS) == []
    denial = policy.check("resources", "file://Руководство.md")
    assert denial is not None and denial.message("resources", "file://Руководство.md") == (
        "The resource 'file://Руководство.md' is hidden by the proxy's policy, MCP_POLICY_FILE default: "
        'it is "deny" and the user is in none of the groups the file lists'
    )


def test_default_allow_gives_a_user_in_no_listed_group_the_global_policy() -> None:
    policies = resolver(EXAMPLE.replace('default = "deny"', 'default = "allow"'), tools_deny="execute_*")
    assert policies.admits([]) is None and policies.admits(["staff"]) is None
    assert policies.policy_for(caller("staff")) is policies.default
    assert served(policies.policy_for(caller())) == ["get_metadata", "query_sales", "post_document"]


def test_a_caller_without_an_identity_has_no_groups() -> None:
    policies = resolver(EXAMPLE.replace('default = "deny"', 'default = "allow"'))
    assert policies.policy_for(Caller("local", "stdio")) is policies.default


# --- the resolver -------------------------------------------------------------------------


def test_the_resolver_fits_the_protocol_and_reports_the_global_policy() -> None:
    policies: PolicyResolver = resolver(tools_deny="post_*")
    assert policies.default.rules.tools_deny.patterns == ("post_*",)


def test_the_same_groups_get_the_same_policy_object() -> None:
    policies = resolver()
    first = policies.policy_for(caller("accountants", "interns"))
    assert isinstance(first, GroupPolicy)
    assert policies.policy_for(caller("interns", "accountants", "staff")) is first
    assert policies.policy_for(caller("interns")) is not first


def test_the_cache_is_bounded() -> None:
    text = "".join(f"[groups.g{index}]\n" for index in range(4))
    global_policy = Policy(Rules())
    policies = GroupPolicies(global_policy, parse_policy_file(text, Path("p.toml")), cache_size=2)
    first = policies.policy_for(caller("g0"))
    policies.policy_for(caller("g1"))
    policies.policy_for(caller("g2"))
    assert policies.policy_for(caller("g0")) is not first  # evicted, rebuilt alike
    assert served(policies.policy_for(caller("g0"))) == served(first)


def test_group_patterns_that_match_nothing_are_warnings() -> None:
    policies = resolver("[groups.interns]\ntools_deny = ['execute_*', 'exeucte_*']\n")
    assert policies.warnings(TOOLS, RESOURCES, PROMPTS) == [
        "MCP_POLICY_FILE [groups.interns] tools_deny pattern 'exeucte_*' matches no tool"
    ]
