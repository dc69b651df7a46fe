"""The tool policy on its own: allow and deny lists, deny winning, read-only, and what it reports."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import types

from py_server.callers import Caller
from py_server.config import Settings
from py_server.policy import BasePolicy, Denial, Kind, Policy, Rule, Rules, SamePolicyForAll

READ = types.ToolAnnotations(read_only_hint=True)
TOOLS = [
    types.Tool(name="get_metadata", input_schema={"type": "object"}),
    types.Tool(name="query_sales", input_schema={"type": "object"}),
    types.Tool(name="post_document", input_schema={"type": "object"}),
    types.Tool(name="warranty_days", input_schema={"type": "object"}, annotations=READ),
    types.Tool(
        name="delete_all", input_schema={"type": "object"}, annotations=types.ToolAnnotations(read_only_hint=False)
    ),
]
RESOURCES = [
    types.Resource(uri="metadata://Справочники/Номенклатура", name="n"),
    types.Resource(uri="metadata://Документы/Реализация", name="r"),
    types.Resource(uri="file://Руководство.md", name="m"),
]
PROMPTS = [types.Prompt(name="sales_analysis"), types.Prompt(name="monthly_report")]


def policy(**settings: Any) -> Policy:
    return Policy(Rules.from_settings(Settings(_env_file=None, **settings)))  # type: ignore[call-arg]


def names(items: list[Any]) -> list[str]:
    return [getattr(item, "name", None) if not hasattr(item, "uri") else item.uri for item in items]


def test_no_settings_hide_nothing() -> None:
    open_policy = policy()
    assert not open_policy.rules.restricts
    assert open_policy.visible_tools(TOOLS) == TOOLS
    assert open_policy.visible_resources(RESOURCES) == RESOURCES
    assert open_policy.visible_prompts(PROMPTS) == PROMPTS


def test_a_deny_pattern_hides_matching_tools_and_names_itself() -> None:
    deny = policy(tools_deny="post_*,delete_*")
    assert names(deny.visible_tools(TOOLS)) == ["get_metadata", "query_sales", "warranty_days"]
    denial = deny.check_tool("post_document", TOOLS[2])
    assert denial is not None
    assert denial.message("tools", "post_document") == (
        "The tool 'post_document' is hidden by the proxy's policy, MCP_TOOLS_DENY (pattern 'post_*')"
    )


def test_an_allow_list_hides_everything_else() -> None:
    allow = policy(tools_allow="get_*,warranty_*")
    assert names(allow.visible_tools(TOOLS)) == ["get_metadata", "warranty_days"]
    denial = allow.check_tool("query_sales", TOOLS[1])
    assert denial is not None and denial.setting == "MCP_TOOLS_ALLOW"


def test_deny_wins_over_allow() -> None:
    both = policy(tools_allow="*", tools_deny="query_sales")
    denial = both.check_tool("query_sales", TOOLS[1])
    assert denial is not None and denial.setting == "MCP_TOOLS_DENY"


def test_patterns_are_case_sensitive_globs() -> None:
    deny = policy(tools_deny="Post_*")
    assert deny.check_tool("post_document", TOOLS[2]) is None


def test_read_only_serves_only_declared_readers_and_named_tools() -> None:
    read_only = policy(read_only=True, read_only_tools="get_metadata,query_*")
    assert names(read_only.visible_tools(TOOLS)) == ["get_metadata", "query_sales", "warranty_days"]
    denial = read_only.check_tool("post_document", TOOLS[2])
    assert denial is not None and denial.setting == "MCP_READ_ONLY"
    assert "readOnlyHint" in denial.message("tools", "post_document")


def test_read_only_refuses_a_tool_whose_annotations_are_unknown() -> None:
    denial = policy(read_only=True).check_tool("get_metadata", None)
    assert denial is not None and denial.setting == "MCP_READ_ONLY"


def test_read_only_tools_cannot_override_a_deny() -> None:
    both = policy(read_only=True, read_only_tools="*", tools_deny="post_*")
    denial = both.check_tool("post_document", TOOLS[2])
    assert denial is not None and denial.setting == "MCP_TOOLS_DENY"


def test_resources_are_matched_on_their_uri_byte_for_byte() -> None:
    deny = policy(resources_deny="metadata://Документы/*")
    assert names(deny.visible_resources(RESOURCES)) == ["metadata://Справочники/Номенклатура", "file://Руководство.md"]


def test_prompts_have_their_own_lists() -> None:
    allow = policy(prompts_allow="sales_*", tools_deny="sales_*")
    assert [p.name for p in allow.visible_prompts(PROMPTS)] == ["sales_analysis"]


def test_the_report_lists_what_is_hidden_and_by_which_setting() -> None:
    report = policy(tools_deny="post_*", read_only=True, resources_deny="file://*").report(TOOLS, RESOURCES, PROMPTS)
    assert report["hidden"] == {
        "tools": {
            "get_metadata": "MCP_READ_ONLY",
            "query_sales": "MCP_READ_ONLY",
            "post_document": "MCP_TOOLS_DENY",
            "delete_all": "MCP_READ_ONLY",
        },
        "resources": {"file://Руководство.md": "MCP_RESOURCES_DENY"},
    }


@pytest.mark.parametrize(
    ("settings", "warning"),
    [
        ({"tools_deny": "post_docment"}, "MCP_TOOLS_DENY pattern 'post_docment' matches no tool"),
        ({"read_only_tools": "get_metdata"}, "MCP_READ_ONLY_TOOLS pattern 'get_metdata' matches no tool"),
        ({"prompts_allow": "sales"}, "MCP_PROMPTS_ALLOW pattern 'sales' matches no prompt"),
        (
            {"resources_deny": "metadata://Документы"},
            "MCP_RESOURCES_DENY pattern 'metadata://Документы' matches no resource",
        ),
    ],
)
def test_a_pattern_that_matches_nothing_is_a_warning(settings: dict[str, str], warning: str) -> None:
    assert policy(**settings).report(TOOLS, RESOURCES, PROMPTS)["warnings"] == [warning]


def test_every_caller_gets_the_same_policy_by_default() -> None:
    shared = policy(tools_deny="x")
    resolver = SamePolicyForAll(shared)
    assert resolver.policy_for(Caller("ivanov", "stdio")) is resolver.policy_for(Caller("bearer", "sse", "s1"))


def test_rules_from_a_table_name_where_each_rule_is_written() -> None:
    rules = Rules.from_table({"tools_deny": ["post_*"], "read_only": True}, "MCP_POLICY_FILE [groups.interns]")
    assert rules.tools_deny == Rule("MCP_POLICY_FILE [groups.interns] tools_deny", ("post_*",))
    assert rules.prompts_allow == Rule("MCP_POLICY_FILE [groups.interns] prompts_allow")
    assert rules.read_only and rules.read_only_setting == "MCP_POLICY_FILE [groups.interns] read_only"
    denial = Policy(rules).check_tool("post_document", TOOLS[2])
    assert denial is not None and denial.message("tools", "post_document") == (
        "The tool 'post_document' is hidden by the proxy's policy, "
        "MCP_POLICY_FILE [groups.interns] tools_deny (pattern 'post_*')"
    )


def test_a_tables_read_only_points_to_its_own_read_only_tools() -> None:
    policy = Policy(Rules.from_table({"read_only": True}, "MCP_POLICY_FILE [groups.interns]"))
    denial = policy.check_tool("query_sales", TOOLS[1])
    assert denial is not None and denial.message("tools", "query_sales") == (
        "The tool 'query_sales' is hidden by the proxy's policy, MCP_POLICY_FILE [groups.interns] read_only: "
        "it does not declare annotations.readOnlyHint; "
        "name it in MCP_POLICY_FILE [groups.interns] read_only_tools if it only reads"
    )


def test_the_global_read_only_denial_still_names_its_settings() -> None:
    denial = policy(read_only=True).check_tool("query_sales", TOOLS[1])
    assert denial is not None and denial.setting == "MCP_READ_ONLY"
    assert denial.detail.endswith("name it in MCP_READ_ONLY_TOOLS if it only reads")


def test_the_lists_follow_from_the_item_checks_of_any_policy() -> None:
    class OnlyReports(BasePolicy):
        def check(self, kind: Kind, name: str) -> Denial | None:
            return None if "report" in name else Denial("test")

        def check_tool(self, name: str, tool: types.Tool | None) -> Denial | None:
            return self.check("tools", name)

    only = OnlyReports()
    assert only.visible_prompts(PROMPTS) == [PROMPTS[1]]
    assert only.visible_tools(TOOLS) == [] and only.visible_resources(RESOURCES) == []
