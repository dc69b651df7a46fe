"""MCP_BASES_FILE: one base from the MCP_ONEC_* settings, or several from a TOML file, each checked
to a one-line error naming the file, the base and the key, with passwords from named variables."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from py_server.bases import DEFAULT_BASE, MAX_BASES, BaseConfig, load_bases, validate_base_name
from py_server.config import Settings, load_settings
from py_server.errors import ConfigError

SECRET = "Pa$$w0rd-erp"
ERP = '[bases.erp]\nurl = "http://s"\n'
TWO_BASES = """
[bases.erp]
url = "http://srv/erp/"
username = "mcp"
password_env = "ERP_1C_PASSWORD"
service_root = "/mcp_erp/"
rpc_path = "call"
timeout = 300
max_concurrency = 8
read_only = true
tools_deny = ["execute_*"]

[bases.zup]
url = "http://srv/zup"
"""


def settings_for(path: Path | None, **values: Any) -> Settings:
    return Settings(_env_file=None, bases_file=path, **values)  # type: ignore[call-arg]


def write(tmp_path: Path, text: str, *, name: str = "bases.toml", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None, **values: Any) -> tuple[BaseConfig, ...]:
    path = write(tmp_path, text)
    return load_bases(settings_for(path, **values), environ={"ERP_1C_PASSWORD": SECRET} if environ is None else environ)


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None, **values: Any) -> str:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text, environ, **values)
    message = str(error.value)
    prefix = f"MCP_BASES_FILE {tmp_path / 'bases.toml'}: "
    assert "\n" not in message and message.startswith(prefix), message
    assert SECRET not in message
    return message.removeprefix(prefix)


# --- one base, or several ---------------------------------------------------------------


def test_without_a_bases_file_the_settings_are_the_default_base() -> None:
    settings = settings_for(None, onec_url="http://srv/base", onec_username="u", onec_password="p")
    assert load_bases(settings, environ={}) == (BaseConfig(DEFAULT_BASE, settings),)
    assert load_bases(settings)[0].settings is settings


def test_two_bases_in_file_order_with_their_own_connection_and_the_global_defaults(tmp_path: Path) -> None:
    erp, zup = load(tmp_path, TWO_BASES, onec_timeout=30, onec_max_concurrency=2, tools_deny=["drop_*"])
    assert (erp.name, zup.name) == ("erp", "zup")
    # erp's own keys, through Settings' validators (trailing "/" and slashes stripped).
    assert erp.settings.onec_url == "http://srv/erp"
    assert erp.settings.onec_base_url == "http://srv/erp/hs/mcp_erp"
    assert erp.settings.onec_username == "mcp"
    assert erp.settings.onec_password.get_secret_value() == SECRET
    assert erp.settings.onec_rpc_path == "call"
    assert (erp.settings.onec_timeout, erp.settings.onec_max_concurrency) == (300, 8)
    assert erp.settings.read_only is True
    assert erp.settings.tools_deny == ["execute_*"]  # a base's list replaces the global one
    # zup: only a url; everything else from the global settings.
    assert zup.settings.onec_url == "http://srv/zup"
    assert zup.settings.onec_username == ""
    assert zup.settings.onec_password.get_secret_value() == ""
    assert (zup.settings.onec_service_root, zup.settings.onec_rpc_path) == ("mcp", "rpc")
    assert (zup.settings.onec_timeout, zup.settings.onec_max_concurrency) == (30, 2)
    assert zup.settings.read_only is False
    assert zup.settings.tools_deny == ["drop_*"]
    for base in (erp, zup):
        assert base.settings.bases_file == tmp_path / "bases.toml"
        assert isinstance(base.settings, Settings) and type(base.settings) is Settings


def test_single_base_connection_settings_are_not_used_and_a_warning_names_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="py_server.bases"):
        _, zup = load(tmp_path, TWO_BASES, onec_url="http://old/base", onec_password="old-secret")
    assert zup.settings.onec_url == "http://srv/zup" and zup.settings.onec_password.get_secret_value() == ""
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "MCP_BASES_FILE is set, so MCP_ONEC_URL, MCP_ONEC_PASSWORD are not used" in warnings[0]
    assert "MCP_ONEC_USERNAME" not in warnings[0] and "old-secret" not in warnings[0]


def test_no_warning_without_single_base_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="py_server.bases"):
        load(tmp_path, TWO_BASES)
    assert not caplog.records


def test_username_without_password_env_means_an_empty_password(tmp_path: Path) -> None:
    (base,) = load(tmp_path, '[bases.erp]\nurl = "http://srv/erp"\nusername = "mcp"\n', environ={})
    assert base.settings.onec_username == "mcp"
    assert base.settings.onec_password.get_secret_value() == ""


def test_a_string_is_one_pattern_and_lists_go_to_their_settings(tmp_path: Path) -> None:
    text = '[bases.erp]\nurl = "http://srv/erp"\ntools_allow = "get_*"\nread_only_tools = ["run_report"]\n'
    (base,) = load(tmp_path, text)
    assert base.settings.tools_allow == ["get_*"] and base.settings.read_only_tools == ["run_report"]


def test_a_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, '[bases.erp]\nurl = "http://srv/erp"\n', encoding="utf-8-sig")
    assert [base.name for base in load_bases(settings_for(path), environ={})] == ["erp"]


def test_the_env_file_is_kept_on_each_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCP_BASES_FILE", raising=False)
    env_file = write(tmp_path, f"MCP_BASES_FILE={write(tmp_path, TWO_BASES)}\n", name="site.env")
    settings = load_settings(env_file=env_file)
    for base in load_bases(settings, environ={"ERP_1C_PASSWORD": SECRET}):
        assert base.settings.env_file == env_file


# --- passwords ------------------------------------------------------------------------


def dotenv_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: str) -> Settings:
    monkeypatch.delenv("MCP_BASES_FILE", raising=False)
    path = write(tmp_path, TWO_BASES)
    env_file = write(tmp_path, f"MCP_BASES_FILE={path}\n{lines}", name="site.env")
    return load_settings(env_file=env_file)


def test_password_from_the_env_file_when_not_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dotenv_settings(tmp_path, monkeypatch, f"ERP_1C_PASSWORD={SECRET}\n")
    erp, _ = load_bases(settings, environ={})
    assert erp.settings.onec_password.get_secret_value() == SECRET


def test_the_environment_wins_over_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = dotenv_settings(tmp_path, monkeypatch, "ERP_1C_PASSWORD=from-dotenv\n")
    erp, _ = load_bases(settings, environ={"ERP_1C_PASSWORD": "from-environment"})
    assert erp.settings.onec_password.get_secret_value() == "from-environment"


def test_the_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_1C_PASSWORD", SECRET)  # any name the admin chose, not only MCP_*
    erp, _ = load_bases(settings_for(write(tmp_path, TWO_BASES)))
    assert erp.settings.onec_password.get_secret_value() == SECRET


def test_an_empty_password_is_allowed_when_the_variable_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(tmp_path, TWO_BASES, environ={"ERP_1C_PASSWORD": ""})[0].settings.onec_password.get_secret_value() == ""
    settings = dotenv_settings(tmp_path, monkeypatch, "ERP_1C_PASSWORD=\n")
    assert load_bases(settings, environ={})[0].settings.onec_password.get_secret_value() == ""


def test_a_password_variable_set_nowhere_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(tmp_path, TWO_BASES, environ={})
    assert message == (
        "[bases.erp] password_env: the variable ERP_1C_PASSWORD is not set in the environment "
        "(and no .env file was read); set it to the base's 1C password"
    )
    settings = dotenv_settings(tmp_path, monkeypatch, "OTHER=1\nERP_1C_PASSWORD\n")  # no "=": not set
    with pytest.raises(ConfigError, match=r"\[bases\.erp\] password_env: .* ERP_1C_PASSWORD .* or in .*site\.env"):
        load_bases(settings, environ={})


def test_the_password_never_shows(tmp_path: Path) -> None:
    erp, _ = load(tmp_path, TWO_BASES)
    assert SECRET not in repr(erp) and SECRET not in str(erp)
    assert isinstance(erp.settings.onec_password, SecretStr)
    # A password written where the variable's name goes is refused without being quoted.
    text = f'[bases.erp]\nurl = "http://srv/erp"\npassword_env = "{SECRET}"\n'
    assert config_error(tmp_path, text).startswith("[bases.erp] password_env must be the name of an environment")
    # Nor is a password in the URL.
    text = f'[bases.erp]\nurl = "http://mcp:{SECRET}@srv/erp"\n'
    assert config_error(tmp_path, text) == "[bases.erp] url must not contain credentials; set username and password_env"
    text = f'[bases.erp]\nurl = "ftp://mcp:{SECRET}@srv/erp"\n'
    assert SECRET not in config_error(tmp_path, text)


# --- a bad file: one line, naming the base and the key -------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("   \n", "the file is empty"),
        ("[bases.erp\nurl = 1", "not valid TOML: "),
        ('[bases.erp]\nurl = "http://srv/erp"\nurl = "x"\n', "(at line 3, column"),
        ("[bases]\n", "the file lists no bases"),
        ('claim = "x"\n', "unknown key 'claim'; the file holds only [bases.NAME] tables"),
        ('[erp]\nurl = "http://srv/erp"\n', "unknown table [erp]; a base goes in [bases.erp]"),
        ('[base.erp]\nurl = "http://srv/erp"\n', "unknown table [base] (did you mean 'bases'?)"),
        ('bases = "erp"\n', "bases must be a set of [bases.NAME] tables, not a string"),
        ('[[bases]]\nurl = "http://srv/erp"\n', "bases must be a set of [bases.NAME] tables, not an array"),
        ('[bases]\nerp = "http://srv/erp"\n', "[bases.erp] must be a table (url = "),
        ("[bases.erp]\nusername = 'mcp'\n", "[bases.erp] url is missing"),
        ("[bases.erp]\nurl = ''\n", "[bases.erp] url is empty"),
        ("[bases.erp]\nurl = 42\n", "[bases.erp] url must be a string, not a number"),
        ("[bases.erp]\nurl = 'srv/erp'\n", "[bases.erp] url must be an http:// or https:// URL, got 'srv/erp'"),
        (ERP + 'username = ["a"]\n', "[bases.erp] username must be a string, not an array"),
        (ERP + "service_root = 1\n", "[bases.erp] service_root must be a string"),
        (ERP + "rpc_path = true\n", "[bases.erp] rpc_path must be a string, not a boolean"),
        (ERP + "password_env = 5\n", "[bases.erp] password_env must be a string"),
        (ERP + 'timeout = "120"\n', '[bases.erp] timeout must be a number of seconds, not "120"'),
        (ERP + "timeout = true\n", "[bases.erp] timeout must be a number of seconds, not true"),
        (ERP + "timeout = nan\n", "[bases.erp] timeout must be a number of seconds"),
        (ERP + "timeout = -1\n", "[bases.erp] timeout should be greater than 0 (got -1)"),
        (ERP + "timeout = 0\n", "[bases.erp] timeout should be greater than 0 (got 0)"),
        (ERP + "max_concurrency = 2.5\n", "[bases.erp] max_concurrency must be a whole number"),
        (ERP + "max_concurrency = 0\n", "[bases.erp] max_concurrency should be greater than"),
        (ERP + "max_concurrency = 257\n", "[bases.erp] max_concurrency should be less than"),
        (ERP + 'read_only = "yes"\n', '[bases.erp] read_only must be true or false, not "yes"'),
        (ERP + "tools_deny = 1\n", "[bases.erp] tools_deny must be a list of glob patterns"),
        (ERP + 'prompts_allow = [""]\n', "[bases.erp] prompts_allow[0] must be a glob pattern"),
        (ERP + 'resources_deny = ["a", 2]\n', "[bases.erp] resources_deny[1] must be a glob"),
        (
            '[bases.erp]\nurl = "http://s"\ntools_deny = "drop_*, execute_*"\n',
            '[bases.erp] tools_deny is one string with commas; write a list: tools_deny = ["drop_*", "execute_*"]',
        ),
        (ERP + "timout = 5\n", "[bases.erp] unknown key 'timout' (did you mean 'timeout'?)"),
        (ERP + "[bases.erp.extra]\n", "[bases.erp] unknown key 'extra'; the keys are url,"),
        (ERP + 'password = "x"\n', "[bases.erp] password: a password is not written in"),
        ('[bases.ERP]\nurl = "http://a"\n' + ERP, "[bases.erp]: the name differs from [bases.ERP] only in case"),
        ('[bases."бух"]\nurl = "http://s"\n', '[bases."бух"]: the name may hold only ASCII letters, digits, _ and -'),
        ("[bases.Бухгалтерия]\nurl = 'http://s'\n", "a base name is ASCII letters, digits, _ and -"),
        ('[bases.erp__2]\nurl = "http://s"\n', "[bases.erp__2]: the name contains '__', the separator"),
        ('[bases.a23456789012345678901]\nurl = "http://s"\n', "the name is 21 characters long; at most 20"),
        ('[bases.""]\nurl = "http://s"\n', '[bases.""]: the name is empty'),
    ],
)
def test_a_bad_file_is_one_line_naming_the_base_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


def test_password_key_says_use_password_env(tmp_path: Path) -> None:
    message = config_error(tmp_path, f'[bases.erp]\nurl = "http://s"\npassword = "{SECRET}"\n')
    assert "use password_env" in message


def test_too_many_bases(tmp_path: Path) -> None:
    text = "".join(f'[bases.b{index}]\nurl = "http://s/b{index}"\n' for index in range(MAX_BASES + 1))
    assert config_error(tmp_path, text) == f"{MAX_BASES + 1} bases; at most {MAX_BASES} are served by one proxy"
    text = "".join(f'[bases.b{index}]\nurl = "http://s/b{index}"\n' for index in range(MAX_BASES))
    assert len(load(tmp_path, text)) == MAX_BASES


def test_the_separator_setting_decides_which_names_clash(tmp_path: Path) -> None:
    assert [base.name for base in load(tmp_path, '[bases.erp__2]\nurl = "http://s"\n', base_separator="--")] == [
        "erp__2"
    ]
    assert "contains '--'" in config_error(tmp_path, '[bases.erp--2]\nurl = "http://s"\n', base_separator="--")


def test_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^MCP_BASES_FILE .*missing\.toml: cannot read it \(No such file"):
        load_bases(settings_for(tmp_path / "missing.toml"), environ={})
    with pytest.raises(ConfigError, match=r"^MCP_BASES_FILE .*: cannot read it"):
        load_bases(settings_for(tmp_path), environ={})  # a folder


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, '[bases.erp]\nurl = "http://srv/бух"\n', encoding="cp1251")
    with pytest.raises(ConfigError, match=r"not UTF-8 \(byte \d+\); save it as UTF-8$"):
        load_bases(settings_for(path), environ={})


# --- base names -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["erp", "ZUP-2024", "a_b", "x" * 20, "0", "a_b-c"])
def test_good_base_names(name: str) -> None:
    validate_base_name(name, "__")


@pytest.mark.parametrize(
    ("name", "separator", "expected"),
    [
        ("", "__", "is empty"),
        ("x" * 21, "__", "21 characters long; at most 20"),
        ("erp base", "__", "only ASCII letters"),
        ("erp.main", "__", "only ASCII letters"),
        ("бух", "__", "only ASCII letters"),
        ("erp__main", "__", "contains '__', the separator between a base's name and a tool's (MCP_BASE_SEPARATOR)"),
        ("erp-main", "-", "contains '-'"),
    ],
)
def test_bad_base_names(name: str, separator: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_base_name(name, separator)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_two_bases_whose_prefixed_names_could_collide_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[bases.erp]\nurl = "http://a/erp"\n[bases.erp_]\nurl = "http://a/erp2"\n')
    assert "[bases.erp] and [bases.erp_]" in message and "MCP_BASE_SEPARATOR" in message


@pytest.mark.parametrize("url", ["mcp:S3cret@srv/erp", "http:/mcp:S3cret@srv/erp", "//mcp:S3cret@srv/erp"])
def test_a_password_in_a_malformed_url_is_never_shown(tmp_path: Path, url: str) -> None:
    message = config_error(tmp_path, f'[bases.erp]\nurl = "{url}"\n')
    assert "S3cret" not in message and "credentials" in message


def test_a_refusal_by_a_bases_own_rule_names_the_bases_file(tmp_path: Path) -> None:
    from py_server.wiring import build_policies

    text = '[bases.erp]\nurl = "http://a/erp"\ntools_deny = ["post_*"]\n[bases.zup]\nurl = "http://a/zup"\n'
    erp, zup = load(tmp_path, text, tools_deny=["drop_*"])
    erp_denial = build_policies(erp.settings, erp.policy_labels).default.check("tools", "post_document")
    zup_denial = build_policies(zup.settings, zup.policy_labels).default.check("tools", "drop_all")
    assert erp_denial is not None and erp_denial.setting.endswith("[bases.erp] tools_deny")
    assert zup_denial is not None and zup_denial.setting == "MCP_TOOLS_DENY"  # the global default applies
