"""OAuth 2.1 resource server: the check of a bearer JWT.

A token is accepted only when all of this holds:

* It is signed by a key the issuer publishes (its JWKS, found through its metadata, or
  MCP_OAUTH_JWKS_URL), with a public-key algorithm: RS*, PS*, ES* or EdDSA. `none` and HS* are
  refused, since with them anyone who has the public key (or no key at all) could mint tokens. A key
  that names its `alg` verifies only tokens of that algorithm.
* `iss` is the issuer; `aud` contains MCP_OAUTH_AUDIENCE (RFC 8707: a token minted for another
  resource is not good here); `exp` is present and not past; `nbf` and `iat`, when present, are not
  in the future. Clocks may differ by MCP_OAUTH_LEEWAY seconds.
* Every scope of MCP_OAUTH_SCOPES is granted (`scope`, or Entra ID's `scp`). A token that lacks
  one is `insufficient_scope` (403), not `invalid_token` (401), so the client asks for more scope.

The key set is cached. A token with an unknown `kid` fetches it again (the issuer rotated its keys):
one fetch for all the tokens that wait on it, and at most one per `refresh_cooldown` seconds, so
made-up kids cannot turn this server into a flood on the issuer. A set older than `keys_max_age`
is fetched again, so a key the issuer withdrew stops working (if that fetch fails, the old set goes
on serving). A failed first fetch rejects the token with the reason; the next token tries again.

    verifier = JWTVerifier.from_settings(settings)
    access = await verifier.check(token)            # AccessToken; TokenRejected when refused
    user_name(access), groups_of(access, "realm_access.roles")
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from mcp.server.auth.provider import AccessToken

from py_server.config import Settings
from py_server.errors import ConfigError, ProxyError
from py_server.redaction import clip

if TYPE_CHECKING:
    import jwt  # imported where used: PyJWT and its crypto backend load only when OAuth is configured

__all__ = [
    "ALGORITHMS",
    "JWTVerifier",
    "KeySetUnavailable",
    "TokenRejected",
    "discovery_urls",
    "groups_of",
    "user_name",
]

logger = logging.getLogger(__name__)

ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})  # never "oct": a shared secret is not the issuer's to publish
MAX_TOKEN_LENGTH = 16_384  # far above any real access token; refused before any parsing
MAX_DOCUMENT_BYTES = 1_048_576  # metadata and key sets are a few KB
TOKEN_DIGEST_LENGTH = 32
DEFAULT_CLIENT_ID = "oauth"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class TokenRejected(ProxyError):
    """The bearer token is refused.

    `error` is the RFC 6750 code (`invalid_token` or `insufficient_scope`), `status_code` the HTTP
    status that goes with it, `description` one line for the client and the log (never the token).
    """

    def __init__(self, description: str, *, error: str = "invalid_token") -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status_code = 403 if error == "insufficient_scope" else 401


class KeySetUnavailable(ProxyError):
    """The issuer's metadata or key set could not be fetched or used. The message says which URL
    and what failed; a token checked meanwhile is rejected with it."""


@dataclass
class _Key:
    """One signing key of the issuer: its JWK, and the PyJWK built from it for each algorithm."""

    jwk: dict[str, Any]
    kid: str | None
    alg: str | None
    built: dict[str, jwt.PyJWK] = field(default_factory=dict)

    def for_algorithm(self, alg: str) -> jwt.PyJWK:
        import jwt

        if self.alg is not None and self.alg != alg:
            raise TokenRejected(f"the token is signed with {alg}, but the issuer's key {self.kid!r} is for {self.alg}")
        key = self.built.get(alg)
        if key is None:
            try:
                key = jwt.PyJWK(self.jwk, algorithm=alg)
            except jwt.PyJWTError:
                raise TokenRejected(
                    f"the token is signed with {alg}, which the issuer's {self.jwk.get('kty')} key {self.kid!r} "
                    "cannot verify"
                ) from None
            self.built[alg] = key
        return key


class JWTVerifier:
    """Checks bearer JWTs of one issuer for one audience; the MCP SDK's `TokenVerifier` too.

    Args:
        issuer: The issuer URL, exactly as the tokens' `iss` (one trailing slash aside for discovery).
        audience: What `aud` must contain: this server's resource URL or client id at the issuer.
        required_scopes: Scopes every token must grant.
        jwks_url: The key set's URL; skips the metadata discovery when given.
        leeway: Seconds of clock difference allowed for `exp`, `nbf` and `iat`.
        http: The client for the issuer (tests pass one); one is made, and closed by `aclose`, if not.
        refresh_cooldown: At least this many seconds between two fetches caused by unknown kids (the
            first one after start is never delayed).
        keys_max_age: A key set older than this is fetched again before the next check.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        required_scopes: Sequence[str] = (),
        jwks_url: str | None = None,
        leeway: float = 30.0,
        http: httpx.AsyncClient | None = None,
        refresh_cooldown: float = 10.0,
        keys_max_age: float = 900.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.required_scopes = tuple(required_scopes)
        self.leeway = leeway
        self.refresh_cooldown = refresh_cooldown
        self.keys_max_age = keys_max_age
        self._jwks_url = jwks_url
        self._announced_issuer: str | None = None
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=10, follow_redirects=False)
        self._lock = asyncio.Lock()
        self._keys: tuple[_Key, ...] | None = None
        self._fetched_at = 0.0
        self._gated_at: float | None = None  # the last fetch caused by an unknown kid or an old set
        self._attempts = 0  # finished fetches, successful or not
        self._error: KeySetUnavailable | None = None  # the last fetch's failure

    @classmethod
    def from_settings(cls, settings: Settings) -> JWTVerifier:
        """The verifier for MCP_OAUTH_*.

        Raises:
            ConfigError: MCP_OAUTH_ISSUER or MCP_OAUTH_AUDIENCE is not set, or an issuer or key set
                URL is not https (plain http is allowed on loopback only).
        """
        if settings.oauth_issuer is None:
            raise ConfigError(
                "MCP_OAUTH_ISSUER is not set: set it to your identity provider's issuer URL, "
                "e.g. https://sso.example.com/realms/main"
            )
        if settings.oauth_audience is None:
            raise ConfigError(
                "MCP_OAUTH_AUDIENCE is not set: set it to the audience your identity provider puts in tokens "
                "for this server (often its URL, e.g. https://mcp.example.com/mcp)"
            )
        _require_https("MCP_OAUTH_ISSUER", settings.oauth_issuer)
        if settings.oauth_jwks_url is not None:
            _require_https("MCP_OAUTH_JWKS_URL", settings.oauth_jwks_url)
        return cls(
            settings.oauth_issuer,
            settings.oauth_audience,
            required_scopes=settings.oauth_scopes,
            jwks_url=settings.oauth_jwks_url,
            leeway=settings.oauth_leeway,
        )

    @property
    def metadata_issuer(self) -> str:
        """The issuer for `authorization_servers` in the protected resource metadata: as the issuer's
        own metadata spells it once fetched (clients compare it exactly), the configured one before."""
        return self._announced_issuer or self.issuer

    async def load(self) -> None:
        """Fetch the issuer's metadata and key set now (at start-up, or in `check`), not at the first
        token; `metadata_issuer` then has the metadata's spelling. Does nothing once loaded.

        Raises:
            KeySetUnavailable: They cannot be fetched or used; the message says from where and why.
        """
        if self._keys is None:
            await self._refresh(self._attempts, gated=False)

    async def check(self, token: str) -> AccessToken:
        """The token's `AccessToken` (its `token` is a digest, never the JWT).

        Raises:
            TokenRejected: `invalid_token` (401) for a bad, expired or foreign token, or when the
                issuer's keys cannot be fetched; `insufficient_scope` (403) for a missing scope.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
        alg, kid = _algorithm_and_kid(token)
        try:
            key = await self._key(kid)
        except KeySetUnavailable as exc:
            raise TokenRejected(str(exc)) from None
        claims = self._decode(token, key.for_algorithm(alg), key.kid)
        granted = _granted_scopes(claims)
        missing = [scope for scope in self.required_scopes if scope not in granted]
        if missing:
            raise TokenRejected(f"the token lacks the scope {' '.join(missing)}", error="insufficient_scope")
        client_id = next(
            (value for value in (claims.get("azp"), claims.get("client_id")) if isinstance(value, str) and value),
            DEFAULT_CLIENT_ID,
        )
        subject = claims.get("sub")
        return AccessToken(
            token=hashlib.sha256(token.encode()).hexdigest()[:TOKEN_DIGEST_LENGTH],
            client_id=client_id,
            scopes=granted,
            expires_at=int(claims["exp"]),
            resource=self.audience,
            subject=subject if isinstance(subject, str) else None,
            claims=claims,
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        """The SDK's `TokenVerifier`: `check`, with None for a rejected token."""
        try:
            return await self.check(token)
        except TokenRejected as exc:
            logger.debug("bearer token rejected: %s", exc.description)
            return None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- keys ------------------------------------------------------------------------------

    async def _key(self, kid: str | None) -> _Key:
        if self._keys is None:
            await self._refresh(self._attempts, gated=False)
        elif time.monotonic() - self._fetched_at >= self.keys_max_age:
            # An issuer outage must not lock everybody out: the set fetched before keeps serving.
            with contextlib.suppress(KeySetUnavailable):  # logged by _refresh
                await self._refresh(self._attempts, gated=True)
        key = self._select(kid)
        if key is None and kid is not None:
            await self._refresh(self._attempts, gated=True)
            key = self._select(kid)
        if key is None:
            count = len(self._keys or ())
            if kid is None:
                raise TokenRejected(f"the token names no key (kid), and the issuer publishes {count} keys")
            raise TokenRejected(f"the issuer publishes no key {clip(kid, 80)!r}")
        return key

    def _select(self, kid: str | None) -> _Key | None:
        keys = self._keys or ()
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((key for key in keys if key.kid == kid), None)

    async def _refresh(self, seen: int, *, gated: bool) -> None:
        """Fetch the key set, unless another task did while this one waited (then share its outcome),
        or, when `gated`, a gated fetch ran less than `refresh_cooldown` seconds ago."""
        async with self._lock:
            if self._attempts != seen:
                if self._error is not None:
                    raise KeySetUnavailable(str(self._error))
                return
            if gated:
                now = time.monotonic()
                if self._gated_at is not None and now - self._gated_at < self.refresh_cooldown:
                    return
                self._gated_at = now
            try:
                keys = await self._download()
            except KeySetUnavailable as exc:
                self._attempts += 1
                self._error = exc
                logger.warning("token check: %s", exc)
                raise
            self._attempts += 1
            self._error = None
            self._keys = keys
            self._fetched_at = time.monotonic()
            logger.info("OAuth issuer %s: %d signing keys loaded from %s", self.issuer, len(keys), self._jwks_url)

    async def _download(self) -> tuple[_Key, ...]:
        jwks_url = self._jwks_url or await self._discover()
        status, document = await self._get_json(jwks_url)
        if status != 200:
            raise self._unavailable(f"GET {jwks_url} answered HTTP {status}")
        return self._parse_key_set(document, jwks_url)

    async def _discover(self) -> str:
        tried: list[str] = []
        for url in discovery_urls(self.issuer):
            status, document = await self._get_json(url)
            if status != 200:
                tried.append(f"{url} answered HTTP {status}")
                continue
            if not isinstance(document, dict):
                raise self._unavailable(f"{url} is not a metadata document (a JSON object)")
            announced = document.get("issuer")
            if not isinstance(announced, str) or announced.removesuffix("/") != self.issuer.removesuffix("/"):
                raise self._unavailable(
                    f"the metadata at {url} names the issuer {clip(str(announced), 200)!r}; "
                    "set MCP_OAUTH_ISSUER to exactly the issuer it names"
                )
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise self._unavailable(f"the metadata at {url} has no jwks_uri; set MCP_OAUTH_JWKS_URL")
            self._announced_issuer = announced
            try:
                _require_https("the jwks_uri in the issuer's metadata", jwks_uri)
            except ConfigError as exc:
                raise self._unavailable(str(exc)) from None
            self._jwks_url = jwks_uri
            return jwks_uri
        raise self._unavailable(f"no metadata found ({'; '.join(tried)}); set MCP_OAUTH_JWKS_URL to its key set")

    async def _get_json(self, url: str) -> tuple[int, Any]:
        """(status, the parsed JSON body); the body only for a 200, and at most MAX_DOCUMENT_BYTES."""
        body = bytearray()
        try:
            async with self._http.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    return response.status_code, None
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise self._unavailable(f"GET {url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise self._unavailable(f"GET {url} failed ({type(exc).__name__}: {exc})") from exc
        try:
            return 200, json.loads(body)
        except ValueError:
            raise self._unavailable(f"GET {url} did not answer JSON") from None

    def _parse_key_set(self, document: Any, url: str) -> tuple[_Key, ...]:
        import jwt

        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise self._unavailable(f"{url} is not a key set (a JSON object with a 'keys' list)")
        keys: list[_Key] = []
        for jwk in entries:
            if not _usable_for_signatures(jwk):
                continue
            try:
                built = jwt.PyJWK(jwk)  # checks the key material once, at load
            except jwt.PyJWTError:
                continue
            keys.append(_Key(jwk, jwk.get("kid"), jwk.get("alg"), {built.algorithm_name: built}))
        if not keys:
            raise self._unavailable(f"the key set at {url} has no public signing key (RSA, EC or OKP)")
        return tuple(keys)

    def _unavailable(self, what: str) -> KeySetUnavailable:
        return KeySetUnavailable(f"cannot get the signing keys of the OAuth issuer {self.issuer}: {what}")

    # --- claims ----------------------------------------------------------------------------

    def _decode(self, token: str, key: jwt.PyJWK, kid: str | None) -> dict[str, Any]:
        import jwt

        issuers = [self.issuer] if self._announced_issuer is None else [self.issuer, self._announced_issuer]
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=issuers,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"], "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected(f"the token has expired (more than {self.leeway:g} s ago)") from None
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected(f"the token is not valid yet ({exc})") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(f"the token is not for this server: its aud does not include {self.audience}") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected(f"the token is from another issuer: its iss is not {self.issuer}") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected(f"the token's signature does not verify with the issuer's key {kid!r}") from None
        except jwt.InvalidKeyError as exc:
            raise TokenRejected(f"the issuer's key {kid!r} is not accepted: {exc}") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"the token is not valid: {exc}") from None


