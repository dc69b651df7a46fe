"""The proxy's exceptions: one tree, messages a 1C admin can act on.

    ProxyError
    ├── ConfigError                 a setting is missing or invalid (names the setting)
    ├── ListenError                 the HTTP server cannot listen: port in use, address not here
    ├── OneCError                   anything that went wrong talking to 1C
    │   ├── OneCConnectionError     cannot connect (URL), connection dropped
    │   │   └── OneCTimeoutError    no answer within MCP_ONEC_TIMEOUT
    │   ├── OneCBusyError           no concurrency slot within MCP_ONEC_QUEUE_TIMEOUT
    │   ├── OneCHTTPError           an HTTP status that is not a JSON-RPC reply (HTML error pages)
    │   │   ├── OneCAuthError       401 / 403: check user and rights
    │   │   └── OneCRedirectError   3xx: check the case of the base name in MCP_ONEC_URL
    │   ├── OneCProtocolError       200 but not JSON, or not a JSON-RPC reply to our request
    │   │   └── OneCResponseTooLarge  the answer exceeds MCP_ONEC_MAX_RESPONSE_MB (not read)
    │   └── OneCRpcError            1C answered with a JSON-RPC error (keeps .code)
    ├── InvalidRequestError         the client's request cannot be sent to 1C (e.g. NaN in arguments)
    └── UpstreamError               a local extra's upstream failed (keeps .error_type)

Only `onec_client` translates httpx and JSON exceptions into `OneCError`; everything above it
sees only this tree. `str(exc)` is the text users and models read, so it never holds a secret.
"""

from __future__ import annotations

METHOD_NOT_FOUND = -32601


class ProxyError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ProxyError):
    """A setting is missing or invalid. The message names the setting."""


class ListenError(ProxyError):
    """The HTTP server cannot listen where it was told (a port in use, an address of another computer).

    The message is the whole line users read; it names the setting to change.
    """


class OneCError(ProxyError):
    """Talking to 1C failed."""


class OneCConnectionError(OneCError):
    """1C could not be reached, or the connection broke before an answer arrived."""


class OneCTimeoutError(OneCConnectionError):
    """1C did not answer in time."""


class OneCTLSError(OneCConnectionError):
    """1C's web server answered, but its HTTPS certificate was refused or the TLS handshake failed."""


class OneCBusyError(OneCError):
    """Every concurrency slot stayed taken for MCP_ONEC_QUEUE_TIMEOUT; the call was not sent."""


class OneCHTTPError(OneCError):
    """1C (or the web server in front of it) answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class OneCAuthError(OneCHTTPError):
    """401 or 403: wrong login/password, or the user has no right to the HTTP service.

    `reason` is 1C's own text from its error page (an excerpt, secrets masked), or "".
    """

    def __init__(self, message: str, *, status_code: int, reason: str = "") -> None:
        super().__init__(message, status_code=status_code)
        self.reason = reason


class OneCRedirectError(OneCHTTPError):
    """A 3xx answer. The 1C web server redirects when the base name's case is wrong."""


class OneCProtocolError(OneCError):
    """The answer was not a JSON-RPC reply to the request we sent."""


class OneCResponseTooLarge(OneCProtocolError):
    """1C's answer is larger than MCP_ONEC_MAX_RESPONSE_MB; it was not read into memory."""


class OneCRpcError(OneCError):
    """1C answered with a JSON-RPC error.

    `str(exc)` is the client-facing text (1C's `{Module(line)}:` prefix removed);
    `detail` keeps 1C's full message for the log.
    """

    def __init__(self, message: str, *, code: int, detail: str) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail

    @property
    def method_not_found(self) -> bool:
        return self.code == METHOD_NOT_FOUND


class InvalidRequestError(ProxyError):
    """What the client asked for cannot be sent to 1C as it is (arguments that are not JSON values).

    The client's fault, so front-ends answer it as invalid params, not as a 1C failure.
    """


class UpstreamError(ProxyError):
    """An upstream of a local extra (repairs API, Managed RAG, IAM, knowledge base) failed.

    `error_type` goes to the tool result's `_meta.error_type`; `http_status` too when known.
    """

    def __init__(self, message: str, *, error_type: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.http_status = http_status
