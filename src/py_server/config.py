"""Settings: read once, at the edge, into one frozen object.

Sources, strongest first: CLI flags, `MCP_*` process environment variables, the `.env` file,
defaults. The environment is stronger than `.env` so that a stray `.env` in the working directory
cannot override the `env` block of a Claude Desktop config. An empty value (`MCP_ONEC_USERNAME=`)
is not set and never hides a value from a weaker source. The one exception is an empty
`MCP_ONEC_RPC_PATH` in the environment, which means the service root itself; in `.env`, where
`cp env.example .env` leaves empty lines about, that is written `MCP_ONEC_RPC_PATH=/`.
`Settings.origin(field)` says which source gave a value (for `check`).

From the environment only `MCP_*` names are read: a generic `HOST`, `PORT` or `API_KEY` there
belongs to some other program. The original repair-history server's names (`API_URL`, `KEY_ID`,
...) are read from `.env` only, where a user put them on purpose, so an existing `.env` of that
server works unchanged.

    settings = load_settings({"port": 9000})        # CLI flags as overrides
    settings.onec_password.get_secret_value()        # secrets are SecretStr
    settings.origin("port"), settings.adjustments    # "flag"; what was corrected, to be logged once
"""

from __future__ import annotations

import codecs
import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .errors import ConfigError

DEFAULT_ENV_FILE = Path(".env")
ENV_PREFIX = "MCP_"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
# Personal data the masker finds by pattern, checksum and label, in the order it is applied and
# reported; `all` means these.
PII_KINDS = ("email", "phone", "card", "account", "inn", "snils", "passport")
# Full names, found by a named-entity recogniser: applied and reported after PII_KINDS, so it never
# sees their values. Not part of `all`: it needs the optional extra [pii-names] and costs about a
# millisecond per line where the others cost microseconds, so it is asked for by name (`all,names`).
NAMES_KIND = "names"
# The one setting whose empty value in the environment means something: the service root itself.
# Not in .env: `cp env.example .env` leaves empty lines that must not count; there it is written "/".
_EMPTY_IS_A_VALUE = frozenset({"MCP_ONEC_RPC_PATH"})
# Where a value came from, as `check` names it; the .env file is named by its path.
FLAG, ENVIRONMENT, DEFAULT = "flag", "environment", "default"
# What a pasted 1C URL may end with besides the rpc path: the discovery endpoints a browser shows.
# The paths under the service root that answer discovery, in the order OneCClient asks them.
DISCOVERY_PATHS: tuple[Literal["manifest", "health"], ...] = ("manifest", "health")
_SAVE_AS_UTF8 = "save it as UTF-8 (in PowerShell: Set-Content -Encoding utf8; in Notepad: Save as, Encoding UTF-8)"


def _alias(*names: str) -> Any:
    return Field(None, validation_alias=AliasChoices(*names))


class _VariablesSource(EnvSettingsSource):
    """What the environment and the .env file share: an empty value is not set."""

    _empty_is_a_value: frozenset[str] = frozenset()

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # `MCP_ONEC_SERVICE_ROOT=` in .env keeps the default, and an empty MCP_ONEC_PASSWORD in a client's
        # env block does not hide the one in .env.
        return {
            name: value
            for name, value in super()._load_env_vars().items()
            if value != "" or name.upper() in self._empty_is_a_value
        }


class _EnvironmentSource(_VariablesSource):
    """The process environment, MCP_* names only: a generic HOST or API_KEY there belongs to another program."""

    _empty_is_a_value = _EMPTY_IS_A_VALUE  # set on purpose: nothing else leaves an empty variable about

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in super()._load_env_vars().items() if name.upper().startswith(ENV_PREFIX)}


