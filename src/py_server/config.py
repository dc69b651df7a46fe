"""Settings: read once, at the edge, into one frozen object.

Sources, weakest first: defaults, `MCP_*` environment variables, the `.env` file, CLI flags.
The local extras also accept the original repair-history server's names (`API_URL`, `KEY_ID`,
...), so an existing `.env` of that server works unchanged.

    settings = load_settings({"port": 9000})        # CLI flags as overrides
    settings.onec_password.get_secret_value()        # secrets are SecretStr
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

DEFAULT_ENV_FILE = Path(".env")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _alias(*names: str) -> Any:
    return Field(None, validation_alias=AliasChoices(*names))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MCP_",
        env_file=DEFAULT_ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",  # an existing .env of the original server carries keys we do not use
        frozen=True,
        populate_by_name=True,
    )

    # --- 1C -------------------------------------------------------------------------------
    onec_url: str | None = None
    onec_username: str = ""
    onec_password: SecretStr = SecretStr("")
    onec_service_root: str = "mcp"
    onec_rpc_path: str = "rpc"
    onec_timeout: float = Field(120.0, gt=0)
    onec_connect_timeout: float = Field(10.0, gt=0)
    onec_max_concurrency: int = Field(4, ge=1, le=256)
    # Seconds a call may wait for one of the MCP_ONEC_MAX_CONCURRENCY slots before "1C is busy".
    onec_queue_timeout: float = Field(60.0, gt=0)
    # A 1C answer larger than this is refused without being read into memory.
    onec_max_response_mb: float = Field(64.0, gt=0)
    # An explicit HTTP proxy for 1C; HTTP(S)_PROXY and the system proxy are ignored for 1C.
    onec_http_proxy: str | None = None
    catalog_ttl: float = Field(60.0, ge=1)

    # --- HTTP front-end -------------------------------------------------------------------
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("host", "MCP_HOST", "MCP_SERVER_HOST"))
    port: int = Field(8000, ge=0, le=65535, validation_alias=AliasChoices("port", "MCP_PORT", "MCP_SERVER_PORT"))
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

    # --- general --------------------------------------------------------------------------
    log_level: LogLevel = "INFO"
    server_name: str = "onec-mcp-proxy"
    demo: bool = False

    # --- local extras: vehicle repairs API ------------------------------------------------
    repairs_api_url: str | None = _alias("repairs_api_url", "MCP_REPAIRS_API_URL", "API_URL")
    repairs_api_key: SecretStr | None = _alias("repairs_api_key", "MCP_REPAIRS_API_KEY", "API_KEY")
    repairs_api_timeout: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("repairs_api_timeout", "MCP_REPAIRS_API_TIMEOUT")
    )

    # --- local extras: compliance_rag -----------------------------------------------------
    rag_backend: Literal["auto", "managed", "local", "off"] = "auto"
    rag_key_id: str | None = _alias("rag_key_id", "MCP_RAG_KEY_ID", "KEY_ID")
    rag_key_secret: SecretStr | None = _alias("rag_key_secret", "MCP_RAG_KEY_SECRET", "KEY_SECRET")
    rag_auth_url: str = Field(
        "https://iam.api.cloud.ru/api/v1/auth/token",
        validation_alias=AliasChoices("rag_auth_url", "MCP_RAG_AUTH_URL", "AUTH_URL"),
    )
    # "iam": JSON {keyId, secret} (documented); "openid": form-encoded client credentials (legacy);
    # "auto": "openid" when the auth URL is an OpenID token endpoint, else "iam".
    rag_auth_style: Literal["auto", "iam", "openid"] = "auto"
    rag_grant_type: str = "client_credentials"
    rag_retrieve_url: str = Field(
        "https://{kb_id}.managed-rag.inference.cloud.ru/api/v2/retrieve",
        validation_alias=AliasChoices("rag_retrieve_url", "MCP_RAG_RETRIEVE_URL", "RETRIEVE_URL_TEMPLATE"),
    )
    rag_knowledge_base_id: str | None = _alias(
        "rag_knowledge_base_id", "MCP_RAG_KNOWLEDGE_BASE_ID", "KNOWLEDGE_BASE_ID"
    )
    rag_knowledge_base_version: str = Field(
        "latest",
        validation_alias=AliasChoices(
            "rag_knowledge_base_version", "MCP_RAG_KNOWLEDGE_BASE_VERSION", "KNOWLEDGE_BASE_VERSION_ID"
        ),
    )
    rag_retrieve_limit: int = Field(
        3, ge=1, le=50, validation_alias=AliasChoices("rag_retrieve_limit", "MCP_RAG_RETRIEVE_LIMIT", "RETRIEVE_LIMIT")
    )
    rag_project_id: str | None = _alias("rag_project_id", "MCP_RAG_PROJECT_ID", "EVOLUTION_PROJECT_ID")
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
        # Strongest first: CLI flags, then the .env file, then the process environment.
        return init_settings, dotenv_settings, env_settings

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
        "rag_project_id", "kb_dir", "kb_index", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `MCP_AUTH_TOKEN=` in a .env means "no token", not "the empty token".
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator("onec_service_root", "onec_rpc_path")
    @classmethod
    def _path_part(cls, value: str) -> str:
        return value.strip().strip("/")

    @field_validator("allowed_origins", "allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @property
    def onec_base_url(self) -> str | None:
        """`{MCP_ONEC_URL}/hs/{MCP_ONEC_SERVICE_ROOT}`: credentials never appear in it."""
        if self.onec_url is None:
            return None
        return f"{self.onec_url}/hs/{self.onec_service_root}"


def env_name(field: str) -> str:
    """The environment variable a user sets for `field` (for error messages)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        if names:
            return names[0]
    return f"MCP_{field.upper()}"


def load_settings(overrides: dict[str, Any] | None = None, *, env_file: Path | None = DEFAULT_ENV_FILE) -> Settings:
    """Build Settings from the environment, the .env file and `overrides` (CLI flags, strongest).

    Raises:
        ConfigError: one line that names the bad setting and says what is wrong.
    """
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        settings = Settings(_env_file=env_file, **given)  # type: ignore[call-arg]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = env_name(field) if field in Settings.model_fields else field
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"Invalid setting {name}: {message}") from None
    logging.getLogger(__name__).debug("settings loaded (env file: %s)", env_file)
    return settings


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
    for field, info in Settings.model_fields.items():
        names.add(f"MCP_{field.upper()}")
        if isinstance(info.validation_alias, AliasChoices):
            names.update(c for c in info.validation_alias.choices if isinstance(c, str) and c.isupper())
    return frozenset(names)


ENV_NAMES = _env_names()
"""Every environment variable Settings reads (MCP_* and the original server's names)."""


def as_environment(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """`base` without any setting of its own, plus the MCP_* variables that reproduce `settings`
    in a child process (how tests and bench/ start `onec-mcp-proxy stdio`)."""
    env = {key: value for key, value in base.items() if key not in ENV_NAMES}
    for field, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        env[f"MCP_{field.upper()}"] = str(value)
    return env
