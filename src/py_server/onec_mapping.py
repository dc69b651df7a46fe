"""Turn 1C's JSON into MCP types, keeping every field MCP defines.

1C's answers are plain dicts (see `onec_client`). The MCP types are validated here so a bad item
is reported where it came from, instead of failing a whole response deep inside the SDK. The few
1C quirks that MCP cannot carry are adapted in one place each:

* the `type` key inside `resources/read` contents (1C's own discriminator) is dropped;
* a prompt message with role `system` (MCP allows only `user`/`assistant`) is sent as `user`;
* an `inputSchema` without `"type": "object"` gets it (MCP requires it), as does a missing one;
* `_meta` keys in the proxy's own namespace (`onec-mcp-proxy/...`) are dropped from results: only
  the proxy may say what it masked, or the audit log could be told a lie.

    tool = to_tool({"name": "get_metadata", "inputSchema": {"type": "object", "properties": {}}})
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from mcp import types
from pydantic import BaseModel, ValidationError

from .errors import OneCProtocolError

logger = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "answer"
    value = first.get("input")
    shown = f" (got {value!r:.80})" if isinstance(value, str | int | float | bool) else ""
    return f"{where}: {first['msg']}{shown}"


def _validate(model: type[Model], raw: Any, what: str) -> Model:
    if not isinstance(raw, dict):
        raise OneCProtocolError(f"1C returned an invalid {what}: expected a JSON object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise OneCProtocolError(f"1C returned an invalid {what}: {describe_validation_error(exc)}") from exc


def to_tool(raw: dict[str, Any]) -> types.Tool:
    schema = raw.get("inputSchema")
    if not isinstance(schema, dict) or schema.get("type") != "object" or schema.get("properties") == []:
        raw = {**raw, "inputSchema": _object_schema(schema)}
    return _validate(types.Tool, raw, "tool")


def _object_schema(schema: Any) -> dict[str, Any]:
    fixed = dict(schema) if isinstance(schema, dict) else {}
    fixed["type"] = "object"
    if fixed.get("properties") == []:  # an empty 1C Структура can serialize as an array
        fixed["properties"] = {}
    return fixed


def to_resource(raw: dict[str, Any]) -> types.Resource:
    return _validate(types.Resource, raw, "resource")


def to_resource_template(raw: dict[str, Any]) -> types.ResourceTemplate:
    return _validate(types.ResourceTemplate, raw, "resource template")


def to_prompt(raw: dict[str, Any]) -> types.Prompt:
    return _validate(types.Prompt, raw, "prompt")


PROXY_META_PREFIX = "onec-mcp-proxy/"


def _without_proxy_meta(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get("_meta")
    if not isinstance(meta, dict) or not any(str(key).startswith(PROXY_META_PREFIX) for key in meta):
        return raw
    kept = {key: value for key, value in meta.items() if not str(key).startswith(PROXY_META_PREFIX)}
    return {**raw, "_meta": kept}


def to_call_result(raw: dict[str, Any]) -> types.CallToolResult:
    return _validate(types.CallToolResult, _without_proxy_meta(raw), "tool result")


def to_read_result(raw: dict[str, Any]) -> types.ReadResourceResult:
    contents = raw.get("contents")
    if isinstance(contents, list):
        contents = [_without_type_key(item) for item in contents]
        raw = {**raw, "contents": contents}
    return _validate(types.ReadResourceResult, _without_proxy_meta(raw), "resource contents")


def _without_type_key(item: Any) -> Any:
    if isinstance(item, dict) and "type" in item:
        return {key: value for key, value in item.items() if key != "type"}
    return item


def to_prompt_result(raw: dict[str, Any]) -> types.GetPromptResult:
    messages = raw.get("messages")
    if isinstance(messages, list):
        raw = {**raw, "messages": [_mcp_role(message) for message in messages]}
    return _validate(types.GetPromptResult, _without_proxy_meta(raw), "prompt")


def _mcp_role(message: Any) -> Any:
    if isinstance(message, dict) and message.get("role") == "system":
        return {**message, "role": "user"}
    return message


def to_items(
    raw_items: list[Any], convert: Callable[[dict[str, Any]], Model], what: str
) -> tuple[list[Model], list[str]]:
    """Convert a 1C list item by item; an invalid item is skipped and described, not fatal."""
    items: list[Model] = []
    problems: list[str] = []
    for index, raw in enumerate(raw_items):
        try:
            items.append(convert(raw))
        except OneCProtocolError as exc:
            name = raw.get("name") or raw.get("uri") or raw.get("uriTemplate") if isinstance(raw, dict) else None
            problem = f"{what} #{index} {name!r} skipped: {exc}"
            problems.append(problem)
            logger.warning("%s", problem)
    return items, problems
