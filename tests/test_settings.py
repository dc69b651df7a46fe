"""Settings mean what they say: precedence (flag > environment > .env > default), which names are
read from where, empty values, and a .env that is not UTF-8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from py_server.bases import load_bases
from py_server.config import (
    ENV_NAMES,
    Settings,
    as_environment,
    env_name,
    is_loopback_host,
    load_settings,
    require_consistent_identity,
    require_safe_exposure,
)
from py_server.errors import ConfigError


def write_env_file(text: str, path: Path = Path(".env"), *, encoding: str = "utf-8") -> Path:
    """A settings file in the test's own working directory (the autouse fixture chdirs to tmp_path)."""
    path.write_text(text, encoding=encoding)
    return path


# --- precedence ---------------------------------------------------------------------------------


def test_a_flag_beats_the_environment_which_beats_the_env_file_which_beats_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_env_file("MCP_PORT=1002\nMCP_SERVER_NAME=из-файла\nMCP_ONEC_TIMEOUT=7\n")
    monkeypatch.setenv("MCP_PORT", "1001")
    monkeypatch.setenv("MCP_SERVER_NAME", "из-окружения")
    flagged = load_settings({"port": 1003, "server_name": "из-флага"})
    assert (flagged.port, flagged.server_name) == (1003, "из-флага")
    unflagged = load_settings({})
    assert (unflagged.port, unflagged.server_name) == (1001, "из-окружения")  # a stray .env loses
    assert unflagged.onec_timeout == 7.0  # set only in .env
    assert unflagged.catalog_ttl == 60.0  # set nowhere: the default


def test_the_environment_wins_even_when_it_spells_the_setting_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    write_env_file("MCP_HOST=from-env-file\nMCP_PORT=1002\n")
    monkeypatch.setenv("MCP_SERVER_HOST", "from-environment")
    monkeypatch.setenv("MCP_SERVER_PORT", "1001")
    settings = load_settings({})
    assert (settings.host, settings.port) == ("from-environment", 1001)


def test_flags_are_given_by_field_name() -> None:
    settings = load_settings({"host": "0.0.0.0", "port": 9001, "repairs_api_url": "http://repairs.local"})
    assert (settings.host, settings.port, settings.repairs_api_url) == ("0.0.0.0", 9001, "http://repairs.local")


