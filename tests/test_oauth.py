from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from mcp.client.auth import OAuthClientProvider
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from py_server.config import Settings
from py_server.demo.idp import IdentityProvider, User, new_rsa_key
from py_server.demo.loopback import LoopbackServer
from py_server.errors import ConfigError
from py_server.identity.oauth import (
    JWTVerifier,
    KeySetUnavailable,
    TokenRejected,
    discovery_urls,
    groups_of,
    user_name,
)

pytestmark = pytest.mark.anyio

AUDIENCE = "https://mcp.example.com/mcp"


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as running:
        yield running


@contextlib.asynccontextmanager
async def verifier_for(idp: IdentityProvider, **options: Any) -> AsyncIterator[JWTVerifier]:
    verifier = JWTVerifier(idp.issuer, options.pop("audience", AUDIENCE), **options)
    try:
        yield verifier
    finally:
        await verifier.aclose()


async def rejection(verifier: JWTVerifier, token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        await verifier.check(token)
    assert len(token) < 16 or token not in caught.value.description  # never the token itself
    return caught.value


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}.{b64url(signature)}"


def claims_for(idp: IdentityProvider) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": idp.issuer, "sub": "ivanov", "aud": AUDIENCE, "iat": now, "exp": now + 300, "scope": "mcp"}


# --- accepted tokens -------------------------------------------------------------------------


async def test_a_valid_token_gives_its_subject_scopes_and_claims(idp: IdentityProvider) -> None:
    token = idp.issue("ivanov", audience=AUDIENCE, scopes=["mcp", "read"], extra_claims={"azp": "claude-desktop"})
    async with verifier_for(idp, required_scopes=["mcp"]) as verifier:
        access = await verifier.check(token)

    assert access.subject == "ivanov"
    assert access.scopes == ["mcp", "read"]
    assert access.client_id == "claude-desktop"
    assert access.resource == AUDIENCE
    assert access.claims is not None and access.claims["iss"] == idp.issuer
    assert access.expires_at == access.claims["exp"]
    assert access.token == hashlib.sha256(token.encode()).hexdigest()[:32]  # a digest, never the JWT


async def test_the_verifier_is_the_sdks_token_verifier_and_answers_none_for_a_bad_token(
    idp: IdentityProvider,
) -> None:
    async with verifier_for(idp) as verifier:
        sdk_verifier: TokenVerifier = verifier
        assert await sdk_verifier.verify_token(idp.issue("ivanov", audience=AUDIENCE)) is not None
        assert await sdk_verifier.verify_token(idp.issue("ivanov", audience="another")) is None


async def test_an_audience_list_that_contains_ours_is_accepted(idp: IdentityProvider) -> None:
    token = idp.issue("ivanov", audience=["https://other.example.com", AUDIENCE])
    async with verifier_for(idp) as verifier:
        assert (await verifier.check(token)).subject == "ivanov"


async def test_a_token_expired_within_the_leeway_is_accepted(idp: IdentityProvider) -> None:
    async with verifier_for(idp, leeway=30) as verifier:
        assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE, expires_in=-10))


async def test_es256_and_eddsa_keys_verify_their_tokens(idp: IdentityProvider) -> None:
    ec_key, ed_key = ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()
    idp.add_key(ec_key, alg="ES256")
    idp.add_key(ed_key)  # no alg in the JWK: Ed25519 means EdDSA
    async with verifier_for(idp) as verifier:
        assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE, alg="ES256", key=ec_key))
        assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE, alg="EdDSA", key=ed_key))


async def test_a_key_without_alg_verifies_any_algorithm_of_its_type(idp: IdentityProvider) -> None:
    rsa_key = new_rsa_key()
    idp.add_key(rsa_key)  # Entra ID publishes no alg
    async with verifier_for(idp) as verifier:
        assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE, alg="PS256", key=rsa_key))
        assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE, alg="RS384", key=rsa_key))


async def test_a_token_without_kid_uses_the_only_key(idp: IdentityProvider) -> None:
    async with verifier_for(idp) as verifier:
        assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE, kid=""))


# --- rejected tokens -------------------------------------------------------------------------


async def test_a_token_expired_beyond_the_leeway_is_rejected(idp: IdentityProvider) -> None:
    async with verifier_for(idp, leeway=30) as verifier:
        refused = await rejection(verifier, idp.issue("ivanov", audience=AUDIENCE, expires_in=-60))
    assert (refused.error, refused.status_code) == ("invalid_token", 401)
    assert "expired" in refused.description


async def test_a_token_without_exp_is_rejected(idp: IdentityProvider) -> None:
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, idp.issue("ivanov", audience=AUDIENCE, extra_claims={"exp": None}))
    assert "'exp'" in refused.description