class _DotEnvFileSource(_VariablesSource, DotEnvSettingsSource):
    """The .env file, every name: MCP_* and the original server's, which a user put there on purpose.
    Every empty line is unset, MCP_ONEC_RPC_PATH= too (`cp env.example .env` leaves them about)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=DEFAULT_ENV_FILE,
        env_file_encoding="utf-8-sig",  # a BOM (PowerShell's "utf8", Notepad's "UTF-8 with BOM") is fine
        extra="ignore",  # an existing .env of the original server carries keys we do not use
        frozen=True,
        populate_by_name=True,
    )

    # --- 1C -------------------------------------------------------------------------------
    onec_username: str = ""
    onec_password: SecretStr = SecretStr("")
    onec_service_root: str = "mcp"
    onec_rpc_path: str = "rpc"
    # After the root and the rpc path: its validator reads them (fields are validated in this order).
    onec_url: str | None = None
    onec_timeout: float = Field(120.0, gt=0)
    # A client that sent a progress token hears from a long 1C call this often (seconds).
    progress_interval: float = Field(10.0, ge=1)
    onec_connect_timeout: float = Field(10.0, gt=0)
    onec_max_concurrency: int = Field(4, ge=1, le=256)
    # Seconds a call may wait for one of the MCP_ONEC_MAX_CONCURRENCY slots before "1C is busy".
    onec_queue_timeout: float = Field(60.0, gt=0)
    # A 1C answer larger than this is refused without being read into memory.
    onec_max_response_mb: float = Field(64.0, gt=0)
    # An explicit HTTP proxy for 1C; HTTP(S)_PROXY and the system proxy are ignored for 1C.
    onec_http_proxy: str | None = None
    # A PEM file of the CA that signed an internal or self-signed HTTPS 1C publication.
    onec_ca_bundle: Path | None = None
    # false skips checking 1C's certificate (logged as a warning at every start).
    onec_verify_tls: bool = True
    catalog_ttl: float = Field(60.0, ge=1)

    # --- identity: who reaches 1C as whom ---------------------------------------------------
    # service: every call goes to 1C as MCP_ONEC_USERNAME. passthrough: each HTTP client sends its
    # own 1C login (X-OneC-Authorization, or Authorization when the proxy needs no bearer token).
    onec_auth: Literal["service", "passthrough"] = "service"
    # Per-identity 1C connections kept at most, and closed after this many idle seconds.
    onec_max_identities: int = Field(100, ge=1)
    onec_identity_idle: float = Field(600.0, gt=0)
    # Calls one identity may run in 1C at once (MCP_ONEC_MAX_CONCURRENCY caps all of them together).
    onec_identity_concurrency: int | None = Field(None, ge=1, le=256)
    # passthrough: per_identity reads each person's own catalog (1C may show people different
    # tools); shared reads one catalog with the service account for everybody.
    onec_catalog: Literal["per_identity", "shared"] = "per_identity"
    # The header that names the signed-in user on calls made with the service account (OAuth).
    onec_user_header: str = "X-MCP-User"
    # OAuth 2.1 resource server: bearer JWTs from this issuer, for this audience, with these scopes.
    oauth_issuer: str | None = None
    oauth_audience: str | None = None
    oauth_scopes: Annotated[list[str], NoDecode] = []
    # Where the issuer's keys are; found through its metadata when unset.
    oauth_jwks_url: str | None = None
    # This server's resource URL in the protected resource metadata; from the request when unset.
    oauth_resource: str | None = None
    oauth_leeway: float = Field(30.0, ge=0, le=300)
    # Rules per group of users (a TOML file), for OAuth users.
    policy_file: Path | None = None

    # --- several bases --------------------------------------------------------------------
    # A TOML file of 1C bases; without it the MCP_ONEC_* settings describe one base, "default".
    bases_file: Path | None = None
    # Between a base's name and a tool or prompt name on the endpoints that serve every base.
    base_separator: str = Field("__", min_length=1, max_length=8)
    # /health/ready: every base must answer (all), or one is enough (any).
    ready_when: Literal["all", "any"] = "all"

    # --- HTTP front-end -------------------------------------------------------------------
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("MCP_HOST", "MCP_SERVER_HOST"))
    port: int = Field(8000, ge=0, le=65535, validation_alias=AliasChoices("MCP_PORT", "MCP_SERVER_PORT"))
    auth_token: SecretStr | None = None
    allowed_origins: Annotated[list[str], NoDecode] = []
    allowed_hosts: Annotated[list[str], NoDecode] = []
    sse_ping_interval: float = Field(15.0, gt=0)
    # Serving beyond loopback without MCP_AUTH_TOKEN is refused unless this says it is meant.
    allow_unauthenticated: bool = False
    # Streamable HTTP sessions idle this long are closed; SSE streams with no message this long too.
    session_idle_timeout: float = Field(1800.0, gt=0)
    # Streamable HTTP sessions + SSE streams + 2026 subscriptions/listen streams open at once.
    max_sessions: int = Field(1000, ge=1)
    # Largest request body the HTTP front-end reads (MiB).
    max_request_mb: float = Field(4.0, gt=0)
    # Seconds a new connection has to send its whole request head before it is closed.
    header_timeout: float = Field(10.0, gt=0)

    # Streamable HTTP without server-side sessions, so any replica behind a load balancer can answer.
    stateless_http: bool = False

    # --- operations -----------------------------------------------------------------------
    # /metrics without the bearer token (for a scraper on a trusted network).
    metrics_public: bool = False
    # stdio: serve /metrics on this port (nothing is served without it).
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # text: human-readable lines; json: one JSON object per line, for log shippers.
    log_format: Literal["text", "json"] = "text"

    # --- general --------------------------------------------------------------------------
    log_level: LogLevel = "INFO"
    server_name: str = "onec-mcp-proxy"
    demo: bool = False

    # --- governance: policy, audit, personal-data masking ---------------------------------
    # Comma-separated glob patterns; deny wins; an empty allow list allows everything.
    tools_allow: Annotated[list[str], NoDecode] = []
    tools_deny: Annotated[list[str], NoDecode] = []
    resources_allow: Annotated[list[str], NoDecode] = []
    resources_deny: Annotated[list[str], NoDecode] = []
    prompts_allow: Annotated[list[str], NoDecode] = []
    prompts_deny: Annotated[list[str], NoDecode] = []
    # Only tools with annotations.readOnlyHint true, or named in MCP_READ_ONLY_TOOLS, are served.
    read_only: bool = False
    read_only_tools: Annotated[list[str], NoDecode] = []
    # One JSON line per tools/call, resources/read and prompts/get: a file path, or "-" for stderr.
    audit_log: str | None = None
    audit_arguments: bool = False
    audit_max_mb: float = Field(10.0, gt=0)
    audit_backups: int = Field(5, ge=0)
    # phone, email, inn, snils, passport, card, account, or all; and names (the extra [pii-names]).
    mask_pii: Annotated[list[str], NoDecode] = []

    # --- local extras: vehicle repairs API ------------------------------------------------
    # The second name of each pair is the original repair-history server's; it is read from .env only.
    repairs_api_url: str | None = _alias("MCP_REPAIRS_API_URL", "API_URL")
    repairs_api_key: SecretStr | None = _alias("MCP_REPAIRS_API_KEY", "API_KEY")
    repairs_api_timeout: float = Field(30.0, gt=0)

    # --- local extras: compliance_rag -----------------------------------------------------
    rag_backend: Literal["auto", "managed", "local", "off"] = "auto"
    rag_key_id: str | None = _alias("MCP_RAG_KEY_ID", "KEY_ID")
    rag_key_secret: SecretStr | None = _alias("MCP_RAG_KEY_SECRET", "KEY_SECRET")
    rag_auth_url: str = Field(
        "https://iam.api.cloud.ru/api/v1/auth/token", validation_alias=AliasChoices("MCP_RAG_AUTH_URL", "AUTH_URL")
    )
    # "iam": JSON {keyId, secret} (documented); "openid": form-encoded client credentials (legacy);
    # "auto": "openid" when the auth URL is an OpenID token endpoint, else "iam".
    rag_auth_style: Literal["auto", "iam", "openid"] = "auto"
    rag_grant_type: str = "client_credentials"
    rag_retrieve_url: str = Field(
        "https://{kb_id}.managed-rag.inference.cloud.ru/api/v2/retrieve",
        validation_alias=AliasChoices("MCP_RAG_RETRIEVE_URL", "RETRIEVE_URL_TEMPLATE"),
    )
    rag_knowledge_base_id: str | None = _alias("MCP_RAG_KNOWLEDGE_BASE_ID", "KNOWLEDGE_BASE_ID")
    rag_knowledge_base_version: str = Field(
        "latest", validation_alias=AliasChoices("MCP_RAG_KNOWLEDGE_BASE_VERSION", "KNOWLEDGE_BASE_VERSION_ID")
    )
    rag_retrieve_limit: int = Field(
        3, ge=1, le=50, validation_alias=AliasChoices("MCP_RAG_RETRIEVE_LIMIT", "RETRIEVE_LIMIT")
    )
    rag_project_id: str | None = _alias("MCP_RAG_PROJECT_ID", "EVOLUTION_PROJECT_ID")
    rag_timeout: float = Field(20.0, gt=0)
    # Local knowledge base (SQLite FTS5): documents folder (default: the shipped one) and index file
    # (default: built in memory at start-up).
    kb_dir: Path | None = None
    kb_index: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Strongest first: CLI flags, the process environment (MCP_* only), the .env file (every name).
        assert isinstance(dotenv_settings, DotEnvSettingsSource)  # it carries the env_file given to Settings()
        dotenv_file = _DotEnvFileSource(
            settings_cls, env_file=dotenv_settings.env_file, env_file_encoding=dotenv_settings.env_file_encoding
        )
        return init_settings, _EnvironmentSource(settings_cls), dotenv_file

    @field_validator("onec_url", "repairs_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        if "@" in rest.split("/", 1)[0]:
            raise ValueError("must not contain credentials; set MCP_ONEC_USERNAME and MCP_ONEC_PASSWORD")
        return value

    @field_validator(
        "auth_token", "repairs_api_key", "rag_key_id", "rag_key_secret", "rag_knowledge_base_id",
        "rag_project_id", "kb_dir", "kb_index", "oauth_issuer", "oauth_audience", "oauth_jwks_url",
        "oauth_resource", "policy_file", "bases_file", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # The sources already drop empty values; this covers blanks ("  ") and empty init kwargs:
        # `auth_token=""` means "no token", not "the empty token".
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator("onec_url")
    @classmethod
    def _publication_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        # Validated before onec_url (declared before it); absent only when they failed themselves.
        root = info.data.get("onec_service_root", "mcp")
        rpc_path = info.data.get("onec_rpc_path", "rpc")
        return publication_url(value, root, rpc_path)

    @model_validator(mode="wrap")
    @classmethod
    def _note_adjustments(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        # Settings are read before logging is set up: what was corrected is kept for `main` to log and
        # `check` to print, once each.
        settings = handler(data)
        written = data.get("onec_url") if isinstance(data, dict) else None
        if isinstance(written, str) and settings.onec_url is not None:
            written = written.strip().rstrip("/")
            if written != settings.onec_url:
                used = settings.onec_url
                settings._adjustments = (
                    f"MCP_ONEC_URL ends with {written[len(used) :]}, which the proxy adds itself: using {used}; "
                    f"set MCP_ONEC_URL={used}",
                )
        return settings

    @field_validator("onec_service_root", "onec_rpc_path")
    @classmethod
    def _path_part(cls, value: str) -> str:
        return value.strip().strip("/")

    @field_validator("allowed_origins", "allowed_hosts", "oauth_scopes", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "tools_allow", "tools_deny", "resources_allow", "resources_deny", "prompts_allow", "prompts_deny",
        "read_only_tools", mode="before",
    )  # fmt: skip
    @classmethod
    def _pattern_list(cls, value: Any) -> Any:
        # Patterns are kept as written (a URI pattern may end in "/").
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("mask_pii", mode="before")
    @classmethod
    def _pii_kinds(cls, value: Any) -> Any:
        items = [item.strip().lower() for item in value.split(",") if item.strip()] if isinstance(value, str) else value
        if not isinstance(items, list):
            return items
        unknown = sorted(set(items) - {*PII_KINDS, "all", NAMES_KIND})
        if unknown:
            kinds = ", ".join((*PII_KINDS, NAMES_KIND))
            raise ValueError(f"unknown kind {', '.join(unknown)}; use any of {kinds} or all")
        kinds = list(PII_KINDS) if "all" in items else [kind for kind in PII_KINDS if kind in items]
        return [*kinds, NAMES_KIND] if NAMES_KIND in items else kinds

    @field_validator("audit_log", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    # The env file these settings were read from: a bases file's `password_env` may name a variable in it.
    _env_file: Path | None = PrivateAttr(default=None)
    # What `load_settings` read from (flags, env file): `origin` asks those sources again when first
    # called (only `check` does), so no other command reads them twice.
    _read_from: tuple[dict[str, Any], Path | None] | None = PrivateAttr(default=None)
    _origins: dict[str, str] | None = PrivateAttr(default=None)  # field -> source, once worked out
    _replacements: dict[str, str] = PrivateAttr(default_factory=dict)  # field -> what `replaced` was for
    _adjustments: tuple[str, ...] = PrivateAttr(default=())

    @property
    def env_file(self) -> Path | None:
        return self._env_file

    @property
    def adjustments(self) -> tuple[str, ...]:
        """What was corrected in the settings as written, one line each (a warning to show once)."""
        return self._adjustments

    def origin(self, field: str) -> str:
        """Where `field`'s value came from: "flag", "environment", the .env file's path, "default", or what a
        copy was made for (`replaced`); "given" for Settings built from values directly (tests, tools)."""
        if field in self._replacements:
            return self._replacements[field]
        if self._origins is None:
            self._origins = _origins(*self._read_from) if self._read_from is not None else {}
        if field in self._origins:
            return self._origins[field]
        return "given" if field in self.model_fields_set else DEFAULT

    def replaced(self, origin: str, **values: Any) -> Settings:
        """A copy with `values` put in as they are (not validated), each noted as coming from `origin`."""
        copy = self.model_copy(update=values)
        copy._replacements = {**self._replacements, **dict.fromkeys(values, origin)}
        if "onec_url" in values:  # what was corrected in the URL as written is no longer what is used
            copy._adjustments = ()
        return copy

    @property
    def identity_concurrency(self) -> int:
        """Calls one identity may run in 1C at once: never more than the total cap."""
        return min(self.onec_identity_concurrency or self.onec_max_concurrency, self.onec_max_concurrency)

    @property
    def oauth_enabled(self) -> bool:
        return self.oauth_issuer is not None

    @property
    def onec_base_url(self) -> str | None:
        """`{MCP_ONEC_URL}/hs/{MCP_ONEC_SERVICE_ROOT}`: credentials never appear in it."""
        if self.onec_url is None:
            return None
        return f"{self.onec_url}/hs/{self.onec_service_root}"


def _variable_names(field: str) -> list[str]:
    """The variable names `field` is read from, preferred first: its aliases, else MCP_<FIELD>."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [f"{ENV_PREFIX}{field.upper()}"]


