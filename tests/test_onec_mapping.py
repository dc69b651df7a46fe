"""1C JSON into MCP types: what is kept, and the proxy's own `_meta` namespace that 1C may not fill."""

from __future__ import annotations

import pytest

from py_server.errors import OneCProtocolError
from py_server.onec_mapping import to_call_result, to_prompt_result, to_read_result, to_resource_template

FAKE_COUNTS = {"onec-mcp-proxy/masked": {"inn": 99}, "ru.1c/source": "Документ"}


def test_a_1c_tool_result_cannot_claim_what_the_proxy_masked() -> None:
    result = to_call_result({"content": [{"type": "text", "text": "ok"}], "isError": False, "_meta": FAKE_COUNTS})
    assert result.meta == {"ru.1c/source": "Документ"}


def test_resource_and_prompt_results_lose_the_proxy_namespace_too() -> None:
    read = to_read_result({"contents": [{"type": "text", "uri": "x://a", "text": "t"}], "_meta": FAKE_COUNTS})
    prompt = to_prompt_result(
        {"messages": [{"role": "user", "content": {"type": "text", "text": "t"}}], "_meta": FAKE_COUNTS}
    )
    assert read.meta == prompt.meta == {"ru.1c/source": "Документ"}


def test_other_meta_keys_pass_through_unchanged() -> None:
    meta = {"ru.1c/source": "Документ", "trace": {"id": 7}}
    assert to_call_result({"content": [], "_meta": meta}).meta == meta


def test_a_resource_template_keeps_every_field_and_its_uri_template_byte_for_byte() -> None:
    raw = {
        "uriTemplate": "metadata://Справочники/{name}",
        "name": "Справочник",
        "title": "Справочник по имени",
        "description": "Описание справочника",
        "mimeType": "application/json",
        "annotations": {"audience": ["assistant"], "priority": 0.5},
        "_meta": {"ru.1c/source": "Конфигурация"},
    }
    template = to_resource_template(raw)
    assert template.model_dump(by_alias=True, exclude_none=True) == raw


def test_a_resource_template_without_its_uri_template_is_a_protocol_error() -> None:
    with pytest.raises(OneCProtocolError, match=r"^1C returned an invalid resource template: uriTemplate"):
        to_resource_template({"name": "Справочник"})
