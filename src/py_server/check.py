"""`onec-mcp-proxy check`: connect with the current settings and say what works and what does not.

exit_code = await run_check(settings, out=sys.stdout)   # 0 all well, 1 anything reported as [FAIL]

The report goes to `out` alone; the 1C settings come first, each with where it came from (never
the password). A failure's hint is given only where it adds to the failure's own line, and once.
"""

from __future__ import annotations

from typing import Any, TextIO
from urllib.parse import urlsplit

from mcp import types

from .bases import load_bases
from .config import Settings, env_name, require_consistent_identity, require_onec_url
from .errors import (
    ConfigError,
    OneCAuthError,
    OneCBusyError,
    OneCConnectionError,
    OneCError,
    OneCHTTPError,
    OneCProtocolError,
    OneCResponseTooLarge,
    OneCRpcError,
    OneCTLSError,
)
from .extras import create_extras
from .group_policy import GroupPolicies
from .identity.oauth import JWTVerifier, KeySetUnavailable
from .masking import Masker
from .onec_client import Discovery, OneCClient
from .onec_mapping import to_items, to_prompt, to_resource, to_tool
from .policy import Policy, Rules
from .wiring import build_policies

OK, FAIL, WARN, INFO = "[ok]  ", "[FAIL]", "[warn]", "[--]  "
MAX_CLIENT_NAME = 64  # longer tool and prompt names are refused by many clients
KINDS = ("tools", "resources", "prompts")


# Failures whose own line already says what to do (OneCClient's messages name the setting or the
# next step); a hint would say it twice.
_SAY_WHAT_TO_DO = (
    OneCConnectionError,  # timeouts and sessions too; TLS failures get the one hint below
    OneCHTTPError,  # redirect (case), 401/403 (login, rights), 404 (root, rpc path), 5xx (the logs)
    OneCBusyError,
    OneCResponseTooLarge,
)


def hint(exc: OneCError, url: str | None = None) -> str | None:
    """What to try next beyond what `exc`'s own line says, or None when that line already says it.

    `url` is the 1C URL that failed (the host of a certificate to look at).
    """
    if isinstance(exc, OneCTLSError):
        return (
            f"The line above says what to set; 'openssl s_client -connect {_host_port(url)} -showcerts' shows "
            "the certificate the web server sends."
        )
    if isinstance(exc, OneCRpcError):
        return "The HTTP service answered, but the 1C code failed; see the 1C event log."
    if isinstance(exc, _SAY_WHAT_TO_DO) or "MCP_" in str(exc):
        return None
    if isinstance(exc, OneCProtocolError):
        return "Something answers there, but not as a 1C MCP service: check MCP_ONEC_SERVICE_ROOT, MCP_ONEC_RPC_PATH."
    return "Check MCP_ONEC_URL, MCP_ONEC_SERVICE_ROOT and that the HTTP service is published."


def _host_port(url: str | None) -> str:
    """host:port of an HTTPS URL, as openssl s_client takes it."""
    parts = urlsplit(url or "")
    if not parts.hostname:
        return "<host>:443"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 443}"


