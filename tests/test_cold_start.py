"""Cold start: each command imports only what it needs, and nothing is prepared before serving.

The stdio path never loads the web framework, prometheus_client (no MCP_METRICS_PORT), PyJWT (no
OAuth) or the local knowledge base's SQLite and stemmer before it serves; the knowledge base is
indexed in the background once the first tools/list has been answered, and a compliance_rag call
that comes before the index is ready waits for that build instead of failing. `kb index` does not
load the MCP SDK; the HTTP app loads PyJWT only with OAuth and prometheus_client only when /metrics
is scraped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.memory import create_client_server_memory_streams

from py_server.config import Settings
from py_server.demo.onec_emulator import OneCEmulator
from py_server.extras.compliance import ComplianceExtra, local_kb
from py_server.local_tools import warm_up
from py_server.stdio_server import serve
from py_server.wiring import build_proxy

from .conftest import http_proxy, proxy_settings, settings_env

QUERY = {"query": "повторный ремонт"}
# Never on the stdio path with these settings (no metrics port, no OAuth, no repairs API).
NEVER_ON_STDIO = (
    "fastapi",
    "py_server.http_server",
    "py_server.ops_page",
    "prometheus_client",
    "jwt",
    "py_server.extras.repairs.tools",
)
KNOWLEDGE_BASE_MODULES = ("sqlite3", "snowballstemmer")

# Runs `onec-mcp-proxy stdio` as `python -m py_server stdio` does, and writes down which modules
# were loaded when it began to serve (before it read a message) and when its client had left.
STDIO_SCRIPT = """
import json, sys
from pathlib import Path

import py_server.stdio_server as stdio_server
from py_server.main import main

out = Path(sys.argv[1])
serve = stdio_server.serve


async def noted_serve(*args, **kwargs):
    (out / "serving.json").write_text(json.dumps(sorted(sys.modules)))
    await serve(*args, **kwargs)
    (out / "served.json").write_text(json.dumps(sorted(sys.modules)))


