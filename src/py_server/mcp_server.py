"""The proxy core: one low-level MCP `Server` that every front-end (stdio, SSE, Streamable HTTP) shares.

It serves the cached 1C catalog plus the local tool registry, forwards calls to 1C, and turns
failures into what MCP clients expect: a failing tool is an `isError` result, an unknown tool is a
JSON-RPC error naming it, a 1C outage during a call is an `isError` result that says so.

Every request walks one path: who asks (`callers`), the audit record (`audit`), which base the
name belongs to on this endpoint (`routing`), the caller's policy for that base (`policy`), the 1C
connection for the caller's identity (`upstreams`), the call, then personal-data masking
(`masking`) of what goes back. The handlers only put these together; each concern lives in its
own module.

One low-level `Server` per view: the default one (`proxy.server`: the only base, or every base
together) and one per base for the per-base endpoints (`proxy.server_for(name)`).

    proxy = MCPProxy(settings, client, extras)
    async with proxy.running():
        await proxy.server.run(read_stream, write_stream, proxy.initialization_options())
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from mcp import types
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPError

from . import __version__
from .audit import AuditLog, AuditRecord
from .callers import Caller, caller_of
from .catalog import Catalog, Kind
from .config import Settings
from .errors import InvalidRequestError, OneCAuthError, OneCError, OneCProtocolError, OneCRpcError
from .identity import SERVICE_KEY, Identity
from .local_tools import Extra, ToolRegistry, error_result
from .masking import Masker
from .metrics import UNKNOWN, Metrics
from .notifier import ListChangeNotifier
from .onec_client import OneCClient
from .onec_mapping import to_call_result, to_prompt_result, to_read_result
from .policy import Denial, Policy, PolicyResolver, Rules, SamePolicyForAll
from .progress import reporting_progress
from .redaction import clip
from .routing import DEFAULT_BASE, RESOURCE_SCHEME, AllBasesView, Base, SingleBaseView, View
from .sessions import SessionGate
from .upstreams import IdentityLimitError, OneCConnection, UpstreamRegistry

logger = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", bound=types.Result)
ItemT = TypeVar("ItemT")
MASK_IN_THREAD_BYTES = 32 * 1024

INSTRUCTIONS = (
    "Tools, resources and prompts of a 1C:Enterprise base, served through onec-mcp-proxy. "
    "Tool errors come back as results with isError set; read their text."
)


class _ProxyServer(Server[Any]):
    """A low-level Server whose advertised capabilities follow what the proxy can really do."""

    def __init__(self, view: View, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._view = view

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        # The proxy always sends list_changed (both eras) and never resource updates, whatever the
        # transport passes in; resources and prompts are dropped when 1C is known not to serve them.
        capabilities = super().get_capabilities(
            NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True),
            experimental_capabilities,
            extensions,
            protocol_version=protocol_version,
        )
        update: dict[str, Any] = {}
        catalogs = [base.upstreams.service.catalog for base in self._view.bases]
        if capabilities.resources is not None:
            resources = capabilities.resources.model_copy(update={"subscribe": False})
            update["resources"] = resources if any(c.supports("resources") for c in catalogs) else None
        if not any(catalog.supports("prompts") for catalog in catalogs):
            update["prompts"] = None
        return capabilities.model_copy(update=update)


@dataclass(frozen=True)
class BaseSpec:
    """What the proxy needs to serve one base: its name, settings, service client and policy."""

    name: str
    settings: Settings
    client: OneCClient
    policies: PolicyResolver


class MCPProxy:
    """The 1C bases' catalogs and the local tools, behind one MCP server per view."""

    def __init__(
        self,
        settings: Settings,
        client: OneCClient | None = None,
        extras: Sequence[Extra] = (),
        *,
        policies: PolicyResolver | None = None,
        bases: Sequence[BaseSpec] = (),
    ) -> None:
        """One base from `client` (named "default"), or several from `bases`; `policies` is the
        policy of the local tools and of the one base (default: the settings')."""
        self.settings = settings
        self.extras = list(extras)
        self.registry = ToolRegistry([tool for extra in self.extras for tool in extra.tools])
        self.policies = policies or SamePolicyForAll(Policy(Rules.from_settings(settings)))
        self.masker = Masker.from_settings(settings)
        self.audit = AuditLog.from_settings(settings)
        self.notifier = ListChangeNotifier()
        if client is not None:
            bases = [BaseSpec(DEFAULT_BASE, settings, client, self.policies), *bases]
        if not bases:
            raise ValueError("MCPProxy needs a 1C client or at least one base")
        self.bases: dict[str, Base] = {spec.name: self._base(spec) for spec in bases}
        self.metrics = Metrics(self)
        for name, base in self.bases.items():
            base.upstreams.observe(functools.partial(self.metrics.onec, name))
        self.started_at = time.monotonic()
        # What clients hold open, across front-ends; the HTTP front-end adds its transports.
        self.sessions = SessionGate(settings.max_sessions)
        self.sessions.add_counter("listen", lambda: self.notifier.listen_count)
        self._shadowed: set[str] = set()
        self._policy_warnings: dict[str, set[str]] = {}
        self._catalog_loaded: set[str] = set()  # bases whose first catalog has arrived
        # The default view: the only base as it is, or every base together, prefixed.
        every = list(self.bases.values())
        default: View = (
            SingleBaseView(every[0]) if len(every) == 1 else AllBasesView(every, separator=settings.base_separator)
        )
        self.views: dict[str, View] = {default.name: default}
        if len(every) > 1:
            self.views.update({base.name: SingleBaseView(base) for base in every})
        self.default_view = default
        self._servers: dict[str, Server[Any]] = {}
        self.server = self.server_for(default.name)

    def _base(self, spec: BaseSpec) -> Base:
        async def changed(kinds: set[Kind], audience: str | None) -> None:
            await self._catalog_changed(spec.name, kinds, audience)

        # 1C polling pauses while no client could hear list_changed and nobody asks for a TTL. Right
        # for stdio too: its one client is counted (handshake session or listen stream) or, if it
        # does neither, would never hear list_changed anyway, and its next request resumes polling.
        upstreams = UpstreamRegistry(
            spec.settings,
            spec.client,
            on_change=changed,
            connected_clients=lambda: self.notifier.session_count + self.notifier.listen_count,
        )
        return Base(spec.name, spec.settings, upstreams, spec.policies)

    @property
    def first_base(self) -> Base:
        return next(iter(self.bases.values()))

    @property
    def upstreams(self) -> UpstreamRegistry:
        """The first base's connections (the only base's, in a single-base proxy)."""
        return self.first_base.upstreams

    @property
    def client(self) -> OneCClient:
        """The first base's service client (health, check, the shared catalog)."""
        return self.upstreams.service.client

    @property
    def catalog(self) -> Catalog:
        """The first base's service catalog: what `check` and `/health` report for it."""
        return self.upstreams.service.catalog

    def server_for(self, view: str) -> Server[Any]:
        """The low-level Server of a view: `ALL`/the default, or a base's name (KeyError if none)."""
        if view not in self._servers:
            self._servers[view] = self._build_server(self.views[view])
        return self._servers[view]

    async def verify_login(self, identity: Identity, base: str | None = None) -> None:
        """Check a person's 1C login with `base`, or with the bases of the default view: one that
        accepts it is enough (the others refuse that person's calls themselves)."""
        # A path under /bases/ that names no base is answered 404 by the router; check as for /mcp.
        bases = [self.bases[base]] if base in self.bases else list(self.default_view.bases)
        if len(bases) == 1:
            await bases[0].upstreams.verify(identity)
            return
        # The first base to accept decides; a slow one does not hold the request up.
        checks = [asyncio.ensure_future(b.upstreams.verify(identity)) for b in bases]
        errors: list[BaseException] = []
        try:
            for done in asyncio.as_completed(checks):
                try:
                    await done
                except Exception as exc:
                    errors.append(exc)
                else:
                    return
        finally:
            for check in checks:
                check.cancel()
        raise next((e for e in errors if isinstance(e, OneCAuthError)), errors[0])

    # --- lifecycle ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MCPProxy]:
        """Refresh the catalog in the background; close 1C and upstream clients on exit."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(self.notifier.running())
                # Every base's refresher starts at once: one slow base does not hold up the others.
                await asyncio.gather(
                    *(stack.enter_async_context(base.upstreams.running()) for base in self.bases.values())
                )
                yield self
        finally:
            self.notifier.close()
            self.audit.close()
            for extra in self.extras:
                await extra.aclose()

    def initialization_options(self) -> InitializationOptions:
        return self.server.create_initialization_options()

    # --- handlers -----------------------------------------------------------------------

    def _build_server(self, view: View) -> Server[Any]:
        server = _ProxyServer(
            view,
            self.settings.server_name,
            version=__version__,
            title="1C:Enterprise MCP proxy",
            instructions=INSTRUCTIONS,
            on_list_tools=self._observed(view, "tools/list", self._list_tools),
            on_call_tool=self._observed(view, "tools/call", self._call_tool),
            on_list_resources=self._observed(view, "resources/list", self._list_resources),
            on_list_resource_templates=self._observed(view, "resources/templates/list", self._list_resource_templates),
            on_read_resource=self._observed(view, "resources/read", self._read_resource),
            on_list_prompts=self._observed(view, "prompts/list", self._list_prompts),
            on_get_prompt=self._observed(view, "prompts/get", self._get_prompt),
            on_subscriptions_listen=self._listen,
        )
        server.add_notification_handler(
            "notifications/initialized", types.NotificationParams, functools.partial(self._initialized, view)
        )
        return server

    def _observed(
        self, view: View, method: str, handler: Callable[[View, Any, Any], Awaitable[ResultT]]
    ) -> Callable[[Any, Any], Awaitable[ResultT]]:
        """`handler` for `view`, counted once per request (metrics) and logged as one line."""

        async def observed(ctx: ServerRequestContext[Any], params: Any) -> ResultT:
            started = time.perf_counter()
            outcome = "error"
            try:
                result = await handler(view, ctx, params)
                outcome = "tool_error" if getattr(result, "is_error", None) is True else "ok"
                return result
            finally:
                self._count(view, method, ctx, params, outcome, time.perf_counter() - started)

        return observed

    def _count(self, view: View, method: str, ctx: Any, params: Any, outcome: str, seconds: float) -> None:
        caller = caller_of(ctx)
        name = getattr(params, "name", None) or getattr(params, "uri", None)
        base, tool = self._labels(view, method, name)
        self.metrics.request(method, tool=tool, base=base, outcome=outcome, seconds=seconds, user=caller.name)
        # One line per request for log shippers (MCP_LOG_FORMAT=json); at DEBUG for people reading text.
        level = logging.INFO if self.settings.log_format == "json" else logging.DEBUG
        if not logger.isEnabledFor(level):  # the hot path builds nothing for a line nobody reads
            return
        extra = {
            "request_id": str(getattr(ctx, "request_id", "")),
            "method": method,
            "tool": tool or None,
            "duration_ms": round(seconds * 1000, 1),
            "outcome": outcome,
            "session": caller.session_id,
            "base": base,
            "user": caller.name,
        }
        logger.log(level, "%s %s%s: %s in %.1f ms", caller.transport, method, f" {tool}" if tool else "", outcome,
                   seconds * 1000, extra=extra)  # fmt: skip

    def _labels(self, view: View, method: str, name: str | None) -> tuple[str, str]:
        """(base, tool) labels from names the proxy knows; a name no catalog has is "unknown"."""
        if method.endswith("/list") or name is None:
            return (view.name if isinstance(view, AllBasesView) else view.bases[0].name), ""
        if method == "tools/call" and name in self.registry:
            return "local", name
        kind: Kind = "tools" if method == "tools/call" else "resources" if method == "resources/read" else "prompts"
        target = view.resolve(kind, name)
        if target is None:
            return UNKNOWN, UNKNOWN if method == "tools/call" else ""
        base, original = target
        if method != "tools/call":
            return base.name, ""
        return base.name, original if base.knows_tool(original) else UNKNOWN

    async def _initialized(self, view: View, ctx: ServerRequestContext[Any], params: types.NotificationParams) -> None:
        # A session hears about the catalogs it is served: its view's bases, its identity's own or shared.
        identity = caller_of(ctx).identity
        audience = {(base.name, base.upstreams.audience_of(identity)) for base in view.bases}
        self.notifier.add_session(ctx.session, frozenset(audience))

    async def _listen(
        self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        if not self.sessions.has_room():  # a listen stream is held open like a session
            raise MCPError(types.INTERNAL_ERROR, self.sessions.refusal())
        return await self.notifier.listen_handler(ctx, params)

    async def _list_tools(
        self, view: View, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams
    ) -> types.ListToolsResult:
        caller = caller_of(ctx)
        onec_tools = await self._visible(view, caller, "tools")
        if isinstance(view, SingleBaseView):
            self._note_shadowed({tool.name for tool in onec_tools})
        tools = [tool for tool in onec_tools if tool.name not in self.registry]
        local = self.policies.policy_for(caller).visible_tools(self.registry.definitions())
        return types.ListToolsResult(tools=[*tools, *local])

    async def _list_resources(
        self, view: View, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=await self._visible(view, caller_of(ctx), "resources"))

    async def _list_prompts(
        self, view: View, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=await self._visible(view, caller_of(ctx), "prompts"))

    async def _list_resource_templates(
        self, view: View, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams
    ) -> types.ListResourceTemplatesResult:
        """1C's resource templates, or none: many clients ask at connect time, and "Method not found"
        would contradict the advertised resources capability."""
        caller = caller_of(ctx)

        async def of(base: Base) -> list[types.ResourceTemplate]:
            async with self._connection(base, caller) as onec:
                templates = await onec.catalog.templates()
            # A template is matched against the resource rules like a URI (`metadata://*` covers
            # `metadata://{name}`), so resources a policy hides are not offered as a pattern either.
            policy = base.policy_for(caller)
            visible = [t for t in templates if policy.check("resources", t.uri_template) is None]
            return [view.present_template(base, template) for template in visible]

        templates = await self._per_base(view, "resource template", of)
        return types.ListResourceTemplatesResult(resource_templates=templates)

    async def _visible(self, view: View, caller: Caller, kind: Kind) -> list[Any]:
        """The items of `kind` the caller may see on `view`, from each base's cached catalog, as the view names them."""

        async def of(base: Base) -> list[Any]:
            async with self._connection(base, caller) as onec:
                items = await onec.catalog.items(kind)
            policy = base.policy_for(caller)
            visible = {
                "tools": policy.visible_tools,
                "resources": policy.visible_resources,
                "prompts": policy.visible_prompts,
            }[kind](items)
            return [view.present(kind, base, item) for item in visible]

        return await self._per_base(view, kind, of)

    async def _per_base(self, view: View, what: str, of: Callable[[Base], Awaitable[list[ItemT]]]) -> list[ItemT]:
        """`of(base)` for every base of `view`, joined in the bases' order."""
        if len(view.bases) == 1:
            return await of(view.bases[0])
        # Concurrently: a base whose first catalog fetch is slow does not hold up the others, and a
        # base that fails this caller (no room, their login refused there) leaves the others' lists.
        per_base = await asyncio.gather(*(of(base) for base in view.bases), return_exceptions=True)
        items: list[ItemT] = []
        for base, listed in zip(view.bases, per_base, strict=True):
            if isinstance(listed, BaseException):
                if not isinstance(listed, Exception):
                    raise listed
                logger.info("base %s left out of a %s list: %s", base.name, what, listed)
                continue
            items.extend(listed)
        return items

    async def _call_tool(
        self, view: View, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, arguments = params.name, params.arguments or {}
        caller = caller_of(ctx)
        with self._record(caller, "tools/call", name, arguments) as record:
            local = self.registry.get(name)
            if local is not None:
                _enforce(record, "tools", name, self.policies.policy_for(caller).check_tool(name, local.definition))
                result = await self.registry.call(name, arguments)
            else:
                base, original = self._resolve(view, "tools", name, record)
                async with self._connection(base, caller) as onec:
                    definition, exists = await self._tool_definition(original, onec)
                    _enforce(record, "tools", name, base.policy_for(caller).check_tool(original, definition))
                    if not exists:
                        raise self._unknown(view, "tool", name)
                    async with reporting_progress(ctx, self.settings.progress_interval):
                        outcome = await self._run_tool(original, arguments, onec)
                    result = view.present_result(base, outcome)
            result = await self._masked(self.masker.mask_call_result, result)
            record.result(result)
            return result

    def _resolve(self, view: View, kind: Kind, name: str, record: AuditRecord) -> tuple[Base, str]:
        """The base and its own name for `name` on `view`; a name no base answers to is a -32602 error."""
        target = view.resolve(kind, name)
        if target is None:
            raise self._unknown(view, {"tools": "tool", "resources": "resource", "prompts": "prompt"}[kind], name)
        record.at_base(target[0].name)
        return target

    def _unknown(self, view: View, noun: str, name: str) -> MCPError:
        hint = ""
        if isinstance(view, AllBasesView):
            bases = ", ".join(base.name for base in view.bases)
            separator = self.settings.base_separator
            form = f"{RESOURCE_SCHEME}<base>/<URI>" if noun == "resource" else f"<base>{separator}<name>"
            hint = f"; on this endpoint 1C's {noun}s are named {form}, with a base of: {bases}"
        elif noun != "tool":
            return MCPError(types.INVALID_PARAMS, f"Unknown {noun}: '{clip(name)}'")
        where = "neither 1C nor the proxy has a tool by that name" if noun == "tool" else "no base serves it"
        return MCPError(types.INVALID_PARAMS, f"Unknown {noun}: '{clip(name)}' ({where}{hint})")

    @contextlib.asynccontextmanager
    async def _connection(self, base: Base, caller: Caller) -> AsyncIterator[OneCConnection]:
        """The base's 1C connection for the caller's identity, held for the request; no room for
        another person, or a login this base refused a moment ago, is a JSON-RPC error."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                onec = await stack.enter_async_context(base.connection(caller))
            except (IdentityLimitError, OneCAuthError) as exc:
                raise MCPError(types.INTERNAL_ERROR, f"Base {base.name}: {exc}") from exc
            yield onec

    async def _tool_definition(self, name: str, onec: OneCConnection) -> tuple[types.Tool | None, bool]:
        """(definition, exists): a 1C tool may exist before its definition is known."""
        exists = await onec.catalog.has_tool(name)
        definition = next((tool for tool in onec.catalog.section("tools").items if tool.name == name), None)
        return definition, exists

    async def _run_tool(self, name: str, arguments: dict[str, Any], onec: OneCConnection) -> types.CallToolResult:
        try:
            return to_call_result(await onec.call_tool(name, arguments))
        except InvalidRequestError as exc:  # the client's arguments, not 1C: a protocol-level answer
            raise MCPError(types.INVALID_PARAMS, f"Cannot call the tool '{clip(name)}': {exc}") from exc
        except OneCRpcError as exc:  # 1C ran the call and failed: the model should read why
            return error_result(f"1C could not run the tool '{name}': {exc}")
        except OneCProtocolError as exc:
            return error_result(f"1C answered the tool '{name}' with something the proxy cannot pass on: {exc}")
        except OneCError as exc:
            return error_result(f"1C is unavailable, the tool '{name}' was not run: {exc}")

    async def _read_resource(
        self, view: View, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller = caller_of(ctx)
        with self._record(caller, "resources/read", params.uri) as record:
            base, original = self._resolve(view, "resources", params.uri, record)
            _enforce(record, "resources", params.uri, base.policy_for(caller).check("resources", original))
            async with self._connection(base, caller) as onec:
                try:
                    result = to_read_result(await onec.read_resource(original))
                except OneCError as exc:
                    raise self._protocol_error(f"Cannot read the 1C resource '{clip(params.uri)}'", exc) from exc
            result = view.present_contents(base, result)
            result = await self._masked(self.masker.mask_read_result, result)
            record.result(result)
            return result

    async def _get_prompt(
        self, view: View, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        caller = caller_of(ctx)
        with self._record(caller, "prompts/get", params.name, params.arguments) as record:
            base, original = self._resolve(view, "prompts", params.name, record)
            _enforce(record, "prompts", params.name, base.policy_for(caller).check("prompts", original))
            async with self._connection(base, caller) as onec:
                try:
                    result = view.present_result(
                        base, to_prompt_result(await onec.get_prompt(original, params.arguments))
                    )
                except (OneCError, InvalidRequestError) as exc:
                    raise self._protocol_error(f"Cannot get the 1C prompt '{clip(params.name)}'", exc) from exc
            result = await self._masked(self.masker.mask_prompt_result, result)
            record.result(result)
            return result

    async def _masked(self, mask: Callable[[ResultT], ResultT], result: ResultT) -> ResultT:
        """`mask(result)`; a large result is masked in a worker thread, so other clients are not held up.

        Masking costs about 0.5 ms per KB of text full of identifiers, and the name recogniser
        10-30 ms for any result: on the event loop they would hold up every other client.
        """
        if not self.masker:
            return result
        if not self.masker.recognises_names and _text_size(result) < MASK_IN_THREAD_BYTES:
            return mask(result)
        return await anyio.to_thread.run_sync(mask, result)

    def _protocol_error(self, what: str, exc: OneCError | InvalidRequestError) -> MCPError:
        """A JSON-RPC error for a failed read or prompt. 1C's text in it is masked like a result:
        an error message is something the client receives too."""
        code = types.INVALID_PARAMS if isinstance(exc, InvalidRequestError) else types.INTERNAL_ERROR
        return MCPError(code, self.masker.mask_text(f"{what}: {exc}", Counter()) if self.masker else f"{what}: {exc}")

    def _record(self, caller: Caller, method: str, target: str, arguments: dict[str, Any] | None = None) -> AuditRecord:
        """The audit record of one request; arguments are masked like results before they are written."""
        if arguments is not None and self.audit.include_arguments:
            arguments, _ = self.masker.mask_arguments(arguments)
        else:
            arguments = None
        return self.audit.record(caller, method, target, arguments)

    def policy_report(self, base: str | None = None) -> dict[str, Any]:
        """What a base's policy hides of its current catalog (the first base's with the local tools),
        and patterns that match nothing."""
        chosen = self.bases[base] if base is not None else self.first_base
        catalog = chosen.upstreams.service.catalog
        tools = list(catalog.section("tools").items)
        if chosen is self.first_base:
            tools.extend(self.registry.definitions())
        sections = catalog.section("resources").items, catalog.section("prompts").items
        return chosen.policies.default.report(tools, *sections)

    # --- catalog changes and health -----------------------------------------------------

    async def _catalog_changed(self, base: str, kinds: set[Kind], audience: str | None = None) -> None:
        """A base's catalog changed: the shared one (audience None) or one person's own (their key).

        It reaches the sessions served that catalog: on the base's own endpoint and where every
        base is served together."""
        target = (base, audience or SERVICE_KEY)
        if audience is not None:
            logger.debug("a personal 1C catalog of base %s changed (%s)", base, ", ".join(sorted(kinds)))
            await self.notifier.notify(kinds, target)
            return
        where = f" of base {base}" if len(self.bases) > 1 else ""
        if base in self._catalog_loaded:
            logger.info("1C catalog%s changed (%s); notifying clients", where, ", ".join(sorted(kinds)))
        else:  # a start-up fact, not a change (clients that connected before it still hear of it)
            self._catalog_loaded.add(base)
            logger.info("1C catalog%s loaded (%s)", where, ", ".join(sorted(kinds)))
        warnings = set(self.policy_report(base)["warnings"])
        for warning in sorted(warnings - self._policy_warnings.get(base, set())):
            logger.warning("policy%s: %s (a typo?)", where, warning)
        self._policy_warnings[base] = warnings
        await self.notifier.notify(kinds, target)

    def _note_shadowed(self, onec_names: set[str]) -> None:
        shadowed = onec_names & set(self.registry.names)
        for name in sorted(shadowed - self._shadowed):
            logger.warning("1C has a tool named %r; the local tool of that name is served instead", name)
        self._shadowed = shadowed

    @property
    def shadowed_tools(self) -> list[str]:
        """1C tools hidden by a local tool of the same name (for `/health`)."""
        return sorted({tool.name for tool in self.catalog.section("tools").items} & set(self.registry.names))


def _enforce(record: AuditRecord, kind: Kind, name: str, denial: Denial | None) -> None:
    """Refuse a hidden item with the setting that hides it (never "unknown"), and audit the refusal."""
    if denial is None:
        return
    message = denial.message(kind, name)
    record.deny(message)
    raise MCPError(types.INVALID_PARAMS, message, {"policy": denial.setting})


def _text_size(result: types.Result) -> int:
    """About how many characters of text `result` carries, without serializing it."""
    size = len(str(getattr(result, "structured_content", None) or ""))
    messages = getattr(result, "messages", ())
    items = [*getattr(result, "content", ()), *getattr(result, "contents", ()), *(m.content for m in messages)]
    for item in items:
        text = getattr(getattr(item, "resource", item), "text", None)
        size += len(text) if isinstance(text, str) else 0
    return size
