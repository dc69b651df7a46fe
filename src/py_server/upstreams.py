"""The 1C connections: one per identity, each with its own pool, cap and catalog.

An `Upstream` is one `OneCClient` (its pooled connections, its cookies and so its 1C session, its
concurrency cap) and the `Catalog` it serves. The `UpstreamRegistry` keeps them keyed by the
identity's connection key: `service` for the account in the settings, or the hash of a person's
own 1C login (`MCP_ONEC_AUTH=passthrough`). A handler asks for the connection of its caller and
gets a `OneCConnection`: the upstream plus what this caller adds to each call (the signed-in
user's name in `MCP_ONEC_USER_HEADER`).

* Bounded: at most `MCP_ONEC_MAX_IDENTITIES` personal connections; the least recently used idle
  one is closed to make room, and any idle for `MCP_ONEC_IDENTITY_IDLE` seconds is closed.
* Fair to 1C: every personal client is capped at `MCP_ONEC_IDENTITY_CONCURRENCY` and all of them
  share one `TotalSlots` of `MCP_ONEC_MAX_CONCURRENCY`: what 1C runs in total.
* A login is verified against 1C once, when its connection is made (`verify`), so a wrong password
  is refused before an MCP session exists; a 401 later marks the client, and the next request
  makes a new connection and verifies it again.
* Catalog: with `MCP_ONEC_CATALOG=per_identity` each personal connection reads its own (1C may show
  people different tools); with `shared` they all serve the service account's.

    registry = UpstreamRegistry(settings, service_client, on_change=notify, connected_clients=count)
    async with registry.running(), registry.connection(identity) as onec:
        tools = await onec.catalog.items("tools")
        result = await onec.call_tool("get_metadata", {})
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .catalog import Catalog, Kind
from .config import Settings
from .errors import OneCAuthError, OneCBusyError, OneCHTTPError
from .identity import SERVICE_KEY, Identity, OneCLogin
from .onec_client import ExchangeObserver, OneCClient, TotalSlots

__all__ = ["IdentityLimitError", "OneCConnection", "Upstream", "UpstreamRegistry"]

logger = logging.getLogger(__name__)

VERIFY_TIMEOUT = 10.0  # seconds a login check may take; it runs outside the concurrency slots
# A login 1C refused is refused again without asking 1C for this long: a client retrying a wrong
# password in a loop, or guessing, does not reach 1C more than once per login per this many seconds.
REFUSED_LOGIN_MEMORY = 10.0
MAX_REFUSED_REMEMBERED = 1000
ClientFactory = Callable[[OneCLogin], OneCClient]
# (changed kinds, whose catalog: a connection key, or None for the catalog everybody is served)
AudienceChangeCallback = Callable[[set[Kind], "str | None"], Awaitable[None]]


class IdentityLimitError(OneCBusyError):
    """Every one of MCP_ONEC_MAX_IDENTITIES personal connections is busy: no room for another person."""


@dataclass(eq=False)
class Upstream:
    """One 1C identity's client and the catalog it serves."""

    key: str
    client: OneCClient
    catalog: Catalog
    owns_catalog: bool = True
    verified: bool = False
    leases: int = 0  # requests holding this connection: it is not closed under them
    last_used: float = field(default_factory=time.monotonic)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _unleased: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack, repr=False)
    _started: bool = False

    @property
    def busy(self) -> bool:
        return self.leases > 0 or self.client.in_flight > 0 or self.client.queued > 0

    async def start(self) -> None:
        """Run the catalog's refresher (once); waits for its first fetch like the service catalog."""
        if self._started:
            return
        async with self._lock:
            if not self._started and self.owns_catalog:
                await self._stack.enter_async_context(self.catalog.running())
            self._started = True

    def lease(self) -> None:
        self.leases += 1
        self._unleased.clear()

    def release(self) -> None:
        self.leases -= 1
        if self.leases == 0:
            self._unleased.set()

    async def aclose(self, *, grace: float = 0.0) -> None:
        """Close the catalog and the client; first wait up to `grace` seconds for the requests using it."""
        if self.leases and grace > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._unleased.wait()
        await self._stack.aclose()
        await self.client.aclose()


