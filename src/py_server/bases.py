"""The 1C bases the proxy serves: one, `default`, from the MCP_ONEC_* settings, or several from the
TOML file of `MCP_BASES_FILE`.

    [bases.erp]                         # the base's name: ASCII letters, digits, _ and -, at most 20
    url = "http://srv/erp"              # required, as MCP_ONEC_URL
    username = "mcp"
    password_env = "ERP_1C_PASSWORD"    # the name of an environment variable, never the password
    service_root = "mcp"                # optional, as MCP_ONEC_SERVICE_ROOT
    rpc_path = "rpc"                    # optional, as MCP_ONEC_RPC_PATH
    timeout = 120                       # optional, seconds, as MCP_ONEC_TIMEOUT
    max_concurrency = 4                 # optional, as MCP_ONEC_MAX_CONCURRENCY
    read_only = false                   # optional, and the lists: tools_allow, tools_deny, resources_*,
    tools_deny = []                     #   prompts_*, read_only_tools (a string is one pattern)

    [bases.zup]
    url = "http://srv/zup"

With a bases file, MCP_ONEC_URL, MCP_ONEC_USERNAME and MCP_ONEC_PASSWORD are not used (a warning
says so when they are set). Every other global setting is the default of each base, and a key a
base sets replaces it (a base's `tools_deny` replaces MCP_TOOLS_DENY; it does not add to it). A
`password_env` variable is read from the process environment, whatever its name, then from the
.env file the settings came from. A file lists at most `MAX_BASES` bases, and no two names that
differ only in case (the URL /bases/<name>/ is case-sensitive, the people who type it are not).

    for base in load_bases(settings):                  # in the file's order
        base.name, base.settings.onec_base_url        # each base's Settings, validated as Settings are
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from .config import Settings
from .errors import ConfigError
from .policy import LIST_KEYS
from .toml_check import boolean, describe, did_you_mean, group_key, parse_toml, pattern_list, read_text, shown

__all__ = ["DEFAULT_BASE", "MAX_BASES", "BaseConfig", "load_bases", "validate_base_name"]

logger = logging.getLogger(__name__)

SETTING = "MCP_BASES_FILE"
DEFAULT_BASE = "default"
MAX_BASES = 50  # each base holds its own connection pool and catalog; more is a mistake, not a plan
NAME_LENGTH = 20
# A base's key → the Settings field it sets; `password_env` is read, then set as onec_password.
POLICY_KEYS = frozenset({*LIST_KEYS, "read_only"})  # named as the bases file's keys in refusals
FIELDS = {
    "url": "onec_url",
    "username": "onec_username",
    "password_env": "onec_password",
    "service_root": "onec_service_root",
    "rpc_path": "onec_rpc_path",
    "timeout": "onec_timeout",
    "max_concurrency": "onec_max_concurrency",
    "read_only": "read_only",
    **{key: key for key in LIST_KEYS},
}
BASE_KEYS = tuple(FIELDS)
_STRING_KEYS = ("url", "username", "password_env", "service_root", "rpc_path")
# The single-base connection settings a bases file replaces.
_SINGLE_BASE = {"onec_url": "MCP_ONEC_URL", "onec_username": "MCP_ONEC_USERNAME", "onec_password": "MCP_ONEC_PASSWORD"}
_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{NAME_LENGTH}}}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class BaseConfig:
    """One 1C base: its name (in /bases/<name>/ and tool prefixes) and its own complete Settings."""

    name: str
    settings: Settings
    # The policy settings this base sets itself -> where, so a refusal names the bases file's key.
    policy_labels: Mapping[str, str] = field(default_factory=dict)


def validate_base_name(name: str, separator: str) -> None:
    """Refuse a base name that cannot be used in URLs and prefixed names.

    Raises:
        ConfigError: one line naming the base and what is wrong with its name.
    """
    problem = _name_problem(name, separator)
    if problem:
        raise ConfigError(f"base name {_quoted(name)} {problem}")


def load_bases(settings: Settings, *, environ: Mapping[str, str] | None = None) -> tuple[BaseConfig, ...]:
    """The bases to serve: `default` from `settings` alone, or those of its bases file in the file's order.

    `environ` (default: the process environment) is where `password_env` variables are looked up
    first; then the .env file of `settings`, if it was read from one.

    Raises:
        ConfigError: one line naming the file and, when it is about one, the base and the key.
    """
    path = settings.bases_file
    if path is None:
        return (BaseConfig(DEFAULT_BASE, settings),)
    tables = _read(path, settings.base_separator)
    _refuse_ambiguous_prefixes(path, list(tables), settings.base_separator)
    passwords = _Passwords(os.environ if environ is None else environ, settings.env_file)
    bases = tuple(
        BaseConfig(
            name,
            _base_settings(settings, table, _fail_in(path, name), passwords),
            {key: f"{SETTING} [bases.{name}] {key}" for key in table if key in POLICY_KEYS},
        )
        for name, table in tables.items()
    )
    unused = [variable for field, variable in _SINGLE_BASE.items() if _is_set(getattr(settings, field))]
    if unused:
        logger.warning(
            "%s is set, so %s %s not used: each base in %s has its own url, username and password_env",
            SETTING, ", ".join(unused), "is" if len(unused) == 1 else "are", path,
        )  # fmt: skip
    return bases


def _refuse_ambiguous_prefixes(path: Path, names: list[str], separator: str) -> None:
    """Where every base is served together, `erp` + `__` + `_x` and `erp_` + `__` + `x` would both be
    `erp___x`: two bases whose prefixes start alike cannot be told apart."""
    for name in names:
        for other in names:
            if other != name and f"{other}{separator}".startswith(f"{name}{separator}"):
                raise ConfigError(
                    f"{SETTING} {path}: [bases.{name}] and [bases.{other}]: {other}{separator}... starts like "
                    f"{name}{separator}..., so their prefixed names could be the same; rename one, or set "
                    "another MCP_BASE_SEPARATOR"
                )


def _read(path: Path, separator: str) -> dict[str, dict[str, Any]]:
    """The file's base tables by name, checked as far as TOML goes: names, the table shape, no extras."""

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{SETTING} {path}: {message}")

    document = parse_toml(
        read_text(path, fail),
        fail,
        empty="it needs a [bases.NAME] table with a url for each 1C base",
        non_ascii_hint="a base name is ASCII letters, digits, _ and -: [bases.buh]",
    )

    for key, value in document.items():
        if key != "bases":
            close = did_you_mean(key, ("bases",))
            if isinstance(value, dict):
                suggestion = close or f"; a base goes in [bases.{group_key(key)}]"
                raise fail(f"unknown table [{group_key(key)}]{suggestion}")
            raise fail(f"unknown key {key!r}{close}; the file holds only [bases.NAME] tables")
    tables = document.get("bases")
    if tables is None or tables == {}:
        raise fail("the file lists no bases; add a [bases.NAME] table with a url for each 1C base")
    if not isinstance(tables, dict):
        raise fail(f"bases must be a set of [bases.NAME] tables, not {describe(tables)}")
    if len(tables) > MAX_BASES:
        raise fail(f"{len(tables)} bases; at most {MAX_BASES} are served by one proxy")
    seen: dict[str, str] = {}
    for name, table in tables.items():
        where = f"[bases.{group_key(name)}]"
        problem = _name_problem(name, separator)
        if problem:
            raise fail(f"{where}: the name {problem}")
        if (other := seen.get(name.lower())) is not None:
            twin = f"[bases.{group_key(other)}]"
            raise fail(f"{where}: the name differs from {twin} only in case; give one of them another name")
        seen[name.lower()] = name
        if not isinstance(table, dict):
            raise fail(f'{where} must be a table (url = "http://server/base" ...), not {describe(table)}')
    return tables


