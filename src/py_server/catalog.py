"""The cached 1C catalog: tools, resources and prompts, refreshed in the background.

List requests are answered from memory; 1C is asked only by the refresher, every
`MCP_CATALOG_TTL` seconds while 1C answers and with a short backoff while it does not, so the
proxy starts with 1C down and recovers by itself. Each kind is fetched and kept on its own: a
failing `prompts/list` (a known bug of the reference extension) leaves tools and resources
alone, and a failure keeps the last known items instead of emptying the list. When no client is
connected and nothing was asked for a whole TTL, polling pauses until the next request.

Resource templates (`resources/templates/list`) belong to the resources: they are asked for after
`resources/list` succeeds, a change in them is announced as a resources change, and a 1C that
answers -32601 (the reference extension) is not asked again until it is discovered again (after
it was unreachable, or at the next start).

    catalog = Catalog(client, ttl=60, on_change=notify_clients)
    async with catalog.running():
        tools = await catalog.items("tools")
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp import types

from .errors import OneCAuthError, OneCConnectionError, OneCError, OneCRpcError, OneCTimeoutError
from .onec_client import Discovery, OneCClient
from .onec_mapping import to_items, to_prompt, to_resource, to_resource_template, to_tool

logger = logging.getLogger(__name__)

Kind = Literal["tools", "resources", "prompts"]
KINDS: tuple[Kind, ...] = ("tools", "resources", "prompts")
ChangeCallback = Callable[[set[Kind]], Awaitable[None]]

_CONVERTERS: dict[Kind, Callable[[dict[str, Any]], Any]] = {
    "tools": to_tool,
    "resources": to_resource,
    "prompts": to_prompt,
}
# While 1C is down, retry after 1, 2, 4, ... seconds, but never slower than this or the TTL.
MAX_RETRY_DELAY = 30.0
# A tools/call for a name the catalog does not know refreshes it, at most this often.
MISS_REFRESH_INTERVAL = 2.0
# Right after start-up, list requests wait this long in total for the first fetch, then answer
# without it (the clients hear list_changed when the catalog arrives).
FIRST_FETCH_WAIT = 10.0
# Failures that mean 1C as a whole cannot be used: every list is kept as it was. Any other
# OneCError on one list (a JSON-RPC error, an HTML error page, an answer that is not MCP, no free
# concurrency slot) concerns that list only.
_WHOLE_1C_FAILURES = (OneCConnectionError, OneCAuthError)


@dataclass
class Section:
    """What the proxy knows about one kind of 1C item."""

    items: list[Any] = field(default_factory=list)
    supported: bool | None = None  # None: not known yet; False: 1C said -32601 or the manifest omits it
    in_manifest: bool = True  # False: the manifest omits the kind, so it is not asked for
    loaded_at: float | None = None  # clock time of the last successful fetch
    error: str | None = None  # why the last fetch failed; None after a success
    skipped: list[str] = field(default_factory=list)  # invalid items left out, with reasons
    fingerprint: str = ""

    def status(self, now: float) -> dict[str, Any]:
        return {
            "count": len(self.items),
            "supported": self.supported,
            "age_s": None if self.loaded_at is None else round(now - self.loaded_at, 1),
            "error": self.error,
            "skipped": self.skipped,
        }


def _ago(seconds: float) -> str:
    """A duration as people say it in a log line: 42 s, 5 min, 3 h."""
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _fingerprint(raw_items: list[Any]) -> str:
    encoded = json.dumps(raw_items, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


class Catalog:
    """The 1C catalog cache.

    `connected_clients` counts the clients that can hear list_changed; None means "always one"
    (stdio), so polling never pauses. `first_fetch_wait`, `miss_refresh_interval`, `clock` and
    `sleep` exist so tests can run the refresher on a fake clock.
    """

    def __init__(
        self,
        client: OneCClient,
        *,
        ttl: float,
        on_change: ChangeCallback | None = None,
        connected_clients: Callable[[], int] | None = None,
        first_fetch_wait: float = FIRST_FETCH_WAIT,
        miss_refresh_interval: float = MISS_REFRESH_INTERVAL,
        announce_first_fetch: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._on_change = on_change
        self._connected_clients = connected_clients
        self._first_fetch_wait = first_fetch_wait
        self._miss_refresh_interval = miss_refresh_interval
        self._announce_first_fetch = announce_first_fetch
        self._clock = clock
        self._sleep = sleep
        self._sections: dict[Kind, Section] = {kind: Section() for kind in KINDS}
        self._templates = Section()  # resource templates: part of the resources kind, kept apart
        self._first_attempt = asyncio.Event()
        self._startup_deadline: float | None = None  # time.monotonic(): it bounds a real wait
        self._refresh_task: asyncio.Task[set[Kind]] | None = None  # the refresh in progress, shared
        self._refresh_started_at: float | None = None
        self._last_asked = clock()
        self._paused = False
        self._wake = asyncio.Event()  # a request arrived while polling is paused
        self._failures = 0
        self.discovery: Discovery | None = None
        self.last_error: str | None = None

    # --- reading ------------------------------------------------------------------------

    def section(self, kind: Kind) -> Section:
        return self._sections[kind]

    def supports(self, kind: Kind) -> bool:
        """False only when 1C is known not to serve `kind` (capabilities stay honest)."""
        return self._sections[kind].supported is not False

    async def items(self, kind: Kind) -> list[Any]:
        """The cached items. Only the requests of the first seconds after start-up wait for 1C."""
        self._asked()
        await self._startup_wait()
        return list(self._sections[kind].items)

    async def templates(self) -> list[types.ResourceTemplate]:
        """The cached resource templates; empty when 1C has none (or no `resources/templates/list`)."""
        self._asked()
        await self._startup_wait()
        return list(self._templates.items)

    async def has_tool(self, name: str) -> bool:
        """Whether 1C is known to have `name`, refreshing once if it is not (a tool may be new).

        While no tool list was ever loaded (1C down since start-up) the answer is True, so the
        call goes to 1C and the user gets 1C's own answer or the connection error.
        """
        self._asked()
        await self._startup_wait()
        tools = self._sections["tools"]
        if tools.loaded_at is None or any(tool.name == name for tool in tools.items):
            return True
        # Misses share the refresh in progress; otherwise they may start one only every
        # `miss_refresh_interval`, counted from when the last one started, so a tools/list that
        # keeps failing (and never advances `loaded_at`) cannot be hammered by unknown names.
        started = self._refresh_started_at
        if self._refreshing or started is None or self._clock() - started >= self._miss_refresh_interval:
            await self.refresh()
        return any(tool.name == name for tool in tools.items)

    def status(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "discovery": self.discovery.source if self.discovery else None,
            "ttl_s": self._ttl,
            "polling_paused": self._paused,
            "last_error": self.last_error,
            **{kind: section.status(now) for kind, section in self._sections.items()},
            "resource_templates": self._templates.status(now),
        }

    def _asked(self) -> None:
        self._last_asked = self._clock()
        if self._paused:
            self._wake.set()

    async def _startup_wait(self) -> None:
        """Wait for the first fetch, at most `first_fetch_wait` in total, counted from the first waiter.

        Against a 1C that accepts connections and never answers, only the requests of those first
        seconds wait; every later one answers at once from what is known.
        """
        if self._first_attempt.is_set():
            return
        if self._startup_deadline is None:
            self._startup_deadline = time.monotonic() + self._first_fetch_wait
        remaining = self._startup_deadline - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_attempt.wait(), remaining)

    # --- refreshing ---------------------------------------------------------------------

    @property
    def _refreshing(self) -> bool:
        return self._refresh_task is not None and not self._refresh_task.done()

    async def refresh(self) -> set[Kind]:
        """Fetch every kind from 1C now, or join the fetch already in progress.

        Returns the kinds whose content changed; never raises OneCError. The fetch runs in its
        own task, so a caller that is cancelled (a client gave up on its tools/call) does not
        cancel it for the others.
        """
        task = self._refresh_task
        if task is None or task.done():
            self._refresh_started_at = self._clock()
            task = self._refresh_task = asyncio.create_task(self._fetch_and_announce(), name="onec-catalog-fetch")
        return await asyncio.shield(task)

    async def _fetch_and_announce(self) -> set[Kind]:
        first = not self._first_attempt.is_set()
        changed = await self._fetch_all()
        # A catalog made for a request (one person's) is fetched before its first list is answered:
        # nobody has seen the empty one, so its arrival is no change to announce.
        if changed and self._on_change is not None and (self._announce_first_fetch or not first):
            try:
                await self._on_change(changed)
            except Exception:  # the catalog is updated either way; callers must not see this
                logger.exception("notifying clients of the 1C catalog change failed")
        return changed

    async def _fetch_all(self) -> set[Kind]:
        changed: set[Kind] = set()
        try:
            if self.discovery is None:
                self.discovery = await self._client.discover()
                self._apply_manifest(self.discovery)
            for kind in KINDS:
                if await self._refresh_kind(kind):
                    changed.add(kind)
            # To a client templates are resources: resources/list_changed is its cue to list them again.
            if await self._refresh_templates():
                changed.add("resources")
        except OneCError as exc:
            # Discovery failed, or 1C as a whole is unreachable or refuses us: keep every list.
            self._failures += 1
            # A timeout means 1C is slow, not replaced: what discovery found still holds.
            if isinstance(exc, OneCConnectionError) and not isinstance(exc, OneCTimeoutError):
                self.discovery = None
            if self.last_error != str(exc):  # once per reason, until it changes or 1C answers again
                logger.warning("1C catalog refresh failed, %s: %s", self._what_is_served(), exc)
            self.last_error = str(exc)
            for section in self._sections.values():
                section.error = str(exc)
        else:
            if self.last_error is not None:
                logger.info("1C catalog refreshed again after: %s", self.last_error)
            if self._failures and self.discovery is not None:
                # 1C is back: say so even if its lists are as they were, so clients that saw calls fail
                # (or gave up on the lists) look again.
                changed.update(kind for kind in KINDS if self._sections[kind].supported is not False)
            self._failures = 0
            self.last_error = None
        finally:
            self._first_attempt.set()
        return changed

    def _what_is_served(self) -> str:
        """What clients get while 1C fails: the catalog of the last fetch, or nothing of 1C's yet."""
        fetched = [section.loaded_at for section in self._sections.values() if section.loaded_at is not None]
        if not fetched:
            return "and there is no 1C catalog yet (no 1C tools, resources or prompts are served until 1C answers)"
        return f"serving the catalog fetched {_ago(self._clock() - max(fetched))} ago"

    def _apply_manifest(self, discovery: Discovery) -> None:
        # 1C discovered again (a restart, an update of its extension): ask for templates again too.
        if self._templates.supported is False:
            self._templates.supported = None
        for kind in KINDS:
            section = self._sections[kind]
            section.in_manifest = discovery.capabilities is None or bool(discovery.capabilities.get(kind, False))
            if not section.in_manifest:
                section.supported = False

    async def _refresh_kind(self, kind: Kind) -> bool:
        section = self._sections[kind]
        if not section.in_manifest:
            return False
        lister = {
            "tools": self._client.list_tools,
            "resources": self._client.list_resources,
            "prompts": self._client.list_prompts,
        }[kind]
        # A -32601 is asked again at every refresh: the extension in 1C may be updated meanwhile.
        missing = f"1C does not serve {kind} (%s)"
        return await self._fetch_into(section, lister, kind, _CONVERTERS[kind], kind.rstrip("s"), missing)

    async def _refresh_templates(self) -> bool:
        """`resources/templates/list`, while 1C serves resources; True when the templates changed.

        Unlike a kind, a -32601 is remembered (most 1C backends lack the method, and it would be
        asked for at every refresh) until 1C is discovered again.
        """
        section = self._templates
        if self._sections["resources"].supported is not True:
            # No resources, no templates: and templates from before 1C dropped its resources go too.
            return self._replace(section, [], [], _fingerprint([])) if section.items else False
        if section.supported is False:
            return False
        missing = "1C has no resource templates (%s); not asked again until 1C is reconnected"
        lister = self._client.list_resource_templates
        return await self._fetch_into(
            section, lister, "resources/templates", to_resource_template, "resource template", missing
        )

    async def _fetch_into(
        self,
        section: Section,
        lister: Callable[[], Awaitable[list[dict[str, Any]]]],
        what: str,
        convert: Callable[[dict[str, Any]], Any],
        item_label: str,
        missing: str,
    ) -> bool:
        """Ask 1C for one list and put it in `section`; True when it changed. A list 1C lacks
        (-32601) is empty and logged with `missing`; another failure keeps the last list."""
        try:
            raw_items = await lister()
        except _WHOLE_1C_FAILURES:
            raise
        except OneCError as exc:
            if isinstance(exc, OneCRpcError) and exc.method_not_found:
                if section.supported is not False:
                    logger.info(missing, exc)
                section.supported, section.error = False, None
                return self._replace(section, [], [], _fingerprint([]))
            # 1C answered, but this list failed: the other lists go on, the last one stays.
            self._list_failed(f"{what}/list", section, exc)
            return False
        if section.supported is False:
            logger.info("1C serves %s now", what)
        section.supported, section.error = True, None
        fingerprint = _fingerprint(raw_items)
        if fingerprint == section.fingerprint:
            section.loaded_at = self._clock()
            return False
        items, skipped = to_items(raw_items, convert, item_label)
        return self._replace(section, items, skipped, fingerprint)

    def _list_failed(self, method: str, section: Section, exc: OneCError) -> None:
        """A list 1C answered with an error: said once per reason; the list of the last fetch stays."""
        if section.error != str(exc):
            if section.loaded_at is None:
                logger.warning("1C %s failed, and none were fetched before, so none are served: %s", method, exc)
            else:
                kept = f"keeping the {len(section.items)} fetched {_ago(self._clock() - section.loaded_at)} ago"
                logger.warning("1C %s failed, %s: %s", method, kept, exc)
        section.error = str(exc)

    def _replace(self, section: Section, items: list[Any], skipped: list[str], fingerprint: str) -> bool:
        changed = fingerprint != section.fingerprint and (section.fingerprint != "" or bool(items))
        section.items, section.skipped, section.fingerprint = items, skipped, fingerprint
        section.loaded_at = self._clock()
        return changed

    def _next_delay(self) -> float:
        if self._failures == 0:
            return self._ttl
        return min(2.0 ** (self._failures - 1), MAX_RETRY_DELAY, self._ttl)

    # --- polling ------------------------------------------------------------------------

    def _idle(self) -> bool:
        """No client that could hear list_changed, and no request for a whole TTL."""
        if self._connected_clients is None:
            return False
        return self._connected_clients() == 0 and self._clock() - self._last_asked >= self._ttl

    async def _pause_until_asked(self) -> None:
        # Every poll may start a licensed 1C session; nobody would see its result. The next
        # request answers from the last catalog and wakes the refresher.
        logger.info("No MCP client for %g s: 1C catalog polling paused until the next request", self._ttl)
        self._wake.clear()
        self._paused = True
        try:
            await self._wake.wait()
        finally:
            self._paused = False
        logger.info("A request arrived: 1C catalog polling resumed")

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the loop must survive anything, or the catalog freezes silently
                logger.exception("unexpected error while refreshing the 1C catalog")
            await self._sleep(self._next_delay())
            if self._idle():
                await self._pause_until_asked()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Catalog]:
        """Run the background refresher for the duration of the block.

        Enters once the first fetch is done (or `first_fetch_wait` has passed), so clients that
        connect right after start-up see the catalog instead of a list_changed a moment later.
        """
        self._last_asked = self._clock()
        refresher = asyncio.create_task(self._refresh_loop(), name="onec-catalog-refresh")
        try:
            await self._startup_wait()
            yield self
        finally:
            tasks = [task for task in (refresher, self._refresh_task) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
