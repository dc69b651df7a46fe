"""Locally registered extras: tools the proxy serves itself, next to 1C's.

To add a tool group, write a module with `create(settings) -> Extra` (see `local_tools.Extra`)
and name it in EXTRA_MODULES; the proxy core needs no change. A module's package should stay
cheap to import: what it needs only when configured (HTTP clients, an index, big models) is
imported when it is configured or first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from ..local_tools import Extra

EXTRA_MODULES = ("repairs", "compliance")


def create_extras(settings: Settings) -> list[Extra]:
    return [import_module(f"{__name__}.{name}").create(settings) for name in EXTRA_MODULES]
