"""`onec-mcp-proxy check` against the demo 1C: what it prints and the exit code it returns."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import pytest

from py_server.check import hint, run_check
from py_server.demo.idp import IdentityProvider
from py_server.demo.onec_emulator import OneCEmulator
from py_server.errors import OneCConnectionError, OneCHTTPError, OneCProtocolError, OneCRpcError, OneCTLSError

from .conftest import proxy_settings

pytestmark = pytest.mark.anyio


async def check(emulator: OneCEmulator, **overrides: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_check(proxy_settings(emulator, **overrides), out=out)
    return code, out.getvalue()


def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_a_healthy_1c_exits_0_and_names_the_backend(emulator: OneCEmulator) -> None:
    code, out = await check(emulator)
    assert code == 0, out
    assert "[ok]   1C backend: 1C MCP Server 1.0.0, protocol 2025-03-26\n" in out
    assert "[FAIL]" not in out and "[warn]" not in out


async def test_the_prompts_list_bug_is_a_warning_and_exits_0(emulator: OneCEmulator) -> None:
    emulator.state.prompts_list_bug = True
    code, out = await check(emulator)
    assert code == 0, out
    [warning] = [line for line in out.splitlines() if line.startswith("[warn]")]
    assert warning.startswith("[warn] prompts/list: 1C returned error -32603")
    assert warning.endswith("tools and resources are served, prompts are skipped.")
    assert "[FAIL]" not in out


async def test_a_failing_extra_exits_1(emulator: OneCEmulator) -> None:
    code, out = await check(emulator, repairs_api_url=closed_port_url())
    assert code == 1, out
    assert "[FAIL] extra repairs: failing" in out


async def test_a_cause_that_fails_every_list_says_what_to_do_in_its_own_lines_only(emulator: OneCEmulator) -> None:
    emulator.state.fault = "html_500"  # every POST rpc answers the IIS error page; discovery GETs still work
    code, out = await check(emulator)
    assert code == 1, out
    assert out.count("[FAIL]") == 3 and out.count("See the web server and 1C server logs.") == 3
    assert "hint:" not in out  # it would say the same again


async def test_a_refused_connection_gets_no_hint_that_repeats_its_line(emulator: OneCEmulator) -> None:
    code, out = await check(emulator, onec_url=closed_port_url())
    assert code == 1, out
    [failure] = [line for line in out.splitlines() if line.startswith("[FAIL]")]
    assert failure.endswith("Is the web server running and the base published? Check MCP_ONEC_URL.")
    assert "hint:" not in out


async def test_a_tls_failure_gets_one_hint_naming_the_command_that_shows_the_certificate(
    emulator: OneCEmulator,
) -> None:
    code, out = await check(emulator, onec_url=emulator.url.replace("http://", "https://"))  # a plain HTTP port
    assert code == 1, out
    assert "[FAIL] cannot talk to 1C: 1C's web server at https://127.0.0.1:" in out
    hints = [line for line in out.splitlines() if "hint:" in line]
    assert hints == [
        f"       hint: The line above says what to set; 'openssl s_client -connect 127.0.0.1:{emulator.port} "
        "-showcerts' shows the certificate the web server sends."
    ]


def test_hints_say_only_what_the_failure_does_not() -> None:
    tls = OneCTLSError("1C's HTTPS certificate at https://srv is not trusted (...): set MCP_ONEC_CA_BUNDLE ...")
    assert hint(tls, "https://srv/base/hs/mcp") == (
        "The line above says what to set; 'openssl s_client -connect srv:443 -showcerts' shows the certificate "
        "the web server sends."
    )
    assert "-connect [::1]:8443 " in (hint(tls, "https://[::1]:8443/base/hs/mcp") or "")
    rpc = OneCRpcError("1C returned error -32603: ...", code=-32603, detail="...")
    assert hint(rpc) == "The HTTP service answered, but the 1C code failed; see the 1C event log."
    for said in (
        OneCConnectionError("Cannot connect to 1C at ... Check MCP_ONEC_URL."),
        OneCHTTPError("1C answered ... with HTTP 404: .... Check MCP_ONEC_SERVICE_ROOT and ...", status_code=404),
        OneCProtocolError("1C answered tools/list ... but not JSON: .... Check MCP_ONEC_URL and MCP_ONEC_RPC_PATH."),
    ):
        assert hint(said) is None
    assert "MCP_ONEC_SERVICE_ROOT" in (hint(OneCProtocolError("1C's answer to tools/list is not JSON-RPC")) or "")


async def test_check_begins_with_the_1c_settings_and_where_each_came_from(emulator: OneCEmulator) -> None:
    _, out = await check(emulator, onec_rpc_path="")
    assert out.splitlines()[:8] == [
        f"[--]   MCP_ONEC_URL = {emulator.url} (given)",
        f"[--]   MCP_ONEC_USERNAME = {emulator.username} (given)",
        "[--]   MCP_ONEC_PASSWORD = *** set (given)",
        "[--]   MCP_ONEC_SERVICE_ROOT = mcp (default)",
        "[--]   MCP_ONEC_RPC_PATH = / (the service root itself) (given)",
        "[--]   MCP_ONEC_CA_BUNDLE = not set (default)",
        "[--]   MCP_ONEC_VERIFY_TLS = true (default)",
        "",
    ]
    assert emulator.password not in out


async def test_check_shows_what_the_policy_hides_and_warns_of_patterns_that_match_nothing(
    emulator: OneCEmulator,
) -> None:
    code, out = await check(emulator, tools_deny=["post_*", "post_docment"], resources_deny=["file://*"])
    assert code == 0, out
    assert "[--]   policy hides 1 tools: post_document (MCP_TOOLS_DENY)\n" in out
    hidden_files = sum(uri.startswith("file://") for uri in emulator.state.resources)
    assert f"policy hides {hidden_files} resources: file://" in out
    assert "[warn] policy: MCP_TOOLS_DENY pattern 'post_docment' matches no tool (a typo?)\n" in out


async def test_check_says_when_no_policy_masking_or_audit_is_set(emulator: OneCEmulator) -> None:
    _, out = await check(emulator)
    assert "policy: every tool, resource and prompt is served" in out
    assert "personal-data masking: off (MCP_MASK_PII)" in out
    assert "audit log: off (MCP_AUDIT_LOG)" in out


async def test_check_fails_when_names_masking_lacks_its_extra(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, package=None: None if name == "natasha" else find_spec(name, package)
    )
    code, out = await check(emulator, mask_pii=["all", "names"])
    assert code == 1
    assert "[FAIL] personal-data masking: MCP_MASK_PII=names needs the optional extra" in out


# --- identity ------------------------------------------------------------------------------


async def test_passthrough_without_a_service_account_is_not_a_failure(emulator: OneCEmulator) -> None:
    code, out = await check(emulator, onec_auth="passthrough", onec_username="", onec_password="")
    assert code == 0, out
    assert "[ok]   1C answers and asks for a login" in out
    assert "1C logins: each HTTP client's own (passthrough), catalog per identity" in out


async def test_the_service_account_is_named_by_default(emulator: OneCEmulator) -> None:
    _, out = await check(emulator)
    assert f"1C logins: the service account '{emulator.username}' for everybody" in out


async def test_oauth_loads_the_issuers_keys_and_the_policy_files_groups(emulator: OneCEmulator, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[groups.interns]\nread_only = true\ntools_deny = ["no_such_*"]\n', encoding="utf-8")
    with IdentityProvider() as idp:
        code, out = await check(emulator, oauth_issuer=idp.issuer, oauth_audience="onec-mcp-proxy", policy_file=policy)
    assert code == 0, out
    assert f"[ok]   OAuth: issuer {idp.issuer}" in out
    assert "[ok]   policy file: groups interns from the token claim 'groups'; a user in none of them: deny" in out
    assert "[warn] policy file: " in out and "no_such_*" in out


async def test_an_unreachable_issuer_fails_the_check(emulator: OneCEmulator) -> None:
    code, out = await check(emulator, oauth_issuer=closed_port_url(), oauth_audience="onec-mcp-proxy")
    assert code == 1
    assert "[FAIL] OAuth: " in out