stdio_server.serve = noted_serve
sys.exit(main(["stdio"]))
"""


def default_settings(emulator: OneCEmulator, **overrides: Any) -> Settings:
    """The defaults that matter here: MCP_RAG_BACKEND=auto without Cloud.ru keys, i.e. the shipped
    documents indexed locally; no repairs API, no metrics port, no OAuth."""
    return proxy_settings(emulator, rag_backend="auto", **overrides)


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in modules]


@pytest.mark.anyio
async def test_stdio_serves_before_loading_what_it_does_not_need(emulator: OneCEmulator, tmp_path: Path) -> None:
    script = tmp_path / "stdio_proxy.py"
    script.write_text(STDIO_SCRIPT, encoding="utf-8")
    params = StdioServerParameters(
        command=sys.executable, args=[str(script), str(tmp_path)], env=settings_env(default_settings(emulator))
    )
    with anyio.fail_after(120):
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write, read_timeout_seconds=60) as session,
        ):
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            rag = await session.call_tool("compliance_rag", QUERY)
            assert not (await session.call_tool("get_metadata", {})).is_error
    assert {"compliance_rag", "get_metadata"} <= tools
    assert rag.is_error is False and rag.structured_content is not None
    assert "повторн" in rag.structured_content["documents"][0]["content"].lower()

    serving = json.loads((tmp_path / "serving.json").read_text())
    assert "py_server.mcp_server" in serving  # the snapshot is from the stdio path, as it serves
    assert loaded(serving, NEVER_ON_STDIO) == []
    assert loaded(serving, KNOWLEDGE_BASE_MODULES) == []  # the index is not built before serving
    served = json.loads((tmp_path / "served.json").read_text())
    assert loaded(served, NEVER_ON_STDIO) == []  # counting requests does not load prometheus_client
    assert loaded(served, KNOWLEDGE_BASE_MODULES) == list(KNOWLEDGE_BASE_MODULES)  # the index was used


@pytest.mark.anyio
async def test_the_knowledge_base_is_indexed_in_the_background_and_a_first_call_waits_for_it(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    builds: list[str] = []  # index builds that ran to completion
    build = local_kb._build

    def gated_build(target: str, source_dir: Path) -> Any:
        started.set()
        if not release.wait(60):
            raise TimeoutError("the test never released the build")
        result = build(target, source_dir)
        builds.append(target)
        return result

    monkeypatch.setattr(local_kb, "_build", gated_build)
    at_call: list[tuple[bool, int]] = []  # (build started, builds finished) when the call arrived
    call = ComplianceExtra.call

    async def call_then_release(self: ComplianceExtra, arguments: dict[str, Any]) -> Any:
        at_call.append((started.is_set(), len(builds)))
        release.set()  # the build the call is about to wait for may go on now
        return await call(self, arguments)

    monkeypatch.setattr(ComplianceExtra, "call", call_then_release)
    proxy = build_proxy(default_settings(emulator))
    try:
        with anyio.fail_after(60):
            async with (
                proxy.running(),
                create_client_server_memory_streams() as (client_streams, server_streams),
                anyio.create_task_group() as tasks,
            ):
                tasks.start_soon(serve, proxy, *server_streams)
                client_read, client_write = client_streams
                async with ClientSession(client_read, client_write) as session:
                    await session.initialize()
                    assert not started.is_set()  # the handshake does not share the interpreter with it
                    tools = {tool.name for tool in (await session.list_tools()).tools}
                    assert builds == []  # answered while the index is not built
                    # Nobody called the tool, yet the build began: in the background, once listed.
                    assert await anyio.to_thread.run_sync(started.wait, 30)
                    result = await session.call_tool("compliance_rag", QUERY)
                await client_write.aclose()  # the client leaves; serve() returns
    finally:
        release.set()
    assert "compliance_rag" in tools
    assert at_call == [(True, 0)]  # the call came before the index was ready ...
    assert result.is_error is False and result.structured_content is not None  # ... and waited for it
    assert "повторн" in result.structured_content["documents"][0]["content"].lower()
    assert builds == [":memory:"]  # one build, shared by the warm-up and the call


@pytest.mark.anyio
async def test_a_warm_up_that_cannot_build_the_index_only_logs_and_the_call_still_reports_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = Settings(_env_file=None, rag_backend="local", kb_dir=tmp_path / "no-such-folder")  # type: ignore[call-arg]
    sent: list[httpx.Request] = []
    managed = Settings(  # type: ignore[call-arg]
        _env_file=None, rag_backend="managed", rag_key_id="kid", rag_key_secret="secret", rag_knowledge_base_id="kb"
    )

    def cloud(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    client = httpx.AsyncClient(transport=httpx.MockTransport(cloud))
    extras = [ComplianceExtra(missing), ComplianceExtra(managed, http_client=client)]
    try:
        await warm_up(extras)  # never raises
        assert "no-such-folder" in caplog.text
        assert sent == []  # Managed RAG: nothing is sent to Cloud.ru before a client asks
        result = await extras[0].call(QUERY)
    finally:
        for extra in extras:
            await extra.aclose()
        await client.aclose()
    assert result.is_error is True and "no-such-folder" in result.content[0].text  # type: ignore[union-attr]


def run_python(code: str, *args: str) -> Any:
    """`code` in a fresh interpreter; what it printed last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, encoding="utf-8", timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_kb_index_does_not_load_the_mcp_sdk(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from py_server.main import main\n"
        "code = main(['kb', 'index', sys.argv[1], '--output', sys.argv[2]])\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    documents = tmp_path / "docs"
    documents.mkdir()
    (documents / "a.md").write_text("# Гарантия\n\nСрок ремонта не более 45 дней.", encoding="utf-8")
    code_, modules = run_python(code, str(documents), str(tmp_path / "kb.sqlite3"))
    assert code_ == 0 and (tmp_path / "kb.sqlite3").is_file()
    assert loaded(modules, ("mcp", "fastapi", "starlette", "httpx", "prometheus_client", "jwt")) == []


def test_the_http_app_loads_jwt_only_with_oauth_and_prometheus_client_only_when_scraped(
    emulator: OneCEmulator,
) -> None:
    code = (
        "import json, sys\n"
        "from py_server.config import Settings\n"
        "from py_server.http_server import create_app\n"
        "from py_server.wiring import build_proxy\n"
        "proxy = build_proxy(Settings(_env_file=None, onec_url=sys.argv[1]))\n"
        "create_app(proxy)\n"
        "built = sorted(sys.modules)\n"
        "body, _ = proxy.metrics.render()\n"
        "print(json.dumps([built, sorted(sys.modules), body.decode()]))\n"
    )
    built, scraped, body = run_python(code, emulator.url)
    assert loaded(built, ("prometheus_client", "jwt", *KNOWLEDGE_BASE_MODULES)) == []
    assert "prometheus_client" in scraped and "jwt" not in scraped
    assert "# TYPE onec_mcp_requests_total counter" in body and "onec_mcp_onec_up" in body


def test_the_http_front_end_indexes_the_knowledge_base_in_the_background_once_it_serves(
    emulator: OneCEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    build = local_kb._build

    def observed_build(target: str, source_dir: Path) -> Any:
        started.set()
        return build(target, source_dir)

    monkeypatch.setattr(local_kb, "_build", observed_build)
    with http_proxy(default_settings(emulator)) as server:
        assert httpx.get(f"{server.url}/health/live").status_code == 200
        assert started.wait(30)  # nobody called compliance_rag, yet the index is being built