# --- which names are read from where ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOST", "0.0.0.0"),
        ("PORT", "9"),
        ("API_KEY", "someone-elses-key"),
        ("API_URL", "http://someone-else.local"),
        ("KEY_ID", "someone-elses-id"),
        ("RETRIEVE_LIMIT", "7"),
    ],
)
def test_generic_names_in_the_environment_change_nothing(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    defaults = load_settings({})
    assert defaults.model_dump() == Settings(_env_file=None).model_dump()  # type: ignore[call-arg]
    assert (defaults.host, defaults.port, defaults.repairs_api_key, defaults.repairs_api_url) == (
        "127.0.0.1",
        8000,
        None,
        None,
    )
    assert (defaults.rag_key_id, defaults.rag_retrieve_limit) == (None, 3)


def test_the_original_servers_names_are_read_from_the_env_file() -> None:
    write_env_file("API_URL=http://repairs.local:8000\nAPI_KEY=repairs-key\nKEY_ID=key-id\nRETRIEVE_LIMIT=5\n")
    settings = load_settings({})
    assert (settings.repairs_api_url, settings.rag_key_id, settings.rag_retrieve_limit) == (
        "http://repairs.local:8000",
        "key-id",
        5,
    )
    assert settings.repairs_api_key == SecretStr("repairs-key")


def test_generic_host_and_port_in_the_env_file_are_not_settings() -> None:
    write_env_file("HOST=0.0.0.0\nPORT=9\n")
    settings = load_settings({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_mcp_names_are_read_from_both_the_environment_and_the_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_env_file("MCP_RAG_KEY_ID=from-file\nMCP_SERVER_PORT=1002\n")
    monkeypatch.setenv("MCP_REPAIRS_API_URL", "http://repairs.local")
    monkeypatch.setenv("MCP_SERVER_HOST", "0.0.0.0")
    settings = load_settings({})
    assert (settings.rag_key_id, settings.port) == ("from-file", 1002)
    assert (settings.repairs_api_url, settings.host) == ("http://repairs.local", "0.0.0.0")


# --- empty values -------------------------------------------------------------------------------


def test_an_empty_line_in_the_env_file_keeps_the_default() -> None:
    write_env_file("MCP_PORT=\nMCP_ONEC_SERVICE_ROOT=\nMCP_ONEC_TIMEOUT=\nMCP_REPAIRS_API_URL=\n")  # as env.example
    settings = load_settings({})
    assert (settings.port, settings.onec_service_root, settings.onec_timeout, settings.repairs_api_url) == (
        8000,
        "mcp",
        120.0,
        None,
    )


def test_an_empty_environment_variable_does_not_hide_the_env_files_value(monkeypatch: pytest.MonkeyPatch) -> None:
    write_env_file("MCP_ONEC_USERNAME=из-файла\nMCP_ONEC_PASSWORD=s3cret\nMCP_PORT=1002\n")
    for name in ("MCP_ONEC_USERNAME", "MCP_ONEC_PASSWORD", "MCP_PORT"):  # a client config's blank placeholders
        monkeypatch.setenv(name, "")
    settings = load_settings({})
    assert (settings.onec_username, settings.onec_password, settings.port) == ("из-файла", SecretStr("s3cret"), 1002)


def test_an_empty_rpc_path_in_the_environment_still_means_the_service_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_ONEC_RPC_PATH", "")
    assert load_settings({}).onec_rpc_path == ""


def test_an_empty_rpc_path_in_the_env_file_is_not_set_and_a_slash_is_the_service_root() -> None:
    write_env_file("MCP_ONEC_RPC_PATH=\n")  # a line `cp env.example .env` may leave
    assert load_settings({}).onec_rpc_path == "rpc"
    write_env_file("MCP_ONEC_RPC_PATH=/\n")
    assert load_settings({}).onec_rpc_path == ""


def test_a_copied_env_example_does_not_wipe_the_1c_login_the_environment_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[1] / "env.example"
    write_env_file(example.read_text(encoding="utf-8"))  # cp env.example .env, as the README says
    monkeypatch.setenv("MCP_ONEC_URL", "http://server/base")
    monkeypatch.setenv("MCP_ONEC_USERNAME", "mcp_user")
    monkeypatch.setenv("MCP_ONEC_PASSWORD", "s3cret")
    settings = load_settings({})
    assert (settings.onec_url, settings.onec_username, settings.onec_password) == (
        "http://server/base",
        "mcp_user",
        SecretStr("s3cret"),
    )
    assert (settings.onec_service_root, settings.onec_rpc_path) == ("mcp", "rpc")
    assert [settings.origin(field) for field in ("onec_url", "onec_username", "onec_password")] == ["environment"] * 3


# --- where each value came from -----------------------------------------------------------------


def test_origin_names_the_strongest_source_of_each_value(monkeypatch: pytest.MonkeyPatch) -> None:
    write_env_file(
        "MCP_ONEC_USERNAME=из-файла\nMCP_ONEC_PASSWORD=s3cret\nMCP_PORT=1002\nMCP_ONEC_TIMEOUT=\nAPI_URL=http://r\n"
    )
    monkeypatch.setenv("MCP_SERVER_PORT", "1001")  # another spelling of MCP_PORT
    monkeypatch.setenv("MCP_ONEC_URL", "http://server/base")
    monkeypatch.setenv("MCP_ONEC_CA_BUNDLE", "")  # empty: not set
    settings = load_settings({"onec_url": "http://flag/base", "log_level": "DEBUG"})
    origins = {
        field: settings.origin(field)
        for field in ("onec_url", "log_level", "port", "onec_username", "onec_password", "repairs_api_url")
    }
    assert origins == {
        "onec_url": "flag",
        "log_level": "flag",
        "port": "environment",
        "onec_username": ".env",
        "onec_password": ".env",
        "repairs_api_url": ".env",
    }
    assert settings.origin("onec_timeout") == "default"  # its line in .env is empty
    assert settings.origin("onec_ca_bundle") == "default"  # its variable is empty
    assert settings.origin("onec_verify_tls") == "default"


def test_origin_names_the_env_file_it_was_read_from(tmp_path: Path) -> None:
    env_file = write_env_file("MCP_ONEC_USERNAME=u\n", tmp_path / "prod.env")
    assert load_settings({}, env_file=env_file).origin("onec_username") == str(env_file)


def test_a_replaced_value_is_noted_with_what_replaced_it() -> None:
    settings = load_settings({"onec_url": "http://server/base/hs/mcp"})
    demo = settings.replaced("demo", onec_url="http://127.0.0.1:1/demo", onec_username="demo")
    assert (demo.onec_url, demo.origin("onec_url"), demo.origin("onec_username")) == (
        "http://127.0.0.1:1/demo",
        "demo",
        "demo",
    )
    assert settings.adjustments and demo.adjustments == ()  # the corrected URL is no longer used
    assert settings.origin("onec_url") == "flag"


# --- a 1C URL pasted with the service path ------------------------------------------------------


@pytest.mark.parametrize(
    "suffix", ["/hs/mcp", "/hs/mcp/", "/hs/mcp/rpc", "/hs/mcp/rpc/", "/hs/mcp/manifest", "/hs/mcp/health"]
)
def test_a_url_ending_with_the_service_path_is_used_without_it_and_the_adjustment_said(
    suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_ONEC_URL", f"http://srv/base{suffix}")
    settings = load_settings({})
    assert settings.onec_url == "http://srv/base"
    assert settings.onec_base_url == "http://srv/base/hs/mcp"
    written = suffix.rstrip("/")
    assert settings.adjustments == (
        f"MCP_ONEC_URL ends with {written}, which the proxy adds itself: using http://srv/base; "
        "set MCP_ONEC_URL=http://srv/base",
    )


def test_a_url_with_a_custom_root_and_rpc_path_is_recognised_by_them() -> None:
    custom = {"onec_service_root": "iikona-mcp", "onec_rpc_path": "api/v1"}
    settings = load_settings({"onec_url": "https://srv/base/hs/iikona-mcp/api/v1", **custom})
    assert settings.onec_url == "https://srv/base"


def test_a_url_without_the_service_path_has_no_adjustment() -> None:
    settings = load_settings({"onec_url": "http://srv/base/"})
    assert (settings.onec_url, settings.adjustments) == ("http://srv/base", ())


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://srv/base/hs/iikona-mcp/rpc", "set MCP_ONEC_URL=http://srv/base and MCP_ONEC_SERVICE_ROOT=iikona-mcp"),
        ("http://srv/base/hs/MCP", "set MCP_ONEC_URL=http://srv/base and MCP_ONEC_SERVICE_ROOT=MCP"),
        ("http://srv/base/hs/mcp/api", "set MCP_ONEC_URL=http://srv/base and MCP_ONEC_RPC_PATH=api"),
    ],
)
def test_a_url_ending_with_another_services_path_is_refused_saying_what_to_write(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"onec_url": url})
    message = str(caught.value)
    assert message.startswith("Invalid setting MCP_ONEC_URL: ends with /hs/") and message.endswith(words)


def test_a_bases_file_url_with_the_service_path_is_used_without_it(tmp_path: Path) -> None:
    bases_file = tmp_path / "bases.toml"
    bases_file.write_text('[bases.erp]\nurl = "http://srv/erp/hs/mcp/rpc"\n', encoding="utf-8")
    [erp] = load_bases(load_settings({"bases_file": bases_file}))
    assert erp.settings.onec_base_url == "http://srv/erp/hs/mcp"


def test_a_blank_token_is_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_AUTH_TOKEN", "   ")
    assert load_settings({}).auth_token is None
    assert load_settings({"auth_token": ""}).auth_token is None


# --- the env file itself ------------------------------------------------------------------------


def test_a_utf16_env_file_is_one_clear_error_naming_it() -> None:
    write_env_file("MCP_ONEC_URL=http://server/base\n", encoding="utf-16")  # PowerShell 5.1: UTF-16 LE with a BOM
    with pytest.raises(ConfigError) as caught:
        load_settings({})
    message = str(caught.value)
    assert message.startswith(".env is UTF-16, not UTF-8") and "Set-Content -Encoding utf8" in message
    assert "\n" not in message


def test_a_utf16_env_file_without_a_bom_is_recognised(tmp_path: Path) -> None:
    env_file = write_env_file("MCP_ONEC_URL=http://server/base\n", tmp_path / "proxy.env", encoding="utf-16-le")
    with pytest.raises(ConfigError, match=r"proxy\.env is UTF-16, not UTF-8"):
        load_settings({}, env_file=env_file)


def test_a_cp1251_env_file_is_one_clear_error_naming_it() -> None:
    write_env_file("MCP_SERVER_NAME=Бухгалтерия\n", encoding="cp1251")  # Notepad's "ANSI" on a Russian Windows
    with pytest.raises(ConfigError) as caught:
        load_settings({})
    message = str(caught.value)
    assert message.startswith(".env is in an 8-bit code page (cp1251?), not UTF-8") and "save it as UTF-8" in message


def test_a_utf8_env_file_with_a_bom_is_read_from_its_first_key() -> None:
    write_env_file("MCP_SERVER_NAME=Бухгалтерия\nMCP_PORT=1002\n", encoding="utf-8-sig")
    settings = load_settings({})
    assert (settings.server_name, settings.port) == ("Бухгалтерия", 1002)


def test_a_named_env_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--env-file .*missing\.env does not exist"):
        load_settings({}, env_file=tmp_path / "missing.env")


def test_a_named_env_file_that_is_a_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_settings({}, env_file=tmp_path)


def test_the_default_env_file_may_be_absent_or_a_virtualenv_folder() -> None:
    assert load_settings({}).port == 8000
    Path(".env").mkdir()  # `python -m venv .env` is common
    assert load_settings({}).port == 8000


# --- names in messages, and reproducing settings in a child process -----------------------------


def test_a_bad_value_names_every_spelling_of_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SERVER_PORT", "many")
    with pytest.raises(ConfigError, match=r"^Invalid setting MCP_PORT/MCP_SERVER_PORT: "):
        load_settings({})


def test_env_name_is_the_name_a_user_sets() -> None:
    assert [env_name(field) for field in ("host", "repairs_api_url", "onec_timeout")] == [
        "MCP_HOST",
        "MCP_REPAIRS_API_URL",
        "MCP_ONEC_TIMEOUT",
    ]
    assert {"MCP_HOST", "MCP_SERVER_HOST", "API_URL", "EVOLUTION_PROJECT_ID", "MCP_ONEC_TIMEOUT"} <= ENV_NAMES


def test_as_environment_drops_the_base_settings_and_reproduces_these(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        onec_url="http://server/base",
        onec_password="s3cret",
        onec_rpc_path="",
        port=9001,
        allowed_hosts=["a.local", "b.local"],
    )
    base = {"PATH": "/bin", "MCP_PORT": "1", "mcp_unknown": "x", "API_URL": "http://other", "MCP_SERVER_HOST": "h"}
    env = as_environment(settings, base)
    assert env["PATH"] == "/bin"
    assert not {"mcp_unknown", "API_URL", "MCP_SERVER_HOST"} & env.keys()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings({}, env_file=None).model_dump() == settings.model_dump()


# --- exposure -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("proxy.example.com", False)],
)  # fmt: skip
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_serving_beyond_loopback_needs_a_token_or_an_explicit_yes() -> None:
    with pytest.raises(ConfigError, match=r"^MCP_HOST=0\.0\.0\.0 serves other machines, but MCP_AUTH_TOKEN is not set"):
        require_safe_exposure(load_settings({"host": "0.0.0.0", "allowed_hosts": "*"}))
    require_safe_exposure(load_settings({"host": "0.0.0.0", "auth_token": "a-long-random-token"}))
    require_safe_exposure(load_settings({"host": "0.0.0.0", "allow_unauthenticated": True}))
    require_safe_exposure(load_settings({"host": "127.0.0.1"}))


