"""The command line: parse flags, load settings once, run one command, report errors once.

    onec-mcp-proxy stdio                  # for Claude Desktop / Cursor
    onec-mcp-proxy http --port 8000       # /sse + /messages/, /mcp, /health
    onec-mcp-proxy http --demo            # against the built-in demo 1C base
    onec-mcp-proxy check                  # diagnose the connection to 1C
    onec-mcp-proxy kb index DIR           # build the local knowledge-base index
    onec-mcp-proxy emulator --port 8081   # run the demo 1C base alone

Exit codes: 0 ok, 1 a check or run failed (a port in use, an unexpected error), 2 bad settings or
usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import (
    DEFAULT_ENV_FILE,
    FLAG,
    Settings,
    authenticates_clients,
    is_loopback_host,
    load_settings,
    require_safe_exposure,
)
from .errors import ConfigError, ListenError, ProxyError
from .logging_setup import configure_logging
from .redaction import Redactor

logger = logging.getLogger("py_server")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_ENV_FILE_HELP = "settings file (default: .env in the working directory, if there)"
LOOPBACK = "127.0.0.1"
EMULATOR_PORT = 8081
# uvicorn's default queue of connections not yet accepted.
_BACKLOG = 2048
# What bind() says, on POSIX and on Windows (WSAE*).
_IN_USE = {errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)}
_NOT_ALLOWED = {errno.EACCES, getattr(errno, "WSAEACCES", errno.EACCES)}  # below 1024, or a reserved range
_NOT_HERE = {errno.EADDRNOTAVAIL, getattr(errno, "WSAEADDRNOTAVAIL", errno.EADDRNOTAVAIL)}

# flag -> Settings field; a flag left out keeps the value from the environment / .env.
_ONEC_FLAGS = {
    "onec_url": ("--onec-url", str, "1C publication URL, e.g. http://server/base (MCP_ONEC_URL)"),
    "onec_username": ("--onec-username", str, "1C user (MCP_ONEC_USERNAME); the password comes from MCP_ONEC_PASSWORD"),
    "onec_service_root": ("--service-root", str, "HTTP service root name (MCP_ONEC_SERVICE_ROOT, default mcp)"),
    "onec_rpc_path": ("--rpc-path", str, "JSON-RPC endpoint under the root (MCP_ONEC_RPC_PATH, default rpc)"),
    "onec_timeout": ("--timeout", float, "seconds for one 1C call (MCP_ONEC_TIMEOUT, default 120)"),
    "onec_max_concurrency": (
        "--max-concurrency",
        int,
        "1C calls in flight at once (MCP_ONEC_MAX_CONCURRENCY, default 4)",
    ),
    "catalog_ttl": ("--catalog-ttl", float, "seconds between catalog refreshes (MCP_CATALOG_TTL, default 60)"),
    "bases_file": ("--bases-file", Path, "TOML file of several 1C bases (MCP_BASES_FILE)"),
    "log_level": ("--log-level", str, "DEBUG, INFO, WARNING or ERROR (MCP_LOG_LEVEL, default INFO)"),
    "server_name": ("--server-name", str, "name reported to MCP clients (MCP_SERVER_NAME)"),
}
_HTTP_FLAGS = {
    "host": ("--host", str, "address to bind (MCP_HOST, default 127.0.0.1)"),
    "port": ("--port", int, "port to listen on (MCP_PORT, default 8000)"),
    "allowed_origins": ("--allowed-origins", str, "comma-separated browser origins allowed (MCP_ALLOWED_ORIGINS)"),
    "allowed_hosts": (
        "--allowed-hosts",
        str,
        "comma-separated Host names allowed besides loopback (MCP_ALLOWED_HOSTS)",
    ),
}


def _add_settings_flags(parser: argparse.ArgumentParser, flags: dict[str, tuple[str, type, str]]) -> None:
    for field, (flag, kind, help_text) in flags.items():
        parser.add_argument(flag, dest=field, type=kind, default=None, help=help_text)


def create_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onec-mcp-proxy", description="Expose a 1C:Enterprise base to MCP clients (stdio, SSE, Streamable HTTP)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def proxy_command(name: str, help_text: str, *, http: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_settings_flags(sub, _ONEC_FLAGS)
        if http:
            _add_settings_flags(sub, _HTTP_FLAGS)
        sub.add_argument("--demo", action="store_true", default=None, help="use the built-in demo 1C base")
        sub.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE, help=_ENV_FILE_HELP)
        return sub

    stdio = proxy_command("stdio", "serve one MCP client over stdin/stdout (Claude Desktop, Cursor)")
    stdio.add_argument(
        "--base", default=None, metavar="NAME", help="serve this base of the bases file alone (default: every base)"
    )
    proxy_command("http", "serve MCP over HTTP: /sse + /messages/, /mcp, /health", http=True)
    proxy_command("check", "diagnose the connection to 1C and the local extras")

    kb = commands.add_parser("kb", help="local knowledge base for compliance_rag")
    kb_commands = kb.add_subparsers(dest="kb_command", required=True, metavar="KB_COMMAND")
    index = kb_commands.add_parser("index", help="build or refresh the index of a folder of .md/.txt documents")
    index.add_argument("source", type=Path, help="folder with the documents")
    index.add_argument(
        "--output", type=Path, default=None, help="index file (default: MCP_KB_INDEX or ./knowledge_base.sqlite3)"
    )
    index.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE, help=_ENV_FILE_HELP)

    emulator = commands.add_parser(
        "emulator",
        help="run the demo 1C base alone (for trying 1C clients)",
        description=(
            "Run the demo 1C base alone on 127.0.0.1: the 1C HTTP service as the mcp_APIBackend extension "
            "publishes it (/demo/hs/mcp/manifest, /health and /rpc), with the demo's tools, resources, resource "
            "templates and prompts. Point a proxy at it with MCP_ONEC_URL=http://127.0.0.1:PORT/demo, "
            "user demo, password demo."
        ),
    )
    emulator.add_argument(
        "--port",
        type=int,
        default=EMULATOR_PORT,
        help=f"port to listen on, on 127.0.0.1 (default {EMULATOR_PORT}; 0 picks a free one)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = {*_ONEC_FLAGS, *_HTTP_FLAGS, "demo"}
    return {field: value for field, value in vars(args).items() if field in fields and value is not None}


def _redactor(settings: Settings) -> Redactor:
    """Masks every configured secret, and the 1C login in the forms it travels in (Basic token, user:password)."""
    tokens = (settings.auth_token, settings.repairs_api_key, settings.rag_key_secret)
    return Redactor(
        [token.get_secret_value() for token in tokens if token is not None],
        basic_logins=[(settings.onec_username, settings.onec_password.get_secret_value())],
    )


@contextlib.contextmanager
def _backends(settings: Settings) -> Iterator[Settings]:
    """The settings to run with: as given, or pointing at the demo backends while they run."""
    if not settings.demo:
        yield settings
        return
    from .demo import demo_backends

    with demo_backends(settings) as demo_settings:
        yield demo_settings


def _run_stdio(settings: Settings, base: str | None = None) -> int:
    import anyio

    from .stdio_server import run_stdio
    from .wiring import build_proxy

    with _backends(settings) as effective:
        proxy = build_proxy(effective, only_base=base)
        if settings.onec_auth == "passthrough" or settings.oauth_enabled:
            # One person per stdio proxy: their own 1C login is MCP_ONEC_USERNAME in their client's config.
            logger.warning(
                "MCP_ONEC_AUTH=passthrough and MCP_OAUTH_* apply to HTTP clients; over stdio the proxy reaches 1C "
                "as MCP_ONEC_USERNAME"
            )
        more = f" and {len(proxy.bases) - 1} more bases" if len(proxy.bases) > 1 else ""
        logger.info("onec-mcp-proxy %s on stdio, 1C at %s%s", __version__, proxy.client.base_url, more)
        anyio.run(run_stdio, proxy, backend_options=_event_loop_options())
    return EXIT_OK


def _event_loop_options() -> dict[str, Any]:
    """uvloop where it is installed (not on Windows): less CPU per message than asyncio's own loop,
    as uvicorn picks it for the HTTP front-end."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _run_http(settings: Settings) -> int:
    from .http_server import create_app, uvicorn_options
    from .wiring import build_proxy

    require_safe_exposure(settings)
    # Bound before anything starts or is announced: a port in use is one line, and no client can
    # take the port between this check and uvicorn serving it.
    with (
        _listening(
            settings.host, settings.port, host_setting="MCP_HOST or --host", port_setting="MCP_PORT or --port"
        ) as listeners,
        _backends(settings) as effective,
    ):
        proxy = build_proxy(effective)
        if settings.host in ("0.0.0.0", "::") and not settings.allowed_hosts:
            logger.warning("listening on all interfaces: set MCP_ALLOWED_HOSTS to the names clients use")
        if not is_loopback_host(settings.host) and not authenticates_clients(settings):
            logger.warning(
                "listening on %s without MCP_AUTH_TOKEN (MCP_ALLOW_UNAUTHENTICATED=true): "
                "anyone who can connect can use 1C",
                settings.host,
            )
        logger.info(
            "onec-mcp-proxy %s on %s (SSE /sse, Streamable HTTP /mcp, health /health), 1C at %s",
            __version__,
            _http_url(settings.host, listeners),
            proxy.client.base_url,
        )
        _serve(create_app(proxy), listeners, **uvicorn_options(settings))
    return EXIT_OK