async def test_a_token_not_valid_yet_is_rejected(idp: IdentityProvider) -> None:
    future = int(time.time()) + 600
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, idp.issue("ivanov", audience=AUDIENCE, extra_claims={"nbf": future}))
    assert "not valid yet" in refused.description


async def test_a_token_for_another_audience_is_rejected(idp: IdentityProvider) -> None:
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, idp.issue("ivanov", audience="https://other.example.com"))
    assert f"aud does not include {AUDIENCE}" in refused.description


async def test_a_token_from_another_issuer_is_rejected(idp: IdentityProvider) -> None:
    token = idp.issue("ivanov", audience=AUDIENCE, extra_claims={"iss": "https://evil.example.com"})
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, token)
    assert f"iss is not {idp.issuer}" in refused.description


async def test_a_token_signed_by_another_key_with_the_same_kid_is_rejected(idp: IdentityProvider) -> None:
    forged = idp.issue("ivanov", audience=AUDIENCE, key=new_rsa_key(), kid=idp.current_kid)
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, forged)
    assert "signature does not verify" in refused.description


async def test_an_unsigned_token_is_rejected(idp: IdentityProvider) -> None:
    token = unsigned_token({"alg": "none", "typ": "JWT"}, claims_for(idp))
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, token)
    assert "alg 'none'" in refused.description
    assert idp.jwks_fetches == 0  # refused before any key is looked up


async def test_an_hs256_token_keyed_with_the_public_key_is_rejected(idp: IdentityProvider) -> None:
    """The classic confusion: the public key (which anyone can fetch) used as an HMAC secret."""
    published = jwt.PyJWK(idp.jwks()["keys"][0]).key  # what anyone can fetch from /jwks
    public_pem = published.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": idp.current_kid}
    signing_input = unsigned_token(header, claims_for(idp)).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, f"{signing_input}.{b64url(signature)}")
    assert "'HS256', a shared-secret algorithm" in refused.description


async def test_a_token_whose_algorithm_differs_from_its_keys_alg_is_rejected(idp: IdentityProvider) -> None:
    async with verifier_for(idp) as verifier:  # the current key's JWK says RS256
        refused = await rejection(verifier, idp.issue("ivanov", audience=AUDIENCE, alg="PS256"))
    assert "signed with PS256" in refused.description
    assert "is for RS256" in refused.description


async def test_a_token_without_kid_is_rejected_when_the_issuer_has_several_keys(idp: IdentityProvider) -> None:
    idp.rotate(keep_old=True)
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, idp.issue("ivanov", audience=AUDIENCE, kid=""))
    assert "names no key" in refused.description


async def test_garbage_is_rejected_without_fetching_keys(idp: IdentityProvider) -> None:
    async with verifier_for(idp) as verifier:
        for garbage in ("", "abc", "a.b.c", "x" * 20_000):
            refused = await rejection(verifier, garbage)
            assert refused.error == "invalid_token"
    assert idp.jwks_fetches == 0


# --- scopes ----------------------------------------------------------------------------------


async def test_a_missing_scope_is_insufficient_scope_with_403(idp: IdentityProvider) -> None:
    async with verifier_for(idp, required_scopes=["mcp", "mcp:write"]) as verifier:
        refused = await rejection(verifier, idp.issue("ivanov", audience=AUDIENCE, scopes=["mcp"]))
    assert (refused.error, refused.status_code) == ("insufficient_scope", 403)
    assert "mcp:write" in refused.description


async def test_entra_scp_grants_scopes_as_a_list_or_a_string(idp: IdentityProvider) -> None:
    as_list = idp.issue("ivanov", audience=AUDIENCE, extra_claims={"scp": ["mcp", "read"]})
    as_string = idp.issue("ivanov", audience=AUDIENCE, extra_claims={"scp": "mcp read"})
    async with verifier_for(idp, required_scopes=["mcp"]) as verifier:
        assert (await verifier.check(as_list)).scopes == ["mcp", "read"]
        assert (await verifier.check(as_string)).scopes == ["mcp", "read"]


# --- keys: rotation, floods, outages ---------------------------------------------------------


async def test_a_rotated_key_is_fetched_once_and_its_tokens_accepted(idp: IdentityProvider) -> None:
    async with verifier_for(idp) as verifier:
        await verifier.check(idp.issue("ivanov", audience=AUDIENCE))
        assert idp.jwks_fetches == 1

        idp.rotate()
        tokens = [idp.issue(f"user-{n}", audience=AUDIENCE) for n in range(20)]
        accepted = await asyncio.gather(*(verifier.check(token) for token in tokens))

    assert [access.subject for access in accepted] == [f"user-{n}" for n in range(20)]
    assert idp.jwks_fetches == 2  # the twenty waited on one fetch


