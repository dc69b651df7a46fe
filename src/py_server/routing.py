"""Which 1C base a request goes to, and how each endpoint names what the bases serve.

A `Base` is one configured 1C base at run time: its settings, its connections (an
`UpstreamRegistry`, one per identity) and its policy. A `View` is what one MCP endpoint serves:

* `SingleBaseView`: one base, exactly as a single-base proxy serves it (names and URIs unchanged);
  the per-base endpoints `/bases/<name>/...`, and the only view when there is one base.
* `AllBasesView`: every base together. Tool and prompt names carry the base as a prefix
  (`erp__get_metadata`, `MCP_BASE_SEPARATOR`), resource URIs and resource templates' URI templates
  are wrapped as `onec-base://erp/<the original, verbatim>`, and descriptions start with `[erp] `.
  Going back, a name is split at the first separator and a URI unwrapped byte for byte (a URI made
  from a wrapped template unwraps to one made from the base's own).

    view = AllBasesView(bases, separator="__")
    base, name = view.resolve("tools", "erp__get_metadata")      # (<Base erp>, "get_metadata")
    shown = view.present("tools", base, tool)                    # Tool(name="erp__get_metadata", ...)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from mcp import types

from .bases import DEFAULT_BASE
from .callers import Caller
from .config import Settings
from .policy import BasePolicy, PolicyResolver
from .upstreams import OneCConnection, UpstreamRegistry

__all__ = ["ALL", "DEFAULT_BASE", "RESOURCE_SCHEME", "AllBasesView", "Base", "SingleBaseView", "View"]

Kind = Literal["tools", "resources", "prompts"]
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT", types.CallToolResult, types.GetPromptResult)
ALL = "all"  # the name of the view that serves every base

RESOURCE_SCHEME = "onec-base://"


@dataclass(eq=False)
class Base:
    """One 1C base at run time: its settings, its 1C connections and its policy."""

    name: str
    settings: Settings
    upstreams: UpstreamRegistry
    policies: PolicyResolver

    def policy_for(self, caller: Caller) -> BasePolicy:
        return self.policies.policy_for(caller)

    def knows_tool(self, name: str) -> bool:
        """Whether any of this base's catalogs (the service account's, a person's) lists the tool."""
        return self.upstreams.knows_tool(name)

    @contextlib.asynccontextmanager
    async def connection(self, caller: Caller) -> AsyncIterator[OneCConnection]:
        async with self.upstreams.connection(caller.identity) as onec:
            yield onec

    def __repr__(self) -> str:
        return f"<Base {self.name}>"


class View(Protocol):
    """What one endpoint serves, and how its names map to the bases'."""

    name: str
    bases: Sequence[Base]

    def present(self, kind: Kind, base: Base, item: ItemT) -> ItemT:
        """`item` of `base` as this endpoint shows it."""
        ...

    def resolve(self, kind: Kind, name: str) -> tuple[Base, str] | None:
        """The base and the base's own name (or URI) for a name this endpoint showed; None if none."""
        ...

    def present_template(self, base: Base, template: types.ResourceTemplate) -> types.ResourceTemplate:
        """A resource template of `base` as this endpoint shows it: the URIs it makes resolve here."""
        ...

    def present_contents(self, base: Base, result: types.ReadResourceResult) -> types.ReadResourceResult:
        """A resource read's contents with their URIs as this endpoint names them."""
        ...

    def present_result(self, base: Base, result: ResultT) -> ResultT:
        """A tool result or prompt with the resource URIs in it as this endpoint names them."""
        ...


class SingleBaseView:
    """One base, names and URIs as the base has them."""

    def __init__(self, base: Base) -> None:
        self.name = base.name
        self.bases = (base,)
        self._base = base

    def present(self, kind: Kind, base: Base, item: ItemT) -> ItemT:
        return item

    def present_template(self, base: Base, template: types.ResourceTemplate) -> types.ResourceTemplate:
        return template

    def resolve(self, kind: Kind, name: str) -> tuple[Base, str] | None:
        return self._base, name

    def present_contents(self, base: Base, result: types.ReadResourceResult) -> types.ReadResourceResult:
        return result

    def present_result(self, base: Base, result: ResultT) -> ResultT:
        return result


class AllBasesView:
    """Every base, each item's name prefixed (or its URI wrapped) with the base's name."""

    name = ALL

    def __init__(self, bases: Sequence[Base], *, separator: str) -> None:
        self.bases = tuple(bases)
        self._by_name = {base.name: base for base in bases}
        self._separator = separator
        # Longest first: with bases "erp" and "erp_", "erp___x" belongs to "erp_".
        self._prefixes = sorted(((f"{base.name}{separator}", base) for base in bases), key=lambda p: -len(p[0]))

    def present(self, kind: Kind, base: Base, item: ItemT) -> ItemT:
        update: dict[str, Any] = {}
        if kind == "resources":
            update["uri"] = self._wrap(base, item.uri)  # type: ignore[attr-defined]
        else:
            update["name"] = f"{base.name}{self._separator}{item.name}"  # type: ignore[attr-defined]
        update["description"] = self._describe(base, getattr(item, "description", None))
        return item.model_copy(update=update)  # type: ignore[attr-defined,no-any-return]

    def present_template(self, base: Base, template: types.ResourceTemplate) -> types.ResourceTemplate:
        # Wrapped like a URI, so the URI a client makes from it is the wrapped URI of the base's own.
        update = {
            "uri_template": self._wrap(base, template.uri_template),
            "description": self._describe(base, template.description),
        }
        return template.model_copy(update=update)

    @staticmethod
    def _describe(base: Base, description: str | None) -> str:
        return f"[{base.name}] {description}" if description else f"[{base.name}]"

    def present_contents(self, base: Base, result: types.ReadResourceResult) -> types.ReadResourceResult:
        contents = [item.model_copy(update={"uri": self._wrap(base, item.uri)}) for item in result.contents]
        return result.model_copy(update={"contents": contents})

    @staticmethod
    def _wrap(base: Base, uri: str) -> str:
        return f"{RESOURCE_SCHEME}{base.name}/{uri}"

    def resolve(self, kind: Kind, name: str) -> tuple[Base, str] | None:
        if kind == "resources":
            if not name.startswith(RESOURCE_SCHEME):
                return None
            base_name, slash, original = name[len(RESOURCE_SCHEME) :].partition("/")
            base = self._by_name.get(base_name)
            return (base, original) if base is not None and slash and original else None
        # The known names decide where the base ends, not the first separator: a base named "erp_"
        # with the separator "__" makes "erp___get_metadata".
        for prefix, base in self._prefixes:
            if name.startswith(prefix) and len(name) > len(prefix):
                return base, name[len(prefix) :]
        return None

    def present_result(self, base: Base, result: ResultT) -> ResultT:
        """A tool result or prompt with the resource URIs it carries (links, embedded resources) wrapped,
        so the client can read them on this endpoint."""
        if isinstance(result, types.CallToolResult):
            return result.model_copy(update={"content": [self._wrap_content(base, c) for c in result.content]})
        if isinstance(result, types.GetPromptResult):
            messages = [m.model_copy(update={"content": self._wrap_content(base, m.content)}) for m in result.messages]
            return result.model_copy(update={"messages": messages})
        return result

    def _wrap_content(self, base: Base, content: Any) -> Any:
        if isinstance(content, types.ResourceLink):
            return content.model_copy(update={"uri": self._wrap(base, content.uri)})
        if isinstance(content, types.EmbeddedResource):
            inner = content.resource.model_copy(update={"uri": self._wrap(base, content.resource.uri)})
            return content.model_copy(update={"resource": inner})
        return content
