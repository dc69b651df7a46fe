"""Vehicle repair history by VIN: `warranty_days`, `warranty_history`, `maintenance_history`,
`vehicle_repairs_history`, served from the dealer network's repairs API.

    extra = create(settings)      # no tools unless MCP_REPAIRS_API_URL is set
    registry = ToolRegistry(extra.tools)

Importing the package costs nothing: the names below are imported from their modules when first
used, and a proxy without MCP_REPAIRS_API_URL never loads the tools' models or HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy_exports import lazy_exports

if TYPE_CHECKING:
    from ...config import Settings
    from .client import RepairsApiClient
    from .extra import RepairsExtra
    from .tools import TOOL_NAMES
    from .vin import InvalidVinError, normalize_vin, validate_vin

__all__ = [
    "TOOL_NAMES",
    "InvalidVinError",
    "RepairsApiClient",
    "RepairsExtra",
    "create",
    "normalize_vin",
    "validate_vin",
]

_MODULES = {
    "TOOL_NAMES": "tools",
    "InvalidVinError": "vin",
    "RepairsApiClient": "client",
    "RepairsExtra": "extra",
    "normalize_vin": "vin",
    "validate_vin": "vin",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)


def create(settings: Settings) -> RepairsExtra:
    """The `repairs` extra for these settings (its tools are empty when the API URL is not set)."""
    from .extra import RepairsExtra

    return RepairsExtra(settings)