async def test_a_flood_of_unknown_kids_fetches_the_keys_at_most_once_per_cooldown(idp: IdentityProvider) -> None:
    async with verifier_for(idp, refresh_cooldown=10) as verifier:
        await verifier.check(idp.issue("ivanov", audience=AUDIENCE))
        forged = [idp.issue("ivanov", audience=AUDIENCE, kid=f"random-{n}") for n in range(50)]
        for refused in await asyncio.gather(*(rejection(verifier, token) for token in forged)):
            assert "publishes no key 'random-" in refused.description
        for token in forged[:10]:
            await rejection(verifier, token)

        assert idp.jwks_fetches == 2  # the first load, then one refetch for the whole flood
        idp.rotate()
        refused = await rejection(verifier, idp.issue("ivanov", audience=AUDIENCE))  # still within the cooldown
    assert "publishes no key" in refused.description


async def test_without_cooldown_every_rotation_is_picked_up(idp: IdentityProvider) -> None:
    async with verifier_for(idp, refresh_cooldown=0) as verifier:
        for _ in range(3):
            idp.rotate()
            assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE))
    assert idp.jwks_fetches == 3


async def test_a_withdrawn_key_stops_working_once_the_key_set_is_old(idp: IdentityProvider) -> None:
    old_token = idp.issue("ivanov", audience=AUDIENCE)
    async with verifier_for(idp, keys_max_age=0, refresh_cooldown=0) as verifier:
        assert await verifier.check(old_token)
        idp.rotate()  # the old key is withdrawn
        refused = await rejection(verifier, old_token)
    assert "publishes no key" in refused.description


async def test_an_issuer_that_is_down_rejects_with_the_reason_and_is_retried(idp: IdentityProvider) -> None:
    token = idp.issue("ivanov", audience=AUDIENCE)
    idp.stop()
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, token)
        assert refused.status_code == 401
        assert refused.description.startswith(f"cannot get the signing keys of the OAuth issuer {idp.issuer}: ")
        assert f"GET {idp.issuer}/.well-known/openid-configuration failed (ConnectError" in refused.description

        idp.start()  # same port
        assert (await verifier.check(token)).subject == "ivanov"


async def test_tokens_that_arrive_during_a_failed_fetch_share_it_and_the_next_token_retries() -> None:
    requests: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def failing(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        entered.set()
        await release.wait()
        return httpx.Response(503)

    http = httpx.AsyncClient(transport=httpx.MockTransport(failing))
    verifier = JWTVerifier("https://sso.example.com", AUDIENCE, http=http)
    token = unsigned_token({"alg": "RS256", "kid": "k"}, {}, b"sig")
    checks = asyncio.gather(*(rejection(verifier, token) for _ in range(10)))
    await entered.wait()  # the first check is fetching; the other nine started before this resumes
    release.set()
    refusals = await checks
    assert len(requests) == 2  # one attempt (two metadata places) for the ten
    assert all("answered HTTP 503" in refused.description for refused in refusals)

    await rejection(verifier, token)
    await http.aclose()
    assert len(requests) == 4  # the next token tried again


async def test_an_old_key_set_that_cannot_be_refreshed_keeps_serving(
    idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    token = idp.issue("ivanov", audience=AUDIENCE)
    async with verifier_for(idp, keys_max_age=0, refresh_cooldown=0) as verifier:
        assert await verifier.check(token)
        idp.stop()
        assert (await verifier.check(token)).subject == "ivanov"  # an issuer outage locks nobody out
    assert f"cannot get the signing keys of the OAuth issuer {idp.issuer}" in caplog.text


async def test_metadata_that_names_another_issuer_is_a_clear_error(idp: IdentityProvider) -> None:
    idp.announced_issuer = "https://login.example.com/tenant"
    async with verifier_for(idp) as verifier:
        refused = await rejection(verifier, idp.issue("ivanov", audience=AUDIENCE))
    assert "names the issuer 'https://login.example.com/tenant'" in refused.description
    assert "set MCP_OAUTH_ISSUER to exactly the issuer it names" in refused.description
    assert idp.jwks_fetches == 0


async def test_one_trailing_slash_of_the_issuer_is_ignored_and_the_metadatas_spelling_is_published(
    idp: IdentityProvider,
) -> None:
    async with contextlib.aclosing(JWTVerifier(idp.issuer + "/", AUDIENCE)) as verifier:
        assert verifier.metadata_issuer == idp.issuer + "/"  # nothing fetched yet
        assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE))
        assert verifier.metadata_issuer == idp.issuer


