"""The cached 1C catalog: tools, resources and prompts, refreshed in the background.

List requests are answered from memory; 1C is asked only by the refresher, every
`MCP_CATALOG_TTL` seconds while 1C answers and with a short backoff while it does not, so the
proxy starts with 1C down and recovers by itself. Each kind is fetched and kept on its own: a
failing `prompts/list` (a known bug of the reference extension) leaves tools and resources
alone, and a failure keeps the last known items instead of emptying the list.

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

from .errors import OneCConnectionError, OneCError, OneCRpcError
from .onec_client import Discovery, OneCClient
from .onec_mapping import to_items, to_prompt, to_resource, to_tool

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
# A list request right after start-up waits this long for the first fetch, then answers without it
# (the clients hear list_changed when the catalog arrives).
FIRST_FETCH_WAIT = 10.0


@dataclass
class Section:
    """What the proxy knows about one kind of 1C item."""

    items: list[Any] = field(default_factory=list)
    supported: bool | None = None  # None: not known yet; False: 1C said -32601 or the manifest omits it
    loaded_at: float | None = None  # monotonic time of the last successful fetch
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


def _fingerprint(raw_items: list[Any]) -> str:
    encoded = json.dumps(raw_items, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


class Catalog:
    def __init__(self, client: OneCClient, *, ttl: float, on_change: ChangeCallback | None = None) -> None:
        self._client = client
        self._ttl = ttl
        self._on_change = on_change
        self._sections: dict[Kind, Section] = {kind: Section() for kind in KINDS}
        self._lock = asyncio.Lock()
        self._first_attempt = asyncio.Event()
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
        """The cached items; waits (briefly) only for the very first fetch after start-up."""
        await self._first_fetch()
        return list(self._sections[kind].items)

    async def _first_fetch(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), FIRST_FETCH_WAIT)

    async def has_tool(self, name: str) -> bool:
        """Whether 1C is known to have `name`, refreshing once if it is not (a tool may be new).

        While no tool list was ever loaded (1C down since start-up) the answer is True, so the
        call goes to 1C and the user gets 1C's own answer or the connection error.
        """
        await self._first_fetch()
        tools = self._sections["tools"]
        if tools.loaded_at is None or any(tool.name == name for tool in tools.items):
            return True
        if time.monotonic() - tools.loaded_at >= MISS_REFRESH_INTERVAL:
            await self.refresh()
        return any(tool.name == name for tool in tools.items)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "discovery": self.discovery.source if self.discovery else None,
            "ttl_s": self._ttl,
            "last_error": self.last_error,
            **{kind: section.status(now) for kind, section in self._sections.items()},
        }

    # --- refreshing ---------------------------------------------------------------------

    async def refresh(self) -> set[Kind]:
        """Fetch every kind from 1C now. Returns the kinds whose content changed; never raises OneCError."""
        async with self._lock:
            changed = await self._refresh_locked()
        if changed and self._on_change is not None:
            await self._on_change(changed)
        return changed

    async def _refresh_locked(self) -> set[Kind]:
        changed: set[Kind] = set()
        try:
            if self.discovery is None:
                self.discovery = await self._client.discover()
                self._apply_manifest(self.discovery)
            for kind in KINDS:
                if await self._refresh_kind(kind):
                    changed.add(kind)
        except OneCError as exc:
            # 1C as a whole is unreachable or refuses us: keep every last known list.
            self._failures += 1
            self.discovery = None if isinstance(exc, OneCConnectionError) else self.discovery
            if self.last_error != str(exc):
                logger.warning("1C catalog refresh failed, serving the last known catalog: %s", exc)
            self.last_error = str(exc)
            for section in self._sections.values():
                section.error = str(exc)
        else:
            if self.last_error is not None:
                logger.info("1C catalog refreshed again after: %s", self.last_error)
            self._failures = 0
            self.last_error = None
        finally:
            self._first_attempt.set()
        return changed

    def _apply_manifest(self, discovery: Discovery) -> None:
        if discovery.capabilities is None:
            return
        for kind in KINDS:
            if not discovery.capabilities.get(kind, False):
                self._sections[kind].supported = False

    async def _refresh_kind(self, kind: Kind) -> bool:
        section = self._sections[kind]
        if section.supported is False:
            return False
        lister = {
            "tools": self._client.list_tools,
            "resources": self._client.list_resources,
            "prompts": self._client.list_prompts,
        }[kind]
        try:
            raw_items = await lister()
        except OneCRpcError as exc:
            if exc.method_not_found:
                logger.info("1C does not serve %s (%s)", kind, exc)
                section.supported, section.error = False, None
                return self._replace(section, [], [], _fingerprint([]))
            # 1C answered, but this list failed: the other kinds go on, the last list stays.
            if section.error != str(exc):
                logger.warning("1C %s/list failed, keeping the last known %d: %s", kind, len(section.items), exc)
            section.error = str(exc)
            return False
        section.supported, section.error = True, None
        fingerprint = _fingerprint(raw_items)
        if fingerprint == section.fingerprint:
            section.loaded_at = time.monotonic()
            return False
        items, skipped = to_items(raw_items, _CONVERTERS[kind], kind.rstrip("s"))
        return self._replace(section, items, skipped, fingerprint)

    @staticmethod
    def _replace(section: Section, items: list[Any], skipped: list[str], fingerprint: str) -> bool:
        changed = fingerprint != section.fingerprint and (section.fingerprint != "" or bool(items))
        section.items, section.skipped, section.fingerprint = items, skipped, fingerprint
        section.loaded_at = time.monotonic()
        return changed

    def _next_delay(self) -> float:
        if self._failures == 0:
            return self._ttl
        return min(2.0 ** (self._failures - 1), MAX_RETRY_DELAY, self._ttl)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the loop must survive anything, or the catalog freezes silently
                logger.exception("unexpected error while refreshing the 1C catalog")
            await asyncio.sleep(self._next_delay())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Catalog]:
        """Run the background refresher for the duration of the block.

        Enters once the first fetch is done (or FIRST_FETCH_WAIT has passed), so clients that
        connect right after start-up see the catalog instead of a list_changed a moment later.
        """
        task = asyncio.create_task(self._refresh_loop(), name="onec-catalog-refresh")
        try:
            await self._first_fetch()
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
