"""Who an HTTP request comes from: the proxy's bearer token or an OAuth JWT, and the person's 1C login.

One pass per request, in the request guard, before any route and so before any MCP session exists:

* Bearer: with `MCP_AUTH_TOKEN`, `Authorization: Bearer <it>` (constant-time compare); with
  `MCP_OAUTH_ISSUER`, a JWT the `JWTVerifier` accepts, from a user `MCP_POLICY_FILE` admits.
* 1C login (`MCP_ONEC_AUTH=passthrough`): `X-OneC-Authorization: Basic ...`, or plain
  `Authorization: Basic ...` when no bearer is needed; checked against 1C once per login.

The result is a `ProxyUser` for `scope["user"]`: the SDK binds each session to its access token
(a fingerprint of the credential, never the credential), and handlers read its `Identity`. A
refusal is the HTTP answer a client can act on: 401 with the `WWW-Authenticate` challenge to
answer (Bearer with the protected resource metadata, or Basic realm="1C"), 403 with the reason,
503 when 1C cannot be asked.

    auth = Authenticator.from_settings(settings, verifier=..., verify_login=proxy.verify_login, admits=...)
    outcome = await auth.authenticate(headers, metadata_url)    # ProxyUser | Refusal
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mcp.server.auth.provider import AccessToken
from starlette.datastructures import Headers
from starlette.responses import Response

from ..callers import ProxyUser
from ..config import Settings
from ..errors import OneCAuthError, OneCBusyError, OneCConnectionError, OneCError
from . import Identity, OneCLogin, parse_basic
from .oauth import JWTVerifier, TokenRejected, groups_of, user_name

__all__ = ["ONEC_AUTH_HEADER", "TOKEN_CLIENT_ID", "Authenticator", "Refusal"]

logger = logging.getLogger(__name__)

ONEC_AUTH_HEADER = "x-onec-authorization"
TOKEN_CLIENT_ID = "bearer-token"  # the static token's name in logs and session ownership; never the secret
BASIC_CLIENT_ID = "onec-login"
BASIC_CHALLENGE = 'Basic realm="1C", charset="UTF-8"'

# Checks a person's 1C login with a base (None: the bases of the endpoint that serves them all).
LoginCheck = Callable[[Identity, "str | None"], Awaitable[None]]
Admits = Callable[[Sequence[str]], "str | None"]


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, as the HTTP answer and the one line logged (never a credential)."""

    status_code: int
    message: str
    challenge: str | None = None
    oauth_error: str | None = None  # RFC 6750 error code: the body is then the OAuth JSON error

    def response(self) -> Response:
        headers = {"WWW-Authenticate": self.challenge} if self.challenge else None
        if self.oauth_error is not None:
            body = json.dumps({"error": self.oauth_error, "error_description": self.message})
            return Response(body, self.status_code, headers=headers, media_type="application/json")
        return Response(self.message, self.status_code, headers=headers, media_type="text/plain; charset=utf-8")