class _Report:
    """The printed lines; remembers whether anything failed and which hints were given."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._hints: set[str] = set()
        self.failed = False

    def line(self, mark: str, text: str) -> None:
        if mark == FAIL:  # exit code 1 whenever a line says so, however it was printed
            self.failed = True
        print(f"{mark} {text}", file=self._out)

    def failure(self, text: str, advice: str | None = None) -> None:
        self.line(FAIL, text)
        if advice is not None and advice not in self._hints:  # the same cause often fails several lists
            self._hints.add(advice)
            print(f"       hint: {advice}", file=self._out)


async def run_check(settings: Settings, *, out: TextIO) -> int:
    """Print a diagnosis of 1C and the local extras; return 1 when anything failed, else 0.

    A warning ([warn]), such as the reference extension's prompts/list bug, is not a failure.
    """
    require_consistent_identity(settings)
    bases = load_bases(settings)
    report = _Report(out)
    _report_settings(settings, report)
    print(file=out)
    listed_by_base: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for number, base in enumerate(bases):
        url = require_onec_url(base.settings)
        if number:
            print(file=out)
        named = f"base {base.name}: " if len(bases) > 1 else ""
        print(f"{named}1C HTTP service: {url}  (user: {base.settings.onec_username or '-'})", file=out)
        async with OneCClient.from_settings(base.settings) as client:
            listed = await _check_onec(client, report, logins_per_user=_asks_each_user(base.settings))
        listed_by_base[base.name] = listed
        if len(bases) > 1:
            _check_prefixed_names(base.name, settings.base_separator, listed, report)
            _check_policy(base.settings, listed, [], report)
    if len(bases) > 1:
        print(file=out)
    first = next(iter(listed_by_base.values()))
    local_tools = await _check_extras(settings, report)
    if len(bases) == 1:
        _check_governance(settings, first, local_tools, report)
    else:  # the local tools, served once for every base, under the global policy
        _check_policy(
            settings, {kind: [] for kind in KINDS}, local_tools, report, where=" of the local tools", warn=False
        )
        _check_masking_and_audit(settings, report)
    accounts = {base.name: base.settings.onec_username or "-" for base in bases}
    await _check_identity(settings, first, local_tools, report, accounts=accounts)
    return 1 if report.failed else 0


def _report_settings(settings: Settings, report: _Report) -> None:
    """The 1C settings as used, each with where it came from (a flag, the environment, the .env file, the
    default, the demo); what was corrected in them. Never the password itself."""
    shown = {
        "onec_url": settings.onec_url or "not set",
        "onec_username": settings.onec_username or "not set",
        "onec_password": "*** set" if settings.onec_password.get_secret_value() else "not set",
        "onec_service_root": settings.onec_service_root,
        "onec_rpc_path": settings.onec_rpc_path or "/ (the service root itself)",
        "onec_ca_bundle": str(settings.onec_ca_bundle) if settings.onec_ca_bundle else "not set",
        "onec_verify_tls": "true" if settings.onec_verify_tls else "false",
    }
    if settings.bases_file is not None:
        shown["bases_file"] = str(settings.bases_file)
    for field, value in shown.items():
        report.line(INFO, f"{env_name(field)} = {value} ({settings.origin(field)})")
    for adjustment in settings.adjustments:
        report.line(WARN, adjustment)


def _check_prefixed_names(base: str, separator: str, listed: dict[str, list[dict[str, Any]]], report: _Report) -> None:
    """Where every base is served together, names carry the base: many clients refuse names over 64 characters."""
    for kind in ("tools", "prompts"):
        long = [f"{base}{separator}{item.get('name')}" for item in listed[kind]]
        long = [name for name in long if len(name) > MAX_CLIENT_NAME]
        if long:
            report.line(
                WARN,
                f"{kind} named longer than {MAX_CLIENT_NAME} characters on /mcp (many clients refuse them): "
                + ", ".join(long[:5])
                + (", ..." if len(long) > 5 else ""),
            )


def _asks_each_user(settings: Settings) -> bool:
    """Passthrough without a service account: 1C is expected to ask `check` for a login it does not have."""
    return settings.onec_auth == "passthrough" and not settings.onec_username


async def _check_onec(
    client: OneCClient, report: _Report, *, logins_per_user: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Discovery, round trip and the three lists; returns what 1C listed, by kind."""
    listed: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    try:
        discovery = await client.discover()
        rtt = await client.ping()
    except OneCAuthError as exc:
        if logins_per_user and exc.status_code == 401:
            report.line(
                OK, "1C answers and asks for a login: each HTTP client sends its own (MCP_ONEC_AUTH=passthrough)"
            )
            report.line(
                INFO, "the catalog is not listed here: set MCP_ONEC_USERNAME to check it with a service account"
            )
        else:
            report.failure(f"cannot talk to 1C: {exc}", hint(exc, client.base_url))
        return listed
    except OneCError as exc:
        report.failure(f"cannot talk to 1C: {exc}", hint(exc, client.base_url))
        return listed
    caps = "" if discovery.capabilities is None else f" capabilities: {discovery.capabilities}"
    report.line(OK, f"discovery via {discovery.source}{caps}; round trip {rtt * 1000:.0f} ms")
    _report_backend(discovery, report)
    served: list[str] = []
    for kind, lister in zip(KINDS, (client.list_tools, client.list_resources, client.list_prompts), strict=True):
        try:
            items = await lister()
        except OneCRpcError as exc:
            if exc.method_not_found:
                report.line(INFO, f"{kind}: not served by this 1C backend")
            elif kind == "prompts":
                # The reference extension's known bug: prompts/list fails (-32603) for prompts with arguments.
                # The proxy goes on serving the rest, so this is worth knowing, not a failure.
                rest = f"{' and '.join(served)} {'is' if len(served) == 1 else 'are'} served, " if served else ""
                report.line(
                    WARN,
                    f"prompts/list: {exc}. The reference 1C extension fails so for prompts with arguments; "
                    f"{rest}prompts are skipped.",
                )
            else:
                report.failure(f"{kind}/list: {exc}", hint(exc, client.base_url))
        except OneCError as exc:
            report.failure(f"{kind}/list: {exc}", hint(exc, client.base_url))
        else:
            served.append(kind)
            listed[kind] = items
            names = ", ".join(str(item.get("name", "?")) for item in items[:8])
            more = ", ..." if len(items) > 8 else ""
            report.line(OK, f"{kind}: {len(items)}" + (f" ({names}{more})" if items else ""))
    return listed


