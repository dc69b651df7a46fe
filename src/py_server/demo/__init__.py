"""The built-in demo: a 1C base and a repairs API on loopback ports, so no real 1C is needed.

with demo_backends(settings) as demo_settings:
    proxy = build_proxy(demo_settings)
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from pydantic import SecretStr

from ..config import Settings
from .loopback import LoopbackServer
from .onec_emulator import DEMO_RESOURCE_TEMPLATES, EmulatorState, OneCEmulator
from .repairs_api import create_repairs_api

logger = logging.getLogger(__name__)
DEMO_REPAIRS_KEY = "demo-key"
DEMO = "demo"  # where the 1C and repairs settings come from, as `check` says


def demo_emulator_state() -> EmulatorState:
    """The demo 1C base as `--demo` and the `emulator` command serve it: a newer backend, with resource templates."""
    return EmulatorState(resource_templates=list(DEMO_RESOURCE_TEMPLATES))


class _QuietBackends(logging.Filter):
    """Drops what the demo backends' own uvicorn servers say below WARNING.

    They log through the same `uvicorn.error` logger as the proxy's server, so each start-up fact
    ("Started server process", "Application startup complete") would be said once per server, with
    nothing to tell them apart; the demo's own line already says where they listen. The backends run in
    threads of their own; the proxy's server (`http`) runs in the thread that started the demo.
    """

    def __init__(self) -> None:
        super().__init__()
        self._proxy_thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.thread == self._proxy_thread


@contextlib.contextmanager
def _quiet_backends() -> Iterator[None]:
    uvicorn_log = logging.getLogger("uvicorn.error")
    quiet = _QuietBackends()
    uvicorn_log.addFilter(quiet)
    try:
        yield
    finally:
        uvicorn_log.removeFilter(quiet)


@contextlib.contextmanager
def demo_backends(settings: Settings) -> Iterator[Settings]:
    """Start the demo backends; yield settings that point at them; stop them on exit."""
    with (
        _quiet_backends(),  # from before they start until after they stop
        OneCEmulator(demo_emulator_state()) as onec,
        LoopbackServer(create_repairs_api(api_key=DEMO_REPAIRS_KEY)) as repairs,
    ):
        logger.info("demo 1C base at %s, demo repairs API at %s", onec.url, repairs.url)
        yield settings.replaced(
            DEMO,
            onec_url=onec.url,
            onec_username=onec.username,
            onec_password=SecretStr(onec.password),
            repairs_api_url=repairs.url,
            repairs_api_key=SecretStr(DEMO_REPAIRS_KEY),
        )