class Authenticator:
    def __init__(
        self,
        *,
        token: str | None = None,
        verifier: JWTVerifier | None = None,
        group_claim: str | None = None,
        admits: Admits | None = None,
        passthrough: bool = False,
        verify_login: LoginCheck | None = None,
    ) -> None:
        if token is not None and verifier is not None:
            raise ValueError("a static bearer token and OAuth exclude each other")
        self._token = token.encode() if token is not None else None
        self._verifier = verifier
        self._group_claim = group_claim
        self._admits = admits
        self._passthrough = passthrough
        self._verify_login = verify_login
        if self._token is not None:
            # Who opened a session, for the SDK's session binding: a digest, so the token is not kept twice.
            self._token_fingerprint = hashlib.sha256(self._token).hexdigest()[:16]

    @property
    def required(self) -> bool:
        """True when a request must carry some credential."""
        return self._token is not None or self._verifier is not None or self._passthrough

    @property
    def uses_oauth(self) -> bool:
        return self._verifier is not None

    async def authenticate(
        self, headers: Headers, metadata_url: str | None = None, base: str | None = None
    ) -> ProxyUser | Refusal | None:
        """The request's user; a Refusal; or None when no credential is required at all.

        `base` is the 1C base the request is for (a per-base endpoint), so a 1C login is checked there."""
        if not self.required:
            return None
        bearer = self._bearer_identity(headers) if self._token is not None else None
        if isinstance(bearer, Refusal):
            return bearer
        if self._verifier is not None:
            bearer = await self._oauth_identity(headers, metadata_url)
            if isinstance(bearer, Refusal):
                return bearer
        access, identity = bearer if bearer is not None else (None, None)
        if self._passthrough:
            return await self._with_login(headers, access, identity, base)
        assert access is not None and identity is not None
        return ProxyUser(access, identity)

    # --- bearer -------------------------------------------------------------------------

    def _bearer_identity(self, headers: Headers) -> tuple[AccessToken, Identity] | Refusal:
        scheme, _, presented = headers.get("authorization", "").partition(" ")
        assert self._token is not None
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), self._token):
            return Refusal(401, "Missing or invalid bearer token", challenge="Bearer")
        access = AccessToken(token=self._token_fingerprint, client_id=TOKEN_CLIENT_ID, scopes=[])
        return access, Identity(TOKEN_CLIENT_ID)

    async def _oauth_identity(
        self, headers: Headers, metadata_url: str | None
    ) -> tuple[AccessToken, Identity] | Refusal:
        assert self._verifier is not None
        # RFC 6750/9728: where the metadata is, and which scopes to ask for, so a client can sign in.
        params = [f'resource_metadata="{_quoted(metadata_url)}"'] if metadata_url else []
        if self._verifier.required_scopes:
            params.append(f'scope="{" ".join(self._verifier.required_scopes)}"')
        challenge = "Bearer " + ", ".join(params) if params else "Bearer"
        scheme, _, presented = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            # RFC 6750 §3.1: no error code when the request carried no token at all.
            return Refusal(401, "Sign-in required: send an OAuth access token", challenge, "invalid_token")
        try:
            access = await self._verifier.check(presented.strip())
        except TokenRejected as exc:
            challenge += f'{"," if params else ""} error="{exc.error}", error_description="{_quoted(exc.description)}"'
            return Refusal(exc.status_code, exc.description, challenge, exc.error)
        name = user_name(access)
        groups = groups_of(access, self._group_claim) if self._group_claim else ()
        if self._admits is not None and (refusal := self._admits(groups)) is not None:
            return Refusal(403, refusal, oauth_error="insufficient_scope")
        # On the service account, 1C learns who asks from MCP_ONEC_USER_HEADER.
        on_behalf_of = None if self._passthrough else name
        return access, Identity(name, groups=groups, on_behalf_of=on_behalf_of)

    # --- the person's 1C login ----------------------------------------------------------

    async def _with_login(
        self, headers: Headers, access: AccessToken | None, identity: Identity | None, base: str | None
    ) -> ProxyUser | Refusal:
        header = headers.get(ONEC_AUTH_HEADER)
        if header is None and identity is None:  # no bearer in play: plain Authorization carries the login
            header = headers.get("authorization")
        where = "X-OneC-Authorization" if identity is not None else "Authorization (or X-OneC-Authorization)"
        login = parse_basic(header) if header else None
        if login is None:
            return Refusal(
                401, f"Send your 1C login as HTTP Basic in {where}: each user reaches 1C as themselves", BASIC_CHALLENGE
            )
        # The OAuth user when there is one; else the 1C user (a static token names nobody).
        oauth_user = identity is not None and self._verifier is not None
        identity = Identity(
            identity.subject if oauth_user and identity is not None else login.username,
            groups=identity.groups if identity is not None else (),
            onec_login=login,
        )
        if self._verify_login is not None:
            refusal = await self._check_login(identity, login, base)
            if refusal is not None:
                return refusal
        if access is None:
            access = AccessToken(token=login.key, client_id=BASIC_CLIENT_ID, scopes=[], subject=login.key)
        else:  # the session belongs to this token's user with this 1C login
            owner = access.subject or access.client_id
            access = access.model_copy(update={"subject": f"{owner}|{login.key}"})
        return ProxyUser(access, identity)

    async def _check_login(self, identity: Identity, login: OneCLogin, base: str | None) -> Refusal | None:
        assert self._verify_login is not None
        try:
            await self._verify_login(identity, base)
        except OneCAuthError as exc:
            # Only 1C's own words go back: the caller is not signed in, so no 1C URL or detail of ours.
            if exc.status_code == 403:
                logger.info("1C refused user %r the HTTP service: %s", login.username, exc)
                reason = f": {exc.reason}" if exc.reason else ""
                return Refusal(403, f"1C user '{login.username}' may not use the 1C HTTP service (HTTP 403){reason}")
            return Refusal(401, f"1C rejected the login for user '{login.username}'", BASIC_CHALLENGE)
        except OneCBusyError as exc:
            return Refusal(503, str(exc))
        except OneCError as exc:
            logger.warning("the 1C login of %r could not be checked: %s", login.username, exc)
            what = "did not answer" if isinstance(exc, OneCConnectionError) else "answered the login check unexpectedly"
            return Refusal(503, f"1C {what}, so your 1C login could not be checked; try again later")
        return None

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        verifier: JWTVerifier | None = None,
        group_claim: str | None = None,
        admits: Admits | None = None,
        verify_login: LoginCheck | None = None,
    ) -> Authenticator:
        token = settings.auth_token.get_secret_value() if settings.auth_token is not None else None
        return cls(
            token=token,
            verifier=verifier,
            group_claim=group_claim,
            admits=admits,
            passthrough=settings.onec_auth == "passthrough",
            verify_login=verify_login,
        )


_UNSAFE_IN_QUOTES = re.compile(r'[\x00-\x1f\x7f"\\]')


def _quoted(text: str) -> str:
    """Text safe inside a quoted-string of a WWW-Authenticate header: ASCII, no controls, no quotes."""
    return _UNSAFE_IN_QUOTES.sub("'", text).encode("ascii", "replace").decode()