def test_env_example_lists_every_setting() -> None:
    example = (Path(__file__).resolve().parents[1] / "env.example").read_text(encoding="utf-8")
    listed = {line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line}
    missing = [name for name in (env_name(field) for field in Settings.model_fields) if name not in listed]
    assert missing == []


def test_a_shared_catalog_in_passthrough_mode_needs_a_service_account() -> None:
    settings = Settings(_env_file=None, onec_auth="passthrough", onec_catalog="shared")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"MCP_ONEC_CATALOG=shared .* MCP_ONEC_USERNAME is not set"):
        require_consistent_identity(settings)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"oauth_issuer": "https://idp", "auth_token": "t"}, "MCP_AUTH_TOKEN and MCP_OAUTH_ISSUER are both set"),
        ({"oauth_issuer": "https://idp"}, "MCP_OAUTH_AUDIENCE is not"),
        ({"oauth_audience": "x"}, "MCP_OAUTH_ISSUER is not"),
        ({"policy_file": "p.toml"}, r"MCP_POLICY_FILE=p.toml .* MCP_OAUTH_ISSUER is not set"),
        ({"oauth_issuer": "idp.example", "oauth_audience": "x"}, "MCP_OAUTH_ISSUER must be an http"),
    ],
)
def test_identity_settings_that_do_not_fit_together_are_one_line(values: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        require_consistent_identity(Settings(_env_file=None, **values))  # type: ignore[call-arg]
