"""The built-in demo: a 1C base and a repairs API on loopback ports, so no real 1C is needed.

with demo_backends(settings) as demo_settings:
    proxy = build_proxy(demo_settings)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from pydantic import SecretStr

from ..config import Settings
from .loopback import LoopbackServer
from .onec_emulator import OneCEmulator
from .repairs_api import create_repairs_api

logger = logging.getLogger(__name__)
DEMO_REPAIRS_KEY = "demo-key"


@contextlib.contextmanager
def demo_backends(settings: Settings) -> Iterator[Settings]:
    """Start the demo backends; yield settings that point at them; stop them on exit."""
    with OneCEmulator() as onec, LoopbackServer(create_repairs_api(api_key=DEMO_REPAIRS_KEY)) as repairs:
        logger.info("demo 1C base at %s, demo repairs API at %s", onec.url, repairs.url)
        yield settings.model_copy(
            update={
                "onec_url": onec.url,
                "onec_username": onec.username,
                "onec_password": SecretStr(onec.password),
                "repairs_api_url": repairs.url,
                "repairs_api_key": SecretStr(DEMO_REPAIRS_KEY),
            }
        )