def _report_backend(discovery: Discovery, report: _Report) -> None:
    if discovery.server_info is None and discovery.protocol_version is None:
        report.line(INFO, "1C backend: no MCP handshake (initialize is not served); not needed")
        return
    info = discovery.server_info or {}
    name = " ".join(str(info[key]) for key in ("name", "version") if info.get(key)) or "unnamed MCP server"
    protocol = f", protocol {discovery.protocol_version}" if discovery.protocol_version else ""
    report.line(OK, f"1C backend: {name}{protocol}")


async def _check_extras(settings: Settings, report: _Report) -> list[types.Tool]:
    """The extras' status; returns the local tools they serve."""
    local_tools: list[types.Tool] = []
    for extra in create_extras(settings):
        local_tools.extend(tool.definition for tool in extra.tools)
        try:
            status = await extra.status()
        finally:
            await extra.aclose()
        detail = f": {status.detail}" if status.detail else ""
        text = f"extra {status.name}: {status.state}{detail}"
        if status.state == "failing":
            report.failure(text)
        else:
            report.line(OK if status.state == "reachable" else INFO, text)
    return local_tools


def _check_governance(
    settings: Settings, listed: dict[str, list[dict[str, Any]]], local_tools: list[types.Tool], report: _Report
) -> None:
    """What the policy hides of what 1C and the extras serve, patterns that match nothing, masking and audit."""
    _check_policy(settings, listed, local_tools, report)
    _check_masking_and_audit(settings, report)