async def test_load_fetches_the_keys_before_any_token_and_says_why_it_cannot(idp: IdentityProvider) -> None:
    async with contextlib.aclosing(JWTVerifier(idp.issuer + "/", AUDIENCE)) as verifier:
        await verifier.load()
        await verifier.load()
        assert (idp.jwks_fetches, verifier.metadata_issuer) == (1, idp.issuer)

    idp.announced_issuer = "https://login.example.com"
    async with verifier_for(idp) as verifier:
        with pytest.raises(KeySetUnavailable, match=re.escape("names the issuer 'https://login.example.com'")):
            await verifier.load()


async def test_the_jwks_url_setting_skips_discovery(idp: IdentityProvider) -> None:
    idp.announced_issuer = "https://wrong.example.com"  # the metadata is not read at all
    async with verifier_for(idp, jwks_url=f"{idp.issuer}/jwks") as verifier:
        assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE))


async def test_rfc_8414_metadata_is_found_for_an_issuer_with_a_path() -> None:
    with IdentityProvider(path="/realms/demo") as idp:
        served: list[str] = []

        def only_rfc_8414(request: httpx.Request) -> httpx.Response:
            served.append(str(request.url))
            path = request.url.path
            if path == "/.well-known/oauth-authorization-server/realms/demo":
                return httpx.Response(200, json=idp.metadata())
            if path == "/realms/demo/jwks":
                return httpx.Response(200, json=idp.jwks())
            return httpx.Response(404)

        http = httpx.AsyncClient(transport=httpx.MockTransport(only_rfc_8414))
        async with verifier_for(idp, http=http) as verifier:
            assert await verifier.check(idp.issue("ivanov", audience=AUDIENCE))
        await http.aclose()

    root = idp.issuer.removesuffix("/realms/demo")
    assert served == [
        f"{idp.issuer}/.well-known/openid-configuration",
        f"{root}/.well-known/oauth-authorization-server/realms/demo",
        f"{idp.issuer}/jwks",
    ]


def test_discovery_urls_try_openid_connect_then_rfc_8414() -> None:
    assert discovery_urls("https://sso.example.com/realms/main/") == [
        "https://sso.example.com/realms/main/.well-known/openid-configuration",
        "https://sso.example.com/.well-known/oauth-authorization-server/realms/main",
        "https://sso.example.com/realms/main/.well-known/oauth-authorization-server",
    ]
    assert discovery_urls("https://sso.example.com") == [
        "https://sso.example.com/.well-known/openid-configuration",
        "https://sso.example.com/.well-known/oauth-authorization-server",
    ]


async def test_no_metadata_anywhere_names_every_place_tried() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(404)))
    verifier = JWTVerifier("https://sso.example.com", AUDIENCE, http=http)
    refused = await rejection(verifier, unsigned_token({"alg": "RS256", "kid": "k"}, {}, b"sig"))
    await http.aclose()
    assert "https://sso.example.com/.well-known/oauth-authorization-server answered HTTP 404" in refused.description
    assert "set MCP_OAUTH_JWKS_URL" in refused.description


# --- settings --------------------------------------------------------------------------------


def test_from_settings_needs_issuer_and_audience() -> None:
    with pytest.raises(ConfigError, match="MCP_OAUTH_ISSUER is not set"):
        JWTVerifier.from_settings(Settings(_env_file=None, oauth_audience=AUDIENCE))  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="MCP_OAUTH_AUDIENCE is not set"):
        JWTVerifier.from_settings(Settings(_env_file=None, oauth_issuer="https://sso.example.com"))  # type: ignore[call-arg]


def test_from_settings_refuses_a_plain_http_issuer_beyond_loopback() -> None:
    settings = Settings(_env_file=None, oauth_issuer="http://sso.example.com", oauth_audience=AUDIENCE)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=re.escape("MCP_OAUTH_ISSUER=http://sso.example.com is not an https URL")):
        JWTVerifier.from_settings(settings)


async def test_from_settings_takes_every_oauth_setting() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        oauth_issuer="http://127.0.0.1:9/realms/main",
        oauth_audience=AUDIENCE,
        oauth_scopes="mcp,mcp:write",
        oauth_jwks_url="https://sso.example.com/certs",
        oauth_leeway=5,
    )
    verifier = JWTVerifier.from_settings(settings)
    await verifier.aclose()
    assert (verifier.issuer, verifier.audience, verifier.leeway) == (settings.oauth_issuer, AUDIENCE, 5)
    assert verifier.required_scopes == ("mcp", "mcp:write")