@contextlib.contextmanager
def _listening(host: str, port: int, *, host_setting: str, port_setting: str) -> Iterator[list[socket.socket]]:
    """`_listen`'s sockets, closed when the block ends."""
    listeners = _listen(host, port, host_setting=host_setting, port_setting=port_setting)
    try:
        yield listeners
    finally:
        for sock in listeners:
            sock.close()


def _listen(host: str, port: int, *, host_setting: str, port_setting: str) -> list[socket.socket]:
    """Listening sockets on every address `host` has (as asyncio's create_server makes them: "localhost" is
    127.0.0.1 and ::1), or a ListenError that says which setting to change."""
    try:
        addresses = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {host}: no such address here ({exc.strerror}); set {host_setting}"
        ) from None
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            if os.name == "posix":  # as asyncio: restart at once; on Windows it would let two servers share a port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio: the IPv4 address has a socket of its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)  # clients that connect during start-up wait in the queue
    except OSError as exc:
        for sock in listeners:
            sock.close()
        raise ListenError(_listen_problem(exc, host, port, host_setting, port_setting)) from None
    return listeners


def _listen_problem(exc: OSError, host: str, port: int, host_setting: str, port_setting: str) -> str:
    if exc.errno in _IN_USE:
        return f"port {port} is in use; set {port_setting}"
    if exc.errno in _NOT_ALLOWED:
        return f"port {port} may not be used here ({exc.strerror}); set {port_setting}"
    if exc.errno in _NOT_HERE:
        return f"{host} is not an address of this computer; set {host_setting}"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}; set {host_setting} or {port_setting}"