def _check_policy(
    settings: Settings,
    listed: dict[str, list[dict[str, Any]]],
    local_tools: list[types.Tool],
    report: _Report,
    *,
    where: str = "",
    warn: bool = True,
) -> None:
    rules = Rules.from_settings(settings)
    if rules.restricts:
        onec_tools, _ = to_items(listed["tools"], to_tool, "tool")
        local_names = {tool.name for tool in local_tools}
        tools = [tool for tool in onec_tools if tool.name not in local_names] + local_tools
        resources, _ = to_items(listed["resources"], to_resource, "resource")
        prompts, _ = to_items(listed["prompts"], to_prompt, "prompt")
        policy_report = Policy(rules).report(tools, resources, prompts)
        for kind, hidden in policy_report["hidden"].items():
            items = ", ".join(f"{name} ({setting})" for name, setting in hidden.items())
            report.line(INFO, f"policy{where} hides {len(hidden)} {kind}: {items}")
        for warning in policy_report["warnings"] if warn else ():
            report.line(WARN, f"policy{where}: {warning} (a typo?)")
    else:
        report.line(
            INFO, f"policy{where}: every tool, resource and prompt is served (no MCP_*_ALLOW/_DENY, not read-only)"
        )


def _check_masking_and_audit(settings: Settings, report: _Report) -> None:
    try:
        Masker.from_settings(settings)  # what the proxy would build: `names` needs its optional extra
    except ConfigError as exc:
        report.failure(f"personal-data masking: {exc}")
    else:
        masked = ", ".join(settings.mask_pii) if settings.mask_pii else "off (MCP_MASK_PII)"
        report.line(INFO, f"personal-data masking: {masked}")
    report.line(INFO, f"audit log: {settings.audit_log or 'off (MCP_AUDIT_LOG)'}")


async def _check_identity(
    settings: Settings,
    listed: dict[str, list[dict[str, Any]]],
    local_tools: list[types.Tool],
    report: _Report,
    *,
    accounts: dict[str, str] | None = None,
) -> None:
    """Who reaches 1C as whom; the OAuth issuer's metadata and keys; the groups of MCP_POLICY_FILE."""
    if settings.onec_auth == "passthrough":
        report.line(
            INFO,
            f"1C logins: each HTTP client's own (passthrough), catalog {settings.onec_catalog.replace('_', ' ')}; "
            f"at most {settings.onec_max_identities} kept, closed after {settings.onec_identity_idle:g} s idle; "
            f"{settings.identity_concurrency} calls per person, {settings.onec_max_concurrency} in total",
        )
    elif accounts is not None and len(accounts) > 1:
        named = ", ".join(f"{base}: '{user}'" for base, user in accounts.items())
        report.line(INFO, f"1C logins: each base's service account for everybody ({named})")
    else:
        user = next(iter(accounts.values())) if accounts else settings.onec_username or "-"
        report.line(INFO, f"1C logins: the service account '{user}' for everybody")
    if not settings.oauth_enabled:
        return
    verifier = JWTVerifier.from_settings(settings)
    try:
        await verifier.load()
    except KeySetUnavailable as exc:
        report.failure(f"OAuth: {exc}")
    else:
        scopes = ", ".join(settings.oauth_scopes) or "none required"
        report.line(
            OK,
            f"OAuth: issuer {verifier.metadata_issuer}, its keys load; audience {settings.oauth_audience}; "
            f"scopes: {scopes}",
        )
    finally:
        await verifier.aclose()
    if settings.policy_file is None:
        report.line(INFO, "OAuth users get the global policy (no MCP_POLICY_FILE)")
        return
    try:
        policies = build_policies(settings)
    except ConfigError as exc:
        report.failure(str(exc))
        return
    assert isinstance(policies, GroupPolicies)
    policy_file = policies.policy_file
    report.line(
        OK,
        f"policy file: groups {', '.join(policy_file.groups)} from the token claim '{policy_file.claim}'; "
        f"a user in none of them: {policy_file.default}",
    )
    if not listed["tools"]:  # nothing listed to hold the patterns against
        return
    onec_tools, _ = to_items(listed["tools"], to_tool, "tool")
    resources, _ = to_items(listed["resources"], to_resource, "resource")
    prompts, _ = to_items(listed["prompts"], to_prompt, "prompt")
    for warning in policies.warnings([*onec_tools, *local_tools], resources, prompts):
        report.line(WARN, f"policy file: {warning} (a typo?)")
