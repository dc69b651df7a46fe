"""Vehicle repair history by VIN: `warranty_days`, `warranty_history`, `maintenance_history`,
`vehicle_repairs_history`, served from the dealer network's repairs API.

    extra = create(settings)      # no tools unless MCP_REPAIRS_API_URL is set
    registry = ToolRegistry(extra.tools)
"""

from __future__ import annotations

from ...config import Settings
from .client import RepairsApiClient
from .tools import TOOL_NAMES, RepairsExtra
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


def create(settings: Settings) -> RepairsExtra:
    """The `repairs` extra for these settings (its tools are empty when the API URL is not set)."""
    return RepairsExtra(settings)
