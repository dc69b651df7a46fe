"""`onec-mcp-proxy check`: connect with the current settings and say what works and what does not.

exit_code = await run_check(settings, out=sys.stdout)
"""

from __future__ import annotations

from typing import TextIO

from .config import Settings, require_onec_url
from .errors import OneCAuthError, OneCError, OneCRedirectError, OneCRpcError, OneCTimeoutError
from .extras import create_extras
from .onec_client import OneCClient

OK, FAIL, INFO = "[ok]  ", "[FAIL]", "[--]  "


def hint(exc: OneCError) -> str:
    """What to try next, for the failures people actually hit."""
    if isinstance(exc, OneCRedirectError):
        return "The publication name in MCP_ONEC_URL is case-sensitive; copy it exactly from the web server."
    if isinstance(exc, OneCAuthError):
        return "Check MCP_ONEC_USERNAME / MCP_ONEC_PASSWORD and the user's right to the HTTP service."
    if isinstance(exc, OneCTimeoutError):
        return "1C is slow or stuck; raise MCP_ONEC_TIMEOUT or check the 1C server load."
    if isinstance(exc, OneCRpcError):
        return "The HTTP service answered, but the 1C code failed; see the 1C event log."
    return "Check MCP_ONEC_URL, MCP_ONEC_SERVICE_ROOT and that the HTTP service is published."


async def run_check(settings: Settings, *, out: TextIO) -> int:
    """Print a diagnosis; return 0 when 1C answers, 1 otherwise."""
    url = require_onec_url(settings)
    print(f"1C HTTP service: {url}  (user: {settings.onec_username or '-'})", file=out)
    failed = False
    async with OneCClient.from_settings(settings) as client:
        try:
            discovery = await client.discover()
            rtt = await client.ping()
        except OneCError as exc:
            print(f"{FAIL} cannot talk to 1C: {exc}", file=out)
            print(f"       hint: {hint(exc)}", file=out)
            return 1
        caps = "" if discovery.capabilities is None else f" capabilities: {discovery.capabilities}"
        print(f"{OK} discovery via {discovery.source}{caps}; round trip {rtt * 1000:.0f} ms", file=out)
        for kind, lister in (
            ("tools", client.list_tools),
            ("resources", client.list_resources),
            ("prompts", client.list_prompts),
        ):
            try:
                items = await lister()
            except OneCRpcError as exc:
                if exc.method_not_found:
                    print(f"{INFO} {kind}: not served by this 1C backend", file=out)
                    continue
                failed = True
                print(f"{FAIL} {kind}/list: {exc}\n       hint: {hint(exc)}", file=out)
            except OneCError as exc:
                failed = True
                print(f"{FAIL} {kind}/list: {exc}\n       hint: {hint(exc)}", file=out)
            else:
                names = ", ".join(str(item.get("name", "?")) for item in items[:8])
                more = ", ..." if len(items) > 8 else ""
                print(f"{OK} {kind}: {len(items)}" + (f" ({names}{more})" if items else ""), file=out)
    for extra in create_extras(settings):
        status = await extra.status()
        await extra.aclose()
        mark = FAIL if status.state == "failing" else OK if status.state == "reachable" else INFO
        detail = f": {status.detail}" if status.detail else ""
        print(f"{mark} extra {status.name}: {status.state}{detail}", file=out)
    return 1 if failed else 0