def _http_url(host: str, listeners: list[socket.socket]) -> str:
    """Where the server listens, with the port the system chose for port 0."""
    port = listeners[0].getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve(app: Any, listeners: list[socket.socket], **options: Any) -> None:
    """Serve `app` with uvicorn on sockets that already listen, until Ctrl-C or SIGTERM."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_config=None, **options))
    interrupted = False
    try:
        server.run(sockets=listeners)
    except KeyboardInterrupt:  # uvicorn raises the Ctrl-C it handled again once it has shut down
        interrupted = True
    except SystemExit:  # uvicorn's own exit when the app fails to start; why is logged above
        if server.started:
            raise
    if not server.started:
        if interrupted:
            raise KeyboardInterrupt
        raise ListenError("the HTTP server did not start; the lines above say why")


def _run_check(settings: Settings) -> int:
    from .check import run_check

    with _backends(settings) as effective:
        return asyncio.run(run_check(effective, out=sys.stdout))


def _run_kb_index(args: argparse.Namespace, settings: Settings) -> int:
    from .extras.compliance.local_kb import build_index, format_stats

    output = args.output or settings.kb_index or Path("knowledge_base.sqlite3")
    print(format_stats(build_index(args.source, output)))
    return EXIT_OK


def _run_emulator(port: int) -> int:
    from .demo import demo_emulator_state
    from .demo.onec_emulator import create_onec_emulator

    with _listening(LOOPBACK, port, host_setting="--port", port_setting="--port") as listeners:
        url = f"{_http_url(LOOPBACK, listeners)}/demo"
        print(f"demo 1C base: MCP_ONEC_URL={url}, user demo, password demo", file=sys.stderr)
        _serve(create_onec_emulator(demo_emulator_state()), listeners)
    return EXIT_OK


def _utf8_stdout() -> None:
    # Windows consoles default to an OEM code page; Cyrillic output must not crash `check`.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8", errors="replace")


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "stdio":
        return _run_stdio(settings, args.base)
    _utf8_stdout()
    if args.command == "http":
        return _run_http(settings)
    if args.command == "check":
        return _run_check(settings)
    return _run_kb_index(args, settings)


def _fail(exit_code: int, message: str, redactor: Redactor) -> int:
    # One line, whatever the exception text holds (a 1C error page, a library's multi-line message).
    print(f"onec-mcp-proxy: {' '.join(redactor.redact(message).split())}", file=sys.stderr)
    return exit_code


def _log_level(command: str, settings: Settings) -> str:
    """`check` reports on stdout; its log on stderr says only what went wrong, unless --log-level asks for more."""
    if command != "check" or settings.origin("log_level") == FLAG:
        return settings.log_level
    return max(settings.log_level, "WARNING", key=logging.getLevelName)


def main(argv: Sequence[str] | None = None) -> int:
    args = create_parser().parse_args(argv)
    redactor = Redactor()  # until the settings say which secrets there are
    try:
        if args.command == "emulator":
            configure_logging("INFO")
            return _run_emulator(args.port)
        settings = load_settings(_overrides(args), env_file=args.env_file)
        redactor = _redactor(settings)
        configure_logging(_log_level(args.command, settings), secrets=redactor, log_format=settings.log_format)
        if args.command != "check" and not settings.demo:  # `check` prints them; the demo has its own URL
            for adjustment in settings.adjustments:
                logger.warning("%s", adjustment)
        return _run_command(args, settings)
    except ConfigError as exc:
        return _fail(EXIT_USAGE, str(exc), redactor)
    except ListenError as exc:
        return _fail(EXIT_FAILED, str(exc), redactor)
    except ProxyError as exc:
        return _fail(EXIT_FAILED, f"{type(exc).__name__}: {exc}", redactor)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        # A bug or an environment problem nobody foresaw: one line for the user, the traceback for a developer.
        logger.debug("unexpected error", exc_info=True)
        message = f"unexpected error: {type(exc).__name__}: {exc}; run with --log-level DEBUG for details"
        return _fail(EXIT_FAILED, message, redactor)


if __name__ == "__main__":
    sys.exit(main())