def env_name(field: str) -> str:
    """The environment variable a user sets for `field` (for error messages)."""
    return _variable_names(field)[0] if field in Settings.model_fields else f"{ENV_PREFIX}{field.upper()}"


def load_settings(overrides: dict[str, Any] | None = None, *, env_file: Path | None = DEFAULT_ENV_FILE) -> Settings:
    """Build Settings from `overrides` (CLI flags, strongest), the environment and the env file.

    `env_file=None` reads no file. The default `.env` may be absent; any other env file must exist.

    Raises:
        ConfigError: one line that names the bad setting (or the unreadable env file) and says what is wrong.
    """
    if env_file is not None:
        _check_env_file(env_file)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        settings = Settings(_env_file=env_file, **given)  # type: ignore[call-arg]
        settings._env_file = env_file
        settings._read_from = (given, env_file)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = _names_of(str(error["loc"][0])) if error["loc"] else "?"
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"Invalid setting {name}: {message}") from None
    logging.getLogger(__name__).debug("settings loaded (env file: %s)", env_file)
    return settings


def _origins(given: Mapping[str, Any], env_file: Path | None) -> dict[str, str]:
    """Field -> the strongest source that has a value for it (a field in none of them has its default).

    Asks the same sources Settings read, in the same order; an empty value is in none of them.
    """
    fields = _fields_by_name()
    sources: list[tuple[str, Mapping[str, Any]]] = [(FLAG, given), (ENVIRONMENT, _EnvironmentSource(Settings)())]
    if env_file is not None:
        dotenv = _DotEnvFileSource(Settings, env_file=env_file, env_file_encoding="utf-8-sig")
        sources.append((str(env_file), dotenv()))
    origins: dict[str, str] = {}
    for origin, values in sources:
        for key in values:
            field = fields.get(key.lower())
            if field is not None:
                origins.setdefault(field, origin)
    return origins


