"""The proxy core: one low-level MCP `Server` that every front-end (stdio, SSE, Streamable HTTP) shares.

It serves the cached 1C catalog plus the local tool registry, forwards calls to 1C, and turns
failures into what MCP clients expect: a failing tool is an `isError` result, an unknown tool is a
JSON-RPC error naming it, a 1C outage during a call is an `isError` result that says so.

Every request walks one path: who asks (`callers`), the audit record (`audit`), the caller's
policy (`policy`), the 1C connection for the caller's identity (`upstreams`), the call, then
personal-data masking (`masking`) of what goes back. The handlers only put these together; each
concern lives in its own module.

    proxy = MCPProxy(settings, client, extras)
    async with proxy.running():
        await proxy.server.run(read_stream, write_stream, proxy.initialization_options())
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
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
from .errors import InvalidRequestError, OneCError, OneCProtocolError, OneCRpcError
from .local_tools import Extra, ToolRegistry, error_result
from .masking import Masker
from .notifier import ListChangeNotifier
from .onec_client import OneCClient
from .onec_mapping import to_call_result, to_prompt_result, to_read_result
from .policy import Denial, Policy, PolicyResolver, Rules, SamePolicyForAll
from .redaction import clip
from .sessions import SessionGate
from .upstreams import IdentityLimitError, OneCConnection, UpstreamRegistry

logger = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", bound=types.Result)
MASK_IN_THREAD_BYTES = 32 * 1024

INSTRUCTIONS = (
    "Tools, resources and prompts of a 1C:Enterprise base, served through onec-mcp-proxy. "
    "Tool errors come back as results with isError set; read their text."
)


class _ProxyServer(Server[Any]):
    """A low-level Server whose advertised capabilities follow what the proxy can really do."""

    def __init__(self, proxy: MCPProxy, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proxy = proxy

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
        if capabilities.resources is not None:
            resources = capabilities.resources.model_copy(update={"subscribe": False})
            update["resources"] = resources if self._proxy.catalog.supports("resources") else None
        if not self._proxy.catalog.supports("prompts"):
            update["prompts"] = None
        return capabilities.model_copy(update=update)


class MCPProxy:
    """The 1C catalog and the local tools behind one MCP server."""

    def __init__(
        self,
        settings: Settings,
        client: OneCClient,
        extras: Sequence[Extra] = (),
        *,
        policies: PolicyResolver | None = None,
    ) -> None:
        self.settings = settings
        self.extras = list(extras)
        self.registry = ToolRegistry([tool for extra in self.extras for tool in extra.tools])
        self.policies = policies or SamePolicyForAll(Policy(Rules.from_settings(settings)))
        self.masker = Masker.from_settings(settings)
        self.audit = AuditLog.from_settings(settings)
        self.notifier = ListChangeNotifier()
        # 1C polling pauses while no client could hear list_changed and nobody asks for a TTL. Right
        # for stdio too: its one client is counted (handshake session or listen stream) or, if it
        # does neither, would never hear list_changed anyway, and its next request resumes polling.
        self.upstreams = UpstreamRegistry(
            settings,
            client,
            on_change=self._catalog_changed,
            connected_clients=lambda: self.notifier.session_count + self.notifier.listen_count,
        )
        self.started_at = time.monotonic()
        # What clients hold open, across front-ends; the HTTP front-end adds its transports.
        self.sessions = SessionGate(settings.max_sessions)
        self.sessions.add_counter("listen", lambda: self.notifier.listen_count)
        self._shadowed: set[str] = set()
        self._policy_warnings: set[str] = set()
        self.server = self._build_server()

    @property
    def client(self) -> OneCClient:
        """The service account's 1C client (health, check, the shared catalog)."""
        return self.upstreams.service.client

    @property
    def catalog(self) -> Catalog:
        """The service account's catalog: what `check`, `/health` and capabilities report."""
        return self.upstreams.service.catalog

    # --- lifecycle ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MCPProxy]:
        """Refresh the catalog in the background; close 1C and upstream clients on exit."""
        try:
            async with self.notifier.running(), self.upstreams.running():
                yield self
        finally:
            self.notifier.close()
            self.audit.close()
            for extra in self.extras:
                await extra.aclose()

    def initialization_options(self) -> InitializationOptions:
        return self.server.create_initialization_options()

    # --- handlers -----------------------------------------------------------------------

    def _build_server(self) -> Server[Any]:
        server = _ProxyServer(
            self,
            self.settings.server_name,
            version=__version__,
            title="1C:Enterprise MCP proxy",
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_read_resource=self._read_resource,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_subscriptions_listen=self._listen,
        )
        server.add_notification_handler("notifications/initialized", types.NotificationParams, self._initialized)
        return server

    async def _initialized(self, ctx: ServerRequestContext[Any], params: types.NotificationParams) -> None:
        # A session hears about the catalog it is served: its identity's own, or the shared one.
        self.notifier.add_session(ctx.session, self.upstreams.audience_of(caller_of(ctx).identity))

    async def _listen(
        self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        if not self.sessions.has_room():  # a listen stream is held open like a session
            raise MCPError(types.INTERNAL_ERROR, self.sessions.refusal())
        return await self.notifier.listen_handler(ctx, params)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams
    ) -> types.ListToolsResult:
        caller = caller_of(ctx)
        async with self._connection(caller) as onec:
            onec_tools = await onec.catalog.items("tools")
        self._note_shadowed({tool.name for tool in onec_tools})
        tools = [tool for tool in onec_tools if tool.name not in self.registry]
        policy = self.policies.policy_for(caller)
        return types.ListToolsResult(tools=policy.visible_tools([*tools, *self.registry.definitions()]))

    async def _list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams
    ) -> types.ListResourcesResult:
        caller = caller_of(ctx)
        async with self._connection(caller) as onec:
            resources = await onec.catalog.items("resources")
        return types.ListResourcesResult(resources=self.policies.policy_for(caller).visible_resources(resources))

    async def _list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams
    ) -> types.ListPromptsResult:
        caller = caller_of(ctx)
        async with self._connection(caller) as onec:
            prompts = await onec.catalog.items("prompts")
        return types.ListPromptsResult(prompts=self.policies.policy_for(caller).visible_prompts(prompts))

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, arguments = params.name, params.arguments or {}
        caller = caller_of(ctx)
        with self._record(caller, "tools/call", name, arguments) as record:
            async with self._connection(caller) as onec:
                definition, exists = await self._tool_definition(name, onec)
                _enforce(record, "tools", name, self.policies.policy_for(caller).check_tool(name, definition))
                if not exists:
                    raise MCPError(
                        types.INVALID_PARAMS,
                        f"Unknown tool: '{clip(name)}' (neither 1C nor the proxy has a tool by that name)",
                    )
                result = await self._run_tool(name, arguments, onec)
            result = await self._masked(self.masker.mask_call_result, result)
            record.result(result)
            return result

    @contextlib.asynccontextmanager
    async def _connection(self, caller: Caller) -> AsyncIterator[OneCConnection]:
        """The 1C connection for the caller's identity, held for the request; no room for another
        person is a JSON-RPC error."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                onec = await stack.enter_async_context(self.upstreams.connection(caller.identity))
            except IdentityLimitError as exc:
                raise MCPError(types.INTERNAL_ERROR, str(exc)) from exc
            yield onec

    async def _tool_definition(self, name: str, onec: OneCConnection) -> tuple[types.Tool | None, bool]:
        """(definition, exists): a local tool first; a 1C tool may exist before its definition is known."""
        local = self.registry.get(name)
        if local is not None:
            return local.definition, True
        exists = await onec.catalog.has_tool(name)
        definition = next((tool for tool in onec.catalog.section("tools").items if tool.name == name), None)
        return definition, exists

    async def _run_tool(self, name: str, arguments: dict[str, Any], onec: OneCConnection) -> types.CallToolResult:
        if name in self.registry:
            return await self.registry.call(name, arguments)
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
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller = caller_of(ctx)
        with self._record(caller, "resources/read", params.uri) as record:
            _enforce(record, "resources", params.uri, self.policies.policy_for(caller).check("resources", params.uri))
            async with self._connection(caller) as onec:
                try:
                    result = to_read_result(await onec.read_resource(params.uri))
                except OneCError as exc:
                    raise self._protocol_error(f"Cannot read the 1C resource '{clip(params.uri)}'", exc) from exc
            result = await self._masked(self.masker.mask_read_result, result)
            record.result(result)
            return result

    async def _get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        caller = caller_of(ctx)
        with self._record(caller, "prompts/get", params.name, params.arguments) as record:
            _enforce(record, "prompts", params.name, self.policies.policy_for(caller).check("prompts", params.name))
            async with self._connection(caller) as onec:
                try:
                    result = to_prompt_result(await onec.get_prompt(params.name, params.arguments))
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

    def policy_report(self) -> dict[str, Any]:
        """What the settings' policy hides of the current catalog, and patterns that match nothing."""
        tools = [*self.catalog.section("tools").items, *self.registry.definitions()]
        sections = self.catalog.section("resources").items, self.catalog.section("prompts").items
        return self.policies.default.report(tools, *sections)

    # --- catalog changes and health -----------------------------------------------------

    async def _catalog_changed(self, kinds: set[Kind], audience: str | None = None) -> None:
        """A catalog changed: everybody's (audience None), or one person's own (their connection key)."""
        if audience is not None:
            logger.debug("a personal 1C catalog changed (%s); notifying its sessions", ", ".join(sorted(kinds)))
            await self.notifier.notify(kinds, audience)
            return
        logger.info("1C catalog changed (%s); notifying clients", ", ".join(sorted(kinds)))
        warnings = set(self.policy_report()["warnings"])
        for warning in sorted(warnings - self._policy_warnings):
            logger.warning("policy: %s (a typo?)", warning)
        self._policy_warnings = warnings
        await self.notifier.notify(kinds)

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
