"""A small OpenID Connect provider on a loopback port, for the tests and the demo.

    with IdentityProvider() as idp:
        token = idp.issue("ivanov", audience="http://127.0.0.1:8000/mcp", scopes=["mcp"])
        verifier = JWTVerifier(idp.issuer, "http://127.0.0.1:8000/mcp")

It serves its metadata at the OpenID Connect and the RFC 8414 places, its public keys at /jwks
(counted in `jwks_fetches`), and an authorization-code flow with PKCE that approves at once, for
`user`: /register accepts any client, /authorize redirects straight back with a code, /token trades
the code (or a refresh token) for a JWT whose `aud` is the RFC 8707 `resource` asked for. That is
enough for the MCP SDK's `OAuthClientProvider` to sign in. Not a real provider: no login page, no
consent, no client secrets, everything in memory.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from py_server.demo.loopback import LoopbackServer

__all__ = ["DEMO_AUDIENCE", "IdentityProvider", "PrivateKey", "User", "new_rsa_key"]

DEMO_AUDIENCE = "onec-mcp-proxy"
TOKEN_LIFETIME = 300

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class User:
    """Who signs in through /authorize."""

    subject: str = "demo-user"
    preferred_username: str | None = "demo"
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class _SigningKey:
    private: PrivateKey
    alg: str | None  # published in the JWK when set


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class IdentityProvider:
    """The provider; `issuer` is `http://127.0.0.1:PORT` plus `path` (e.g. "/realms/demo")."""

    def __init__(self, port: int = 0, *, path: str = "", user: User | None = None) -> None:
        self.path = path.rstrip("/")
        self.user = user if user is not None else User()
        self.jwks_fetches = 0
        self.announced_issuer: str | None = None  # the metadata names this issuer instead, when set
        self._kids = itertools.count(1)
        self._keys: dict[str, _SigningKey] = {}  # replaced, never changed in place: read by the server thread
        self._current_kid = self._publish(new_rsa_key(), "RS256")
        self._clients: dict[str, list[str]] = {}
        self._codes: dict[str, dict[str, str]] = {}
        self._refresh_tokens: dict[str, dict[str, str]] = {}
        self._server = LoopbackServer(self._app(), port=port)

    @property
    def issuer(self) -> str:
        if not self._server.port:
            raise RuntimeError("the IdentityProvider has no port until start()")
        return f"{self._server.url}{self.path}"

    @property
    def current_kid(self) -> str:
        return self._current_kid

    @property
    def running(self) -> bool:
        return self._server.running

    def start(self) -> IdentityProvider:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> IdentityProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- keys and tokens -------------------------------------------------------------------

    def rotate(self, *, keep_old: bool = False) -> str:
        """A new RSA key becomes the current one and is published; the old one is withdrawn unless
        `keep_old`. Returns the new kid."""
        old = self._current_kid
        self._current_kid = self._publish(new_rsa_key(), "RS256")
        if not keep_old:
            self._keys = {kid: key for kid, key in self._keys.items() if kid != old}
        return self._current_kid

    def add_key(self, private: PrivateKey, *, alg: str | None = None) -> str:
        """Publish one more key (RSA, EC or Ed25519), with `alg` in its JWK when given; returns its kid.
        The current key stays the default for `issue`."""
        return self._publish(private, alg)

    def issue(
        self,
        subject: str,
        *,
        audience: str | Sequence[str] = DEMO_AUDIENCE,
        scopes: Sequence[str] = (),
        groups: Sequence[str] = (),
        expires_in: int = TOKEN_LIFETIME,
        preferred_username: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        kid: str | None = None,
        alg: str = "RS256",
        key: PrivateKey | None = None,
    ) -> str:
        """A signed access token.

        Args:
            expires_in: Seconds until `exp`; negative for a token that has expired.
            extra_claims: Claims added last; a None value removes the claim (e.g. `{"exp": None}`).
            kid: The header's kid. By default the signing key's own (the current kid for a key that
                is not published); "" sends no kid. A kid that is not published, with no `key`,
                is sent on a token signed by the current key.
            key: The private key to sign with; by default the published key `kid`, else the current.
        """
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience if isinstance(audience, str) else list(audience),
            "iat": now,
            "exp": now + expires_in,
            "jti": secrets.token_hex(8),
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        if groups:
            claims["groups"] = list(groups)
        if preferred_username is not None:
            claims["preferred_username"] = preferred_username
        for name, value in (extra_claims or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        keys = self._keys
        if key is None:
            signing_kid = kid if kid in keys else self._current_kid
            key = keys[signing_kid].private
            header_kid = signing_kid if kid is None else kid
        else:
            own_kid = next((name for name, known in keys.items() if known.private is key), self._current_kid)
            header_kid = own_kid if kid is None else kid
        headers = {"typ": "at+jwt", **({"kid": header_kid} if header_kid else {})}
        return jwt.encode(claims, key, algorithm=alg, headers=headers)

    def _publish(self, private: PrivateKey, alg: str | None) -> str:
        kid = f"key-{next(self._kids)}"
        self._keys = {**self._keys, kid: _SigningKey(private, alg)}
        return kid

    def jwks(self) -> dict[str, Any]:
        """The public key set, as /jwks serves it."""
        return {"keys": [_public_jwk(kid, key) for kid, key in self._keys.items()]}

    def metadata(self) -> dict[str, Any]:
        issuer = self.issuer
        return {
            "issuer": self.announced_issuer or issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "registration_endpoint": f"{issuer}/register",
            "jwks_uri": f"{issuer}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    # --- HTTP ------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        p = self.path
        metadata_paths = (
            f"{p}/.well-known/openid-configuration",
            f"/.well-known/oauth-authorization-server{p}",
            f"/.well-known/openid-configuration{p}",
            f"{p}/.well-known/oauth-authorization-server",
        )
        routes = [Route(path, self._metadata) for path in dict.fromkeys(metadata_paths)]
        routes += [
            Route(f"{p}/jwks", self._jwks),
            Route(f"{p}/register", self._register, methods=["POST"]),
            Route(f"{p}/authorize", self._authorize),
            Route(f"{p}/token", self._token, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    async def _metadata(self, request: Request) -> Response:
        return JSONResponse(self.metadata())

    async def _jwks(self, request: Request) -> Response:
        self.jwks_fetches += 1
        return JSONResponse(self.jwks())

    async def _register(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("redirect_uris"), list):
            return _error("invalid_client_metadata", "a JSON object with redirect_uris is required")
        client_id = f"client-{secrets.token_hex(4)}"
        self._clients[client_id] = [str(uri) for uri in body["redirect_uris"]]
        record = {**body, "client_id": client_id, "client_id_issued_at": int(time.time())}
        return JSONResponse({**record, "token_endpoint_auth_method": "none"}, status_code=201)

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        client_id, redirect_uri = query.get("client_id", ""), query.get("redirect_uri", "")
        if redirect_uri not in self._clients.get(client_id, ()):
            return _error("invalid_request", "unknown client_id, or a redirect_uri it did not register")
        if query.get("response_type") != "code":
            return _error("unsupported_response_type", "only response_type=code")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return _error("invalid_request", "PKCE with code_challenge_method=S256 is required")
        code = secrets.token_urlsafe(16)
        self._codes[code] = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "challenge": query["code_challenge"],
            "scope": query.get("scope", ""),
            "resource": query.get("resource", DEMO_AUDIENCE),
        }
        answer = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        separator = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=302)

    async def _token(self, request: Request) -> Response:
        form = {name: values[0] for name, values in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        if grant == "authorization_code":
            issued = self._codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if (
                issued is None
                or issued["client_id"] != form.get("client_id")
                or issued["redirect_uri"] != form.get("redirect_uri")
                or not secrets.compare_digest(issued["challenge"], challenge)
            ):
                return _error("invalid_grant", "unknown code, or a client, redirect_uri or code_verifier that differs")
        elif grant == "refresh_token":
            issued = self._refresh_tokens.pop(form.get("refresh_token", ""), None)
            if issued is None or issued["client_id"] != form.get("client_id"):
                return _error("invalid_grant", "unknown refresh token")
        else:
            return _error("unsupported_grant_type", "authorization_code or refresh_token")
        refresh_token = secrets.token_urlsafe(24)
        self._refresh_tokens[refresh_token] = issued
        user = self.user
        access_token = self.issue(
            user.subject,
            audience=issued["resource"],
            scopes=issued["scope"].split(),
            groups=user.groups,
            preferred_username=user.preferred_username,
            extra_claims={"azp": issued["client_id"]},
        )
        body = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "scope": issued["scope"],
            "refresh_token": refresh_token,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _public_jwk(kid: str, key: _SigningKey) -> dict[str, Any]:
    public = key.private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", **({"alg": key.alg} if key.alg else {})}


def _error(error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)