def _base_settings(
    settings: Settings, table: dict[str, Any], fail: Callable[[str], ConfigError], passwords: _Passwords
) -> Settings:
    """`settings` with this base's keys put in, each checked by the same validators as Settings."""
    update: dict[str, Any] = {"onec_url": None, "onec_username": "", "onec_password": SecretStr("")}
    for key, value in table.items():
        if key not in FIELDS:
            if key == "password":
                raise fail("password: a password is not written in this file; use password_env, the name of "
                           "an environment variable that holds it")  # fmt: skip
            raise fail(f"unknown key {key!r}{did_you_mean(key, BASE_KEYS)}; the keys are {', '.join(BASE_KEYS)}")
        update[FIELDS[key]] = _checked(key, value, fail)
    if update["onec_url"] is None:
        raise fail('url is missing; set it to the 1C publication, e.g. url = "http://server/base"')
    if "password_env" in table:
        update["onec_password"] = SecretStr(passwords.get(table["password_env"], fail))
    try:
        checked = _Checked(**update)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        key = next((key for key, name in FIELDS.items() if name == field), field)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Input ")
        # Settings' own messages quote some values (a URL); never a password.
        value = "" if key == "password_env" or "got " in message else f" (got {shown(table.get(key))})"
        raise fail(f"{key} {message}{value}") from None
    for adjustment in checked.adjustments:  # a url pasted with /hs/<root>/<rpc path>: used without it
        logger.warning("%s", fail(adjustment.replace("MCP_ONEC_URL", "url")))
    return settings.model_copy(update={field: getattr(checked, field) for field in update})


