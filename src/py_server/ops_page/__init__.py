"""The operations page: what `GET /` shows a browser.

One HTML document with its CSS and JS inline, put together once at import from this package's
`index.html`, `page.css` and `page.js`. Its Content-Security-Policy allows exactly those two inline
blocks, by their SHA-256, and nothing else: no other script, no markup from elsewhere, no frames,
no form posts. The page asks the proxy only what any client may ask (`GET /`, `/health`,
`/metrics`, JSON-RPC over `POST /mcp`), with the bearer token typed into it and kept in a JS
variable, so it adds no public path and no power.

    @app.get("/", response_model=None)
    async def index(request: Request) -> dict[str, Any] | Response:
        if wants_html(request):
            return page_response()
        ...
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources

from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE", "page_response", "wants_html"]


def _read(name: str) -> str:
    # The browser hashes the text as parsed, and HTML parsing turns CRLF into LF.
    return resources.files(__name__).joinpath(name).read_text("utf-8").replace("\r\n", "\n")


def _inline(template: str, tag: str, content: str) -> str:
    empty = f"<{tag}></{tag}>"
    if template.count(empty) != 1 or f"</{tag}" in content.lower():
        raise RuntimeError(f"ops page: index.html must hold one empty {empty} and the {tag} no '</{tag}'")
    return template.replace(empty, f"<{tag}>{content}</{tag}>")


def _sha256(content: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(content.encode("utf-8")).digest()).decode("ascii") + "'"


_CSS = _read("page.css")
_JS = _read("page.js")
PAGE = _inline(_inline(_read("index.html"), "style", _CSS), "script", _JS)
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src {_sha256(_JS)}",
        f"style-src {_sha256(_CSS)}",
        "connect-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Vary": "Accept",
}
_BODY = PAGE.encode("utf-8")


def page_response() -> HTMLResponse:
    """The page, with its security headers (a new response each time; the body is built once)."""
    return HTMLResponse(_BODY, headers=_HEADERS)


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0  # a range with a q that is not a number is ignored
            return min(max(q, 0.0), 1.0)
    return 1.0


def _qualities(accept: str) -> dict[str, float]:
    """Media range → q, the highest when a range is listed twice."""
    ranges: dict[str, float] = {}
    for item in accept.split(","):
        media, *parameters = item.split(";")
        media = media.strip().lower()
        if media:
            ranges[media] = max(ranges.get(media, 0.0), _quality(parameters))
    return ranges


def _preference(ranges: dict[str, float], media: str) -> float:
    """The q the client gives `media`: from the most specific range that matches it (RFC 9110 §12.5.1)."""
    kind = media.split("/", 1)[0]
    for candidate in (media, f"{kind}/*", "*/*"):
        if candidate in ranges:
            return ranges[candidate]
    return 0.0


def wants_html(request: HTTPConnection) -> bool:
    """Whether `request` is a browser's: its Accept names `text/html` itself and prefers it to JSON.

    `*/*`, no Accept header, `application/json`, or HTML with a q no higher than JSON's keep the
    JSON answer, so clients and scripts see what they always saw.
    """
    ranges = _qualities(",".join(request.headers.getlist("accept")))
    html = ranges.get("text/html", 0.0)
    return html > 0.0 and html > _preference(ranges, "application/json")