def _fields_by_name() -> dict[str, str]:
    """Every lower-case name a source may give a field's value under (field name, variable names) -> field."""
    names: dict[str, str] = {}
    for field in Settings.model_fields:
        for name in (field, f"{ENV_PREFIX}{field}", *_variable_names(field)):
            names[name.lower()] = field
    return names


def publication_url(url: str, root: str, rpc_path: str) -> str:
    """`url` without the /hs/<root>/<rpc path> (or a part of it) that the proxy adds itself.

    "http://srv/base/hs/mcp/rpc" -> "http://srv/base" when the root is mcp and the rpc path rpc (the root as
    1C spells it: the contract says nothing of case, so a differently spelt one is another service).

    Raises:
        ValueError: the URL ends with another service's path; the message says what to set instead.
    """
    parts = urlsplit(url)
    # ["", "base", "hs", "mcp", "rpc"]: "hs" after a publication name (a publication always has one).
    segments = PurePosixPath(parts.path).parts[1:] if parts.path else ()
    if parts.query or parts.fragment or "hs" not in segments[1:]:
        return url
    at = segments.index("hs", 1)
    service, rest = (segments[at + 1] if len(segments) > at + 1 else root), "/".join(segments[at + 2 :])
    suffix = "/" + "/".join(segments[at:])
    if not url.endswith(suffix):  # "//" or "." in the path: not a URL a user copied from a browser
        return url
    base = url.removesuffix(suffix)
    needed = [f"MCP_ONEC_SERVICE_ROOT={service}"] if service != root else []
    if rest not in ("", rpc_path, *DISCOVERY_PATHS):
        needed.append(f"MCP_ONEC_RPC_PATH={rest}")
    if needed:
        raise ValueError(
            f"ends with {suffix}, which the proxy adds itself: set MCP_ONEC_URL={base} and {' and '.join(needed)}"
        )
    return base