def discovery_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be: OpenID Connect's place, then RFC 8414's (the well-known
    part before the issuer's path, then after it, as some servers do)."""
    base = issuer.removesuffix("/")
    parts = urlsplit(base)
    urls = [
        f"{base}/.well-known/openid-configuration",
        f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path}",
        f"{base}/.well-known/oauth-authorization-server",
    ]
    return list(dict.fromkeys(urls))


def user_name(token: AccessToken) -> str:
    """The name to show and to audit: `preferred_username`, else `sub`, else the client id."""
    claims = token.claims or {}
    for name in ("preferred_username", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return token.subject or token.client_id


def groups_of(token: AccessToken, claim: str) -> tuple[str, ...]:
    """The groups in `claim`: a list, or a string that names one group ("Domain Users" is one name).

    `claim` is a claim name (Auth0's namespaced URLs included), or else a dotted path into nested
    claims, such as Keycloak's `realm_access.roles`.
    """
    value = _claim_value(token.claims or {}, claim)
    if isinstance(value, str):
        items = [value] if value else []
    elif isinstance(value, list):
        items = [item for item in value if isinstance(item, str) and item]
    else:
        return ()
    return tuple(dict.fromkeys(items))


def _claim_value(claims: dict[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _algorithm_and_kid(token: str) -> tuple[str, str | None]:
    import jwt

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"the token is not a well-formed JWT ({exc})") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg or alg.lower() == "none":
        raise TokenRejected("the token is not signed (alg 'none'); only RS, PS, ES and EdDSA signatures are accepted")
    if alg.upper().startswith("HS"):
        raise TokenRejected(
            f"the token is signed with {clip(alg, 20)!r}, a shared-secret algorithm; "
            "only the issuer's public-key signatures (RS, PS, ES, EdDSA) are accepted"
        )
    if alg not in ALGORITHMS:
        accepted = ", ".join(sorted(ALGORITHMS))
        raise TokenRejected(f"the token's algorithm {clip(alg, 20)!r} is not accepted, only {accepted}")
    return alg, header.get("kid")  # a kid that is not a string was refused by get_unverified_header


def _usable_for_signatures(jwk: Any) -> bool:
    if not isinstance(jwk, dict) or jwk.get("kty") not in _KEY_TYPES:
        return False
    if jwk.get("use", "sig") != "sig":
        return False
    key_ops = jwk.get("key_ops")
    if isinstance(key_ops, list) and "verify" not in key_ops:
        return False
    kid, alg = jwk.get("kid"), jwk.get("alg")
    return (kid is None or isinstance(kid, str)) and (alg is None or alg in ALGORITHMS)


def _granted_scopes(claims: dict[str, Any]) -> list[str]:
    granted: list[str] = []
    for name in ("scope", "scp"):  # scp: Entra ID, a list or a space-separated string
        value = claims.get(name)
        if isinstance(value, str):
            granted += value.split()
        elif isinstance(value, list):
            granted += [item for item in value if isinstance(item, str)]
    return list(dict.fromkeys(granted))


def _require_https(setting: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return
    raise ConfigError(
        f"{setting}={url} is not an https URL: the issuer's keys decide who gets in, so they must come over "
        "TLS (plain http is allowed for localhost only)"
    )
