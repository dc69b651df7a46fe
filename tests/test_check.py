"""`onec-mcp-proxy check` against the demo 1C: what it prints and the exit code it returns."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest

from py_server.check import run_check
from py_server.demo.onec_emulator import OneCEmulator

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


async def test_a_cause_that_fails_every_list_prints_its_hint_once(emulator: OneCEmulator) -> None:
    emulator.state.fault = "html_500"  # every POST rpc answers the IIS error page; discovery GETs still work
    code, out = await check(emulator)
    assert code == 1, out
    assert out.count("[FAIL]") == 3
    assert out.count("hint:") == 1
    assert "hint: The web server or 1C failed" in out


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