def _names_of(key: str) -> str:
    """Every variable name a user may have written for the setting behind `key`: "MCP_PORT/MCP_SERVER_PORT"."""
    for field in Settings.model_fields:
        names = _variable_names(field)
        if key == field or key in names:
            return "/".join(names)
    return key


def _check_env_file(env_file: Path) -> None:
    """Refuse, with one line, an env file that was asked for but is not there, or is not UTF-8."""
    if not env_file.is_file():
        # The default .env may be absent, or be a virtualenv folder that happens to have that name.
        if env_file == DEFAULT_ENV_FILE:
            return
        problem = "is a folder, not a file" if env_file.is_dir() else "does not exist"
        raise ConfigError(f"--env-file {env_file} {problem}")
    try:
        content = env_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {env_file}: {exc.strerror or exc}") from None
    encoding = _foreign_encoding(content)
    if encoding is not None:
        raise ConfigError(f"{env_file} is {encoding}, not UTF-8: {_SAVE_AS_UTF8}")


def _foreign_encoding(content: bytes) -> str | None:
    """How a settings file that is not UTF-8 is encoded, in words; None for UTF-8 (with or without a BOM)."""
    # PowerShell 5.1 (`>`, Out-File) writes UTF-16 with a BOM; without one, ASCII text in UTF-16 is full of NULs.
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in content:
        return "UTF-16"
    try:
        content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "in an 8-bit code page (cp1251?)"  # Notepad's "ANSI" on a Russian Windows
    return None


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def authenticates_clients(settings: Settings) -> bool:
    """True when every HTTP client must prove who it is: a bearer token, OAuth, or its own 1C login."""
    return settings.auth_token is not None or settings.oauth_enabled or settings.onec_auth == "passthrough"