def _checked(key: str, value: Any, fail: Callable[[str], ConfigError]) -> Any:
    """One key's value, of the type its TOML key takes; ranges are left to Settings' own validators."""
    if key in _STRING_KEYS:
        if not isinstance(value, str):
            raise fail(f"{key} must be a string, not {describe(value)}")
        if key == "url":
            if not value.strip():
                raise fail('url is empty; set it to the 1C publication, e.g. url = "http://server/base"')
            # Checked before Settings' own check, which would quote the URL, password and all.
            authority = value.partition("://")[2] if "://" in value else value
            if "@" in authority.lstrip("/").split("/", 1)[0] or ("@" in value and "://" not in value):
                raise fail("url must not contain credentials; set username and password_env")
        if key == "password_env" and not _VARIABLE.fullmatch(value):
            # Not quoted: a value that is no variable name may well be the password itself.
            raise fail("password_env must be the name of an environment variable (letters, digits and _, "
                       "e.g. ERP_1C_PASSWORD), not the password")  # fmt: skip
        return value
    if key == "timeout":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise fail(f"timeout must be a number of seconds, not {shown(value)}")
        return value
    if key == "max_concurrency":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"max_concurrency must be a whole number from 1 to 256, not {shown(value)}")
        return value
    if key == "read_only":
        return boolean(key, value, fail)
    return pattern_list(key, value, fail)  # as in MCP_POLICY_FILE


class _Passwords:
    """`password_env` variables: the environment first, then the settings' .env file (read once)."""

    def __init__(self, environ: Mapping[str, str], env_file: Path | None) -> None:
        self._environ = environ
        self._env_file = env_file
        self._dotenv: dict[str, str | None] | None = None

    def get(self, variable: str, fail: Callable[[str], ConfigError]) -> str:
        if (value := self._environ.get(variable)) is not None:
            return value
        if self._env_file is not None and self._env_file.is_file():
            if self._dotenv is None:
                self._dotenv = dotenv_values(self._env_file, encoding="utf-8-sig")
            if (value := self._dotenv.get(variable)) is not None:  # `NAME` with no "=" is not set
                return value
            where = f"in the environment or in {self._env_file}"
        else:
            where = "in the environment (and no .env file was read)"
        raise fail(f"password_env: the variable {variable} is not set {where}; set it to the base's 1C password")


class _Checked(Settings):
    """Settings checked from the given values only: no environment, no .env file, only the validators."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _fail_in(path: Path, name: str) -> Callable[[str], ConfigError]:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"{SETTING} {path}: [bases.{group_key(name)}] {message}")

    return fail


def _name_problem(name: str, separator: str) -> str | None:
    if not _NAME.fullmatch(name):
        if not name:
            return "is empty"
        if len(name) > NAME_LENGTH:
            return f"is {len(name)} characters long; at most {NAME_LENGTH}"
        return "may hold only ASCII letters, digits, _ and - (it is part of URLs and tool names)"
    if separator in name:
        return (
            f"contains {separator!r}, the separator between a base's name and a tool's (MCP_BASE_SEPARATOR): "
            "a prefixed name could not be split; rename the base or choose another separator"
        )
    return None


def _quoted(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


def _is_set(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return bool(value)