@dataclass(frozen=True)
class OneCConnection:
    """The 1C connection for one caller: its upstream, and the headers its calls carry."""

    upstream: Upstream
    headers: Mapping[str, str] | None = None

    @property
    def catalog(self) -> Catalog:
        return self.upstream.catalog

    @property
    def client(self) -> OneCClient:
        return self.upstream.client

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self.upstream.client.call_tool(name, arguments, headers=self.headers)

    async def read_resource(self, uri: str) -> dict[str, Any]:
        return await self.upstream.client.read_resource(uri, headers=self.headers)

    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> dict[str, Any]:
        return await self.upstream.client.get_prompt(name, arguments, headers=self.headers)


class UpstreamRegistry:
    def __init__(
        self,
        settings: Settings,
        service_client: OneCClient,
        *,
        on_change: AudienceChangeCallback | None = None,
        connected_clients: Callable[[], int] | None = None,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._on_change = on_change
        self._connected_clients = connected_clients
        self._clock = clock
        # Every personal client shares one total with the service client (wiring gives it one in
        # passthrough mode), so the cap bounds what 1C runs whoever calls.
        self.total_slots = service_client.total_slots or TotalSlots(settings.onec_max_concurrency)
        self._client_factory = client_factory or (
            lambda login: OneCClient.from_settings(settings, login=login, total_slots=self.total_slots)
        )
        # The service catalog runs for as long as the registry does (`running`), not per request.
        service_catalog = self._new_catalog(service_client, None, announce_first_fetch=True)
        self.service = Upstream(SERVICE_KEY, service_client, service_catalog, verified=True, _started=True)
        self._personal: OrderedDict[str, Upstream] = OrderedDict()  # least recently used first
        self._closing: set[asyncio.Task[None]] = set()
        self._dropped: set[Upstream] = set()  # forgotten, and closing once their requests are done
        self._pending: dict[str, Upstream] = {}  # logins being checked: not kept until 1C accepts them
        # Login checks run outside the 1C slots (they must not queue behind tool calls), so they have
        # their own bound; refused logins are remembered briefly, by hash.
        self._checks = asyncio.Semaphore(settings.onec_max_concurrency)
        self._refused: OrderedDict[str, tuple[float, OneCAuthError]] = OrderedDict()
        self._header = settings.onec_user_header
        self._observer: ExchangeObserver | None = None

    def observe(self, observer: ExchangeObserver | None) -> None:
        """Tell `observer` of every exchange with 1C, on every client of this registry (metrics)."""
        self._observer = observer
        for upstream in (self.service, *self._personal.values(), *self._pending.values()):
            upstream.client.observer = observer

    def knows_tool(self, name: str) -> bool:
        """Whether a catalog of this registry lists the tool (bounded metric labels)."""
        catalogs = {id(u.catalog): u.catalog for u in (self.service, *self._personal.values())}
        return any(tool.name == name for catalog in catalogs.values() for tool in catalog.section("tools").items)

    @property
    def in_flight(self) -> int:
        """Calls running in 1C through any of this registry's clients."""
        return sum(upstream.client.in_flight for upstream in (self.service, *self._personal.values()))

    @property
    def queued(self) -> int:
        """Calls waiting for a slot on any of this registry's clients."""
        return sum(upstream.client.queued for upstream in (self.service, *self._personal.values()))

    # --- lifecycle ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[UpstreamRegistry]:
        """Refresh the service catalog and close idle personal connections; close every client on exit."""
        reaper = asyncio.create_task(self._close_idle_loop(), name="onec-identity-reaper")
        try:
            if self._runs_service_catalog:
                async with self.service.catalog.running():
                    yield self
            else:
                yield self
        finally:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
            # At shutdown nobody waits for requests to finish: every connection closes now.
            closing, dropped = list(self._closing), list(self._dropped)
            for task in closing:
                task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)
            personal = [*self._personal.values(), *self._pending.values(), *dropped]
            self._pending.clear()
            self._personal.clear()
            await asyncio.gather(*(upstream.aclose() for upstream in personal), return_exceptions=True)
            await self.service.client.aclose()

    @property
    def _runs_service_catalog(self) -> bool:
        # In passthrough mode with personal catalogs, the service account serves no catalog; without
        # its own login it could not read one either.
        settings = self._settings
        return not (
            settings.onec_auth == "passthrough"
            and settings.onec_catalog == "per_identity"
            and not settings.onec_username
        )

    # --- per request --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(self, identity: Identity) -> AsyncIterator[OneCConnection]:
        """The 1C connection of `identity` for one request, made (and its catalog started) on first
        use; neither eviction nor the idle reaper closes it while the block runs.

        Raises:
            IdentityLimitError: MCP_ONEC_MAX_IDENTITIES personal connections are all busy.
        """
        upstream = self._upstream(identity)
        upstream.lease()
        try:
            await upstream.start()
            headers = None
            if identity.on_behalf_of:
                # Header values are ASCII: a Cyrillic name goes percent-encoded UTF-8.
                headers = {self._header: quote(identity.on_behalf_of, safe="@._-+ ")}
            yield OneCConnection(upstream, headers)
        finally:
            upstream.release()
            upstream.last_used = self._clock()

    async def verify(self, identity: Identity) -> None:
        """Check a person's 1C login once, before a session is made with it (no-op for the service account).

        Raises:
            OneCAuthError: 1C refused the login (401) or the user may not use the HTTP service (403).
            OneCConnectionError: 1C did not answer, so the login could not be checked.
            IdentityLimitError: no room for another personal connection.
        """
        if identity.onec_login is None:
            return
        key = identity.connection_key
        refused = self._refused.get(key)
        if refused is not None and self._clock() - refused[0] < REFUSED_LOGIN_MEMORY:
            raise refused[1]  # the same wrong login again: 1C is not asked for a while
        upstream = self._personal.get(key)
        if upstream is not None and upstream.client.login_refused:
            self._drop(upstream)
            upstream = None
        if upstream is not None:
            upstream.last_used = self._clock()
            self._personal.move_to_end(key)
            if upstream.verified:
                return
        else:
            # A login not checked yet takes no room: nobody's connection is evicted for a wrong password.
            # But without room at all, 1C is not asked.
            self._room_check()
            upstream = self._pending.get(key)
            if upstream is None:
                upstream = self._pending[key] = self._make(key, identity.onec_login)
        upstream.lease()  # not evicted while 1C is asked
        try:
            async with self._checks, upstream._lock:
                if upstream.verified:
                    return
                try:
                    await upstream.client.probe(min(VERIFY_TIMEOUT, self._settings.onec_timeout))
                except OneCAuthError as exc:
                    self._drop(upstream)
                    self._remember_refusal(key, exc)
                    raise
                except OneCHTTPError as exc:
                    if exc.status_code != 404:  # a 404 of the service comes after 1C's login check
                        self._drop(upstream)
                        raise
                if self._pending.get(key) is upstream:
                    del self._pending[key]
                    try:
                        self._register(upstream)
                    except IdentityLimitError:
                        self._drop(upstream)
                        raise
                upstream.verified = True
        finally:
            upstream.release()
        logger.info("1C login of %r verified; %d personal 1C connections open", identity.onec_user, self.size)

    def _remember_refusal(self, key: str, exc: OneCAuthError) -> None:
        self._refused[key] = (self._clock(), exc)
        self._refused.move_to_end(key)
        while len(self._refused) > MAX_REFUSED_REMEMBERED:
            self._refused.popitem(last=False)

    def audience_of(self, identity: Identity) -> str:
        """Whose catalog changes `identity`'s sessions hear: its own catalog's key, or the shared one's."""
        personal = identity.onec_login is not None and self._settings.onec_catalog == "per_identity"
        return identity.connection_key if personal else SERVICE_KEY

    def _upstream(self, identity: Identity) -> Upstream:
        """Raises OneCAuthError for a login 1C refused within REFUSED_LOGIN_MEMORY: no new connection
        (and no new failed login in 1C) for it until then."""
        key = identity.connection_key
        if key == SERVICE_KEY:
            return self.service
        refused = self._refused.get(key)
        if refused is not None and self._clock() - refused[0] < REFUSED_LOGIN_MEMORY:
            raise refused[1]
        upstream = self._personal.get(key)
        if upstream is not None and upstream.client.login_refused:
            # 1C refused the login since: remembered for a while, then a new connection, verified again.
            self._drop(upstream)
            refusal = OneCAuthError(
                f"1C rejected the login for user '{identity.onec_user}' (HTTP 401)", status_code=401
            )
            self._remember_refusal(key, refusal)
            raise refusal
        if upstream is None:
            assert identity.onec_login is not None
            upstream = self._make(key, identity.onec_login)
            self._register(upstream)
        upstream.last_used = self._clock()
        self._personal.move_to_end(key)
        return upstream

    def _make(self, key: str, login: OneCLogin) -> Upstream:
        client = self._client_factory(login)
        client.observer = self._observer
        if self._settings.onec_catalog == "shared":
            return Upstream(key, client, self.service.catalog, owns_catalog=False)
        return Upstream(key, client, self._new_catalog(client, key, announce_first_fetch=False))

    def _register(self, upstream: Upstream) -> None:
        """Keep `upstream`, closing the least recently used idle connection if there is no room."""
        idle = self._room_check()
        if idle is not None:
            self._drop(idle)
        self._personal[upstream.key] = upstream

    def _room_check(self) -> Upstream | None:
        """The connection to close to make room (None: there is room); IdentityLimitError if none may go."""
        if len(self._personal) < self._settings.onec_max_identities:
            return None
        idle = next((kept for kept in self._personal.values() if not kept.busy), None)
        if idle is None:
            raise IdentityLimitError(
                f"The proxy already holds {len(self._personal)} personal 1C connections, all busy "
                "(MCP_ONEC_MAX_IDENTITIES); try again later"
            )
        return idle

    def _drop(self, upstream: Upstream) -> None:
        """Forget `upstream` now; close it in the background once the requests using it are done."""
        if self._personal.get(upstream.key) is upstream:
            del self._personal[upstream.key]
        if self._pending.get(upstream.key) is upstream:
            del self._pending[upstream.key]
        # Requests already holding it (a login 1C refused since) get their answer, not a closed client.
        grace = self._settings.onec_timeout + self._settings.onec_queue_timeout
        self._dropped.add(upstream)
        task = asyncio.get_running_loop().create_task(upstream.aclose(grace=grace), name="onec-identity-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        task.add_done_callback(lambda _: self._dropped.discard(upstream))

    def _new_catalog(self, client: OneCClient, audience: str | None, *, announce_first_fetch: bool) -> Catalog:
        """A catalog whose changes reach the sessions of `audience` (None: everybody's)."""
        on_change = self._on_change

        async def changed(kinds: set[Kind]) -> None:
            if on_change is not None:
                await on_change(kinds, audience)

        return Catalog(
            client,
            ttl=self._settings.catalog_ttl,
            on_change=changed,
            connected_clients=self._connected_clients,
            announce_first_fetch=announce_first_fetch,
        )

    async def _close_idle_loop(self) -> None:
        idle_after = self._settings.onec_identity_idle
        while True:
            await asyncio.sleep(min(idle_after / 4, 30.0))
            self.close_idle()

    def close_idle(self) -> int:
        """Close the personal connections idle for MCP_ONEC_IDENTITY_IDLE; returns how many."""
        deadline = self._clock() - self._settings.onec_identity_idle
        idle = [u for u in self._personal.values() if u.last_used <= deadline and not u.busy]
        for upstream in idle:
            self._drop(upstream)
        if idle:
            logger.info("closed %d idle personal 1C connections; %d open", len(idle), self.size)
        return len(idle)

    # --- what ops see -------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Personal connections open (the service account's is not counted)."""
        return len(self._personal)

    def status(self) -> dict[str, Any]:
        """Counts only: which people are connected is not for /health."""
        return {
            "mode": self._settings.onec_auth,
            "catalog": self._settings.onec_catalog if self._settings.onec_auth == "passthrough" else "shared",
            "personal_connections": self.size,
            "max_identities": self._settings.onec_max_identities,
            "in_flight": self.in_flight,
        }
