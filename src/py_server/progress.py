"""Progress notifications while a request waits for 1C, for a client that asked for them.

Accounting reports in 1C take minutes, and many clients give up on a silent call. A client that
sends a progress token (`params._meta.progressToken`) and resets its timeout on progress hears
"waiting for 1C, 40 s" every MCP_PROGRESS_INTERVAL seconds until the answer comes. A request
without a token costs nothing here: no task, no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["progress_token_of", "reporting_progress"]

logger = logging.getLogger(__name__)


def progress_token_of(ctx: Any) -> str | int | None:
    """The request's progress token, if it sent one."""
    meta = getattr(ctx, "meta", None) or {}
    token = meta.get("progress_token", meta.get("progressToken"))
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None


@contextlib.asynccontextmanager
async def reporting_progress(ctx: Any, interval: float) -> AsyncIterator[None]:
    """Within the block, a progress notification every `interval` seconds if the request has a
    progress token. `progress` is the seconds waited so far, so it grows as the protocol requires."""
    if progress_token_of(ctx) is None:
        yield
        return
    ticker = asyncio.create_task(_report(ctx, interval, time.monotonic()), name="mcp-progress")
    try:
        yield
    finally:
        # Not awaited: awaiting here could swallow a cancellation of the request itself.
        ticker.cancel()


async def _report(ctx: Any, interval: float, started: float) -> None:
    ticks = 0
    while True:
        ticks += 1
        await asyncio.sleep(max(started + ticks * interval - time.monotonic(), 0))
        waited = time.monotonic() - started
        try:
            await ctx.session.report_progress(round(waited, 1), None, f"waiting for 1C, {waited:.0f} s")
        except Exception as exc:  # a client that left, a closed stream: the call itself goes on
            logger.debug("Could not send a progress notification: %s", exc)
            return
