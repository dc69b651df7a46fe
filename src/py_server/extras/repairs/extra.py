"""The `repairs` extra: the four repair-history tools, or none when the API is not configured.

    extra = RepairsExtra(settings)                    # tools only when MCP_REPAIRS_API_URL is set
    result = await extra.tools[0].handler({"vin": "XWEG3417BN0009095"})
    await extra.aclose()

Cheap to make when the API is not configured: the tools' models, texts and HTTP client are
imported (`tools`, `client`) and built only when MCP_REPAIRS_API_URL is set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...errors import UpstreamError
from ...local_tools import ExtraStatus, LocalTool

if TYPE_CHECKING:
    from ...config import Settings
    from .client import RepairsApiClient

logger = logging.getLogger(__name__)

_NOT_CONFIGURED = "MCP_REPAIRS_API_URL is not set: the repair-history tools are off"
PROBE_TIMEOUT = 5.0  # /health must stay snappy even when the API's own timeout is 30 s


class RepairsExtra:
    """The `repairs` extra: four tools over the repairs API, or none when it is not configured.

    Args:
        settings: reads `repairs_api_url`, `repairs_api_key`, `repairs_api_timeout`.
        client: an already built client (tests, demo); default: `RepairsApiClient.from_settings`.
    """

    name = "repairs"

    def __init__(self, settings: Settings, *, client: RepairsApiClient | None = None) -> None:
        self._client: RepairsApiClient | None = None
        self._tools: tuple[LocalTool, ...] = ()
        self._keyless = settings.repairs_api_key is None or not settings.repairs_api_key.get_secret_value()
        if settings.repairs_api_url is None:
            return
        from .client import RepairsApiClient
        from .tools import SPECS, build_tool

        if self._keyless:
            logger.warning("MCP_REPAIRS_API_KEY is not set: calling the repairs API without authorization")
        self._client = client or RepairsApiClient.from_settings(settings)
        self._tools = tuple(build_tool(spec, self._client) for spec in SPECS)

    @property
    def tools(self) -> Sequence[LocalTool]:
        return self._tools

    async def status(self) -> ExtraStatus:
        """Probe `/api/dnm/<dummy VIN>`: any answer but 401/403/5xx means reachable. Never raises."""
        names = [tool.name for tool in self._tools]
        if self._client is None:
            return ExtraStatus(self.name, "not configured", _NOT_CONFIGURED, names)
        from .client import PROBE_VIN

        try:
            await self._client.get_json(f"/api/dnm/{PROBE_VIN}", time_limit=PROBE_TIMEOUT)
        except UpstreamError as exc:
            answered = exc.error_type in ("http_error", "invalid_response")
            if answered and (exc.http_status or 0) < 500:
                # The API answered (e.g. 422 for our dummy VIN): up, and the key was accepted.
                return ExtraStatus(self.name, "reachable", self._reachable_detail(self._client), names)
            return ExtraStatus(self.name, "failing", str(exc), names)
        except Exception as exc:  # status() is a health probe: it reports, it never raises
            logger.exception("repairs API probe failed")
            return ExtraStatus(self.name, "failing", f"probe failed: {type(exc).__name__}", names)
        return ExtraStatus(self.name, "reachable", self._reachable_detail(self._client), names)

    def _reachable_detail(self, client: RepairsApiClient) -> str:
        return client.base_url + (" (no MCP_REPAIRS_API_KEY)" if self._keyless else "")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