def require_safe_exposure(settings: Settings) -> None:
    """Refuse to serve HTTP beyond loopback without authentication, unless MCP_ALLOW_UNAUTHENTICATED says so.

    The Host allow-list (MCP_ALLOWED_HOSTS) guards against DNS rebinding; it is not access control.
    """
    if is_loopback_host(settings.host) or authenticates_clients(settings) or settings.allow_unauthenticated:
        return
    raise ConfigError(
        f"MCP_HOST={settings.host} serves other machines, but MCP_AUTH_TOKEN is not set: set MCP_AUTH_TOKEN to a "
        'long random string (python -c "import secrets; print(secrets.token_urlsafe(32))"), '
        "or sign users in (MCP_OAUTH_ISSUER, MCP_ONEC_AUTH=passthrough), "
        "or set MCP_ALLOW_UNAUTHENTICATED=true if this is meant"
    )


def require_consistent_identity(settings: Settings) -> None:
    """The identity settings fit together; else one line that says what to change."""
    if settings.oauth_enabled and settings.auth_token is not None:
        raise ConfigError(
            "MCP_AUTH_TOKEN and MCP_OAUTH_ISSUER are both set: clients send one bearer token, so choose one "
            "(OAuth signs each user in; the static token is one shared credential)"
        )
    if settings.oauth_enabled and not settings.oauth_audience:
        raise ConfigError(
            "MCP_OAUTH_ISSUER is set but MCP_OAUTH_AUDIENCE is not: set it to the audience your identity provider "
            "puts in tokens for this proxy (often its URL, e.g. https://proxy.example.com/mcp)"
        )
    if settings.oauth_audience and not settings.oauth_enabled:
        raise ConfigError("MCP_OAUTH_AUDIENCE is set but MCP_OAUTH_ISSUER is not: set the issuer to turn OAuth on")
    if settings.policy_file is not None and not settings.oauth_enabled:
        raise ConfigError(
            f"MCP_POLICY_FILE={settings.policy_file} maps the groups of signed-in users, but MCP_OAUTH_ISSUER is "
            "not set: turn OAuth on, or use MCP_TOOLS_ALLOW/_DENY and MCP_READ_ONLY for everybody"
        )
    if settings.onec_auth == "passthrough" and settings.onec_catalog == "shared" and not settings.onec_username:
        raise ConfigError(
            "MCP_ONEC_CATALOG=shared reads one catalog for everybody with the service account, but "
            "MCP_ONEC_USERNAME is not set: set it, or use MCP_ONEC_CATALOG=per_identity"
        )
    for name in ("oauth_issuer", "oauth_jwks_url", "oauth_resource"):
        value = getattr(settings, name)
        if value is not None and not value.lower().startswith(("https://", "http://")):
            raise ConfigError(f"{env_name(name)} must be an http:// or https:// URL, got {value!r}")


def require_onec_url(settings: Settings) -> str:
    """The 1C base URL, or a ConfigError that says how to set it."""
    if settings.onec_base_url is None:
        raise ConfigError(
            "MCP_ONEC_URL is not set: set it to your 1C publication, e.g. http://server/base "
            "(or run with --demo to try the built-in demo base)"
        )
    return settings.onec_base_url


def _env_names() -> frozenset[str]:
    names = set()
    for field in Settings.model_fields:
        names.add(f"{ENV_PREFIX}{field.upper()}")
        names.update(_variable_names(field))
    return frozenset(names)


ENV_NAMES = _env_names()
"""Every variable name Settings knows: MCP_* (environment and .env) and the original server's (.env only)."""


def as_environment(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """`base` without any setting of its own, plus the MCP_* variables that reproduce `settings`
    in a child process (how tests and bench/ start `onec-mcp-proxy stdio`)."""
    env = {
        key: value
        for key, value in base.items()
        if not key.upper().startswith(ENV_PREFIX) and key.upper() not in ENV_NAMES
    }
    for field, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        env[f"MCP_{field.upper()}"] = str(value)
    return env