# --- user_name and groups_of -----------------------------------------------------------------


def access_token(**claims: Any) -> AccessToken:
    return AccessToken(token="digest", client_id="claude", scopes=[], subject=claims.get("sub"), claims=claims)


def test_user_name_prefers_preferred_username_then_sub_then_client_id() -> None:
    assert user_name(access_token(sub="f81d4fae", preferred_username="ivanov@example.com")) == "ivanov@example.com"
    assert user_name(access_token(sub="f81d4fae")) == "f81d4fae"
    assert user_name(access_token()) == "claude"


def test_groups_of_reads_lists_strings_and_nested_paths() -> None:
    token = access_token(
        groups=["sales", "1c-admins", "sales"],
        roles="Domain Users",
        realm_access={"roles": ["offline_access", "buyer"]},
        **{"https://example.com/roles": ["auditor"]},
    )
    assert groups_of(token, "groups") == ("sales", "1c-admins")
    assert groups_of(token, "roles") == ("Domain Users",)  # a string is one group, spaces and all
    assert groups_of(token, "realm_access.roles") == ("offline_access", "buyer")
    assert groups_of(token, "https://example.com/roles") == ("auditor",)
    assert groups_of(token, "missing") == ()
    assert groups_of(token, "realm_access.missing") == ()


# --- the MCP SDK's OAuth client against the emulator -----------------------------------------


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def protected_resource(issuer: str) -> Starlette:
    """A resource server in the shape the proxy's will have: 401 + RFC 9728 metadata, JWTVerifier."""
    verifiers: list[JWTVerifier] = []

    def verifier(request: Request) -> JWTVerifier:
        if not verifiers:  # made in the server's own event loop, for its own audience
            verifiers.append(JWTVerifier(issuer, f"{request.base_url}mcp", required_scopes=["mcp"]))
        return verifiers[0]

    async def metadata(request: Request) -> Response:
        body = {
            "resource": f"{request.base_url}mcp",
            "authorization_servers": [verifier(request).metadata_issuer],
            "scopes_supported": ["mcp"],
        }
        return JSONResponse(body)

    async def mcp(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise TokenRejected("no bearer token")
            access = await verifier(request).check(token)
        except TokenRejected as exc:
            challenge = (
                f'Bearer error="{exc.error}", scope="mcp", '
                f'resource_metadata="{request.base_url}.well-known/oauth-protected-resource/mcp"'
            )
            return Response(status_code=exc.status_code, headers={"WWW-Authenticate": challenge})
        return JSONResponse({"user": user_name(access), "scopes": access.scopes})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for made in verifiers:
            await made.aclose()

    routes = [Route("/.well-known/oauth-protected-resource/mcp", metadata), Route("/mcp", mcp)]
    return Starlette(routes=routes, lifespan=lifespan)


async def test_the_sdks_oauth_client_signs_in_at_the_emulator_and_the_verifier_accepts_its_token() -> None:
    with (
        IdentityProvider(user=User("f81d4fae", "ivanov", ("sales",))) as idp,
        LoopbackServer(protected_resource(idp.issuer)) as resource,
    ):
        redirects: list[str] = []

        async def follow_login(authorization_url: str) -> None:
            async with httpx.AsyncClient() as browser:  # the "browser": the emulator approves at once
                answer = await browser.get(authorization_url)
            assert answer.status_code == 302
            redirects.append(answer.headers["location"])

        async def callback() -> AuthorizationCodeResult:
            query = parse_qs(urlsplit(redirects[-1]).query)
            return AuthorizationCodeResult(code=query["code"][0], state=query["state"][0])

        provider = OAuthClientProvider(
            server_url=f"{resource.url}/mcp",
            client_metadata=OAuthClientMetadata(redirect_uris=["http://127.0.0.1:1/callback"]),  # type: ignore[list-item]
            storage=MemoryStorage(),
            redirect_handler=follow_login,
            callback_handler=callback,
        )
        async with httpx2.AsyncClient(auth=provider, timeout=10) as client:
            answer = await client.get(f"{resource.url}/mcp")

    assert answer.status_code == 200
    assert answer.json() == {"user": "ivanov", "scopes": ["mcp"]}
    assert idp.jwks_fetches == 1


async def test_a_token_without_a_subject_is_rejected(idp: IdentityProvider) -> None:
    # Sessions are bound to (client, issuer, subject): tokens without `sub` would share them.
    token = idp.issue("ivanov", audience=AUDIENCE, extra_claims={"sub": None})
    async with verifier_for(idp) as verifier:
        assert "sub" in (await rejection(verifier, token)).description
