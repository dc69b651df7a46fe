"""The built-in demo (`--demo`): what its 1C base serves, and that its backends stay out of the log."""

from __future__ import annotations

import logging

import httpx
import pytest

from py_server.config import Settings
from py_server.demo import demo_backends
from py_server.demo.onec_emulator import DEMO_RESOURCE_TEMPLATES
from py_server.onec_client import OneCClient


def _settings() -> Settings:
    return Settings(_env_file=None, rag_backend="off")  # type: ignore[call-arg]


@pytest.mark.anyio
async def test_the_demo_base_lists_its_resource_templates() -> None:
    with demo_backends(_settings()) as settings:
        async with OneCClient.from_settings(settings) as client:
            await client.discover()
            templates = await client.list_resource_templates()
    assert [t["uriTemplate"] for t in templates] == [t["uriTemplate"] for t in DEMO_RESOURCE_TEMPLATES]


def test_the_demo_settings_say_the_demo_set_them() -> None:
    with demo_backends(_settings()) as settings:
        origins = {field: settings.origin(field) for field in ("onec_url", "onec_password", "repairs_api_url")}
    assert origins == dict.fromkeys(origins, "demo")
    assert settings.origin("onec_service_root") == "default"


def test_the_demo_backends_log_nothing_below_warning_while_the_proxys_own_server_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    uvicorn_log = logging.getLogger("uvicorn.error")
    with demo_backends(_settings()) as settings:
        # Both answer, so both have written their start-up lines ("Started server process", ...).
        assert httpx.get(f"{settings.onec_url}/hs/mcp/manifest", auth=("demo", "demo")).status_code == 200
        assert httpx.get(f"{settings.repairs_api_url}/").status_code > 0
        uvicorn_log.info("Started server process [%d]", 1)  # the proxy's server runs in this thread
    # Leaving the block stopped them: their shutdown lines are written too.
    uvicorn_lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.error"]
    assert uvicorn_lines == ["Started server process [1]"]
    assert uvicorn_log.filters == []  # the demo's filter goes with it
