"""The request's credentials to a user or a refusal: the `Authenticator` alone, without a server."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence

import httpx
import pytest
from mcp.server.auth.provider import AccessToken
from starlette.datastructures import Headers

from py_server.callers import ProxyUser
from py_server.config import Settings
from py_server.errors import OneCAuthError, OneCConnectionError, OneCError, OneCHTTPError, OneCTimeoutError
from py_server.identity import Identity, parse_basic
from py_server.identity.http_auth import Authenticator, Refusal
from py_server.identity.oauth import JWTVerifier, TokenRejected
from py_server.upstreams import IdentityLimitError

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-static-token"
PASSWORD = "Пароль-бухгалтера"
METADATA = "https://proxy.example/.well-known/oauth-protected-resource/mcp"
BASIC_CHALLENGE = re.compile(r'^Basic realm="1C"')
# RFC 9110 auth-param with a quoted-string value: what a client's parser reads.
QUOTED_PARAM = re.compile(r'(\w+)="((?:[^"\\\r\n]|\\.)*)"')


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def headers(**values: str) -> Headers:
    """Request headers; `x_onec_authorization=...` is sent as X-OneC-Authorization."""
    return Headers(headers={name.replace("_", "-"): value for name, value in values.items()})


def admitted(outcome: ProxyUser | Refusal | None) -> ProxyUser:
    assert isinstance(outcome, ProxyUser), outcome
    return outcome


def refused(outcome: ProxyUser | Refusal | None) -> Refusal:
    assert isinstance(outcome, Refusal), outcome
    return outcome


def challenge_params(challenge: str) -> dict[str, str]:
    """The auth-params of one challenge, as a client reads them (escapes undone)."""
    return {name: re.sub(r"\\(.)", r"\1", value) for name, value in QUOTED_PARAM.findall(challenge)}


class LoginCheck:
    """A stand-in for `UpstreamRegistry.verify`: records whom it checked, raises `error` if given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.checked: list[Identity] = []

    async def __call__(self, identity: Identity, base: str | None = None) -> None:
        self.checked.append(identity)
        if self.error is not None:
            raise self.error


class StubVerifier:
    """Duck-types `JWTVerifier`: `check` gives the AccessToken or raises the TokenRejected given."""

    def __init__(self, outcome: AccessToken | TokenRejected, required_scopes: Sequence[str] = ()) -> None:
        self.outcome = outcome
        self.required_scopes = tuple(required_scopes)
        self.seen: list[str] = []

    async def check(self, token: str) -> AccessToken:
        self.seen.append(token)
        if isinstance(self.outcome, TokenRejected):
            raise self.outcome
        return self.outcome


def oauth_token(**claims: object) -> AccessToken:
    claims = {"sub": "u-1", "preferred_username": "petrova", "groups": ["accountants", "staff"], **claims}
    return AccessToken(token="digest-of-the-jwt", client_id="mcp-client", scopes=["mcp"], subject="u-1", claims=claims)


def oauth(
    outcome: AccessToken | TokenRejected | None = None,
    *,
    admits: Callable[[Sequence[str]], str | None] | None = None,
    passthrough: bool = False,
    verify_login: LoginCheck | None = None,
    required_scopes: Sequence[str] = (),
) -> tuple[Authenticator, StubVerifier]:
    verifier = StubVerifier(outcome if outcome is not None else oauth_token(), required_scopes)
    auth = Authenticator(
        verifier=verifier,  # type: ignore[arg-type]  # duck-typed: only `check` is used
        group_claim="groups",
        admits=admits,
        passthrough=passthrough,
        verify_login=verify_login,
    )
    return auth, verifier


# --- nothing configured, or the static bearer token -----------------------------------------


async def test_without_any_authentication_nobody_is_asked_for_a_credential() -> None:
    auth = Authenticator()
    assert not auth.required
    assert await auth.authenticate(headers(authorization=basic("accountant", "accountant"))) is None


async def test_the_static_token_admits_its_holder_by_the_credentials_name() -> None:
    user = admitted(await Authenticator(token=TOKEN).authenticate(headers(authorization=f"Bearer {TOKEN}")))
    assert user.proxy_identity == Identity("bearer-token")
    assert user.display_name == "bearer-token"
    assert user.access_token.client_id == "bearer-token"
    assert TOKEN not in user.access_token.model_dump_json()  # the session is bound to a fingerprint


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", f"Token {TOKEN}", "Bearer"],
)
async def test_a_missing_or_wrong_static_token_is_refused_with_a_bearer_challenge(authorization: str | None) -> None:
    sent = headers(authorization=authorization) if authorization is not None else headers()
    refusal = refused(await Authenticator(token=TOKEN).authenticate(sent))
    assert (refusal.status_code, refusal.challenge) == (401, "Bearer")
    assert TOKEN not in refusal.message


def test_a_static_token_and_oauth_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude"):
        Authenticator(token=TOKEN, verifier=StubVerifier(oauth_token()))  # type: ignore[arg-type]


# --- passthrough: the person's own 1C login -------------------------------------------------


@pytest.mark.parametrize("header", ["authorization", "x_onec_authorization"])
@pytest.mark.parametrize(("user", "password"), [("accountant", PASSWORD), ("Иванов", "пароль: с двоеточием")])
async def test_a_1c_login_in_basic_admits_that_1c_user(header: str, user: str, password: str) -> None:
    check = LoginCheck()
    auth = Authenticator(passthrough=True, verify_login=check)
    admitted_user = admitted(await auth.authenticate(headers(**{header: basic(user, password)})))
    identity = admitted_user.proxy_identity
    login = parse_basic(basic(user, password))
    assert login is not None
    assert identity.subject == user
    assert identity.onec_login == login
    assert identity.on_behalf_of is None and identity.groups == ()
    assert admitted_user.access_token.subject == login.key == identity.connection_key
    assert check.checked == [identity]
    shown = repr(admitted_user) + repr(identity) + admitted_user.access_token.model_dump_json()
    assert password not in shown
    assert basic(user, password).split()[1] not in shown


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":password-without-user").decode(),
        "Basic " + base64.b64encode("accountant:x".encode("cp1251") + b"\xff").decode(),
        f"Bearer {TOKEN}",
    ],
)
async def test_a_missing_or_malformed_1c_login_is_asked_for_with_a_basic_challenge(authorization: str | None) -> None:
    check = LoginCheck()
    auth = Authenticator(passthrough=True, verify_login=check)
    sent = headers(authorization=authorization) if authorization is not None else headers()
    refusal = refused(await auth.authenticate(sent))
    assert refusal.status_code == 401
    assert refusal.challenge is not None and BASIC_CHALLENGE.match(refusal.challenge)
    assert "Authorization (or X-OneC-Authorization)" in refusal.message
    assert check.checked == []  # nothing to ask 1C about


async def test_with_the_static_token_the_1c_login_travels_in_x_onec_authorization() -> None:
    auth = Authenticator(token=TOKEN, passthrough=True, verify_login=LoginCheck())
    user = admitted(
        await auth.authenticate(
            headers(authorization=f"Bearer {TOKEN}", x_onec_authorization=basic("accountant", PASSWORD))
        )
    )
    login = user.proxy_identity.onec_login
    assert login is not None and login.username == "accountant"
    assert user.access_token.client_id == "bearer-token"
    assert user.access_token.subject is not None and user.access_token.subject.endswith(f"|{login.key}")
    assert PASSWORD not in user.access_token.model_dump_json() and TOKEN not in user.access_token.model_dump_json()


async def test_with_the_static_token_a_login_in_authorization_alone_is_refused_as_a_missing_token() -> None:
    auth = Authenticator(token=TOKEN, passthrough=True, verify_login=LoginCheck())
    refusal = refused(await auth.authenticate(headers(authorization=basic("accountant", PASSWORD))))
    assert (refusal.status_code, refusal.challenge) == (401, "Bearer")


async def test_with_the_static_token_a_request_without_a_1c_login_is_asked_for_it() -> None:
    auth = Authenticator(token=TOKEN, passthrough=True, verify_login=LoginCheck())
    refusal = refused(await auth.authenticate(headers(authorization=f"Bearer {TOKEN}")))
    assert refusal.status_code == 401
    assert refusal.challenge is not None and BASIC_CHALLENGE.match(refusal.challenge)
    assert "in X-OneC-Authorization:" in refusal.message


# --- what 1C says about the login -----------------------------------------------------------


async def test_a_login_1c_rejects_is_asked_for_again_without_its_password() -> None:
    auth = Authenticator(passthrough=True, verify_login=LoginCheck(OneCAuthError("HTTP 401", status_code=401)))
    refusal = refused(await auth.authenticate(headers(authorization=basic("accountant", PASSWORD))))
    assert refusal.status_code == 401
    assert refusal.challenge is not None and BASIC_CHALLENGE.match(refusal.challenge)
    assert "accountant" in refusal.message and PASSWORD not in refusal.message


async def test_a_user_without_the_right_to_the_service_is_forbidden_with_1cs_reason() -> None:
    error = OneCAuthError(
        "1C user 'norights' has no right to use the HTTP service (HTTP 403) at http://srv/base/hs/mcp/rpc: "
        "Недостаточно прав",
        status_code=403,
        reason="Недостаточно прав",
    )
    auth = Authenticator(passthrough=True, verify_login=LoginCheck(error))
    refusal = refused(await auth.authenticate(headers(authorization=basic("norights", "norights"))))
    assert (refusal.status_code, refusal.challenge) == (403, None)
    assert refusal.message == "1C user 'norights' may not use the 1C HTTP service (HTTP 403): Недостаточно прав"
    assert "http://srv" not in refusal.message  # the caller is not signed in: 1C's words, not our URLs


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (OneCConnectionError("Cannot connect to 1C at http://srv/base"), "1C did not answer"),
        (OneCTimeoutError("1C did not answer the health probe (ping) within 10 s"), "1C did not answer"),
        (OneCHTTPError("1C answered ping with HTTP 502", status_code=502), "answered the login check unexpectedly"),
        (IdentityLimitError("all busy (MCP_ONEC_MAX_IDENTITIES); try again later"), "MCP_ONEC_MAX_IDENTITIES"),
    ],
)
async def test_when_1c_cannot_check_the_login_the_answer_is_503(error: OneCError, words: str) -> None:
    auth = Authenticator(passthrough=True, verify_login=LoginCheck(error))
    refusal = refused(await auth.authenticate(headers(authorization=basic("accountant", PASSWORD))))
    assert (refusal.status_code, refusal.challenge) == (503, None)
    assert words in refusal.message
    if not isinstance(error, IdentityLimitError):
        assert "could not be checked" in refusal.message and str(error) not in refusal.message


# --- OAuth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer ", basic("accountant", PASSWORD)])
async def test_without_a_bearer_token_oauth_points_to_the_metadata_with_no_error_code(
    authorization: str | None,
) -> None:
    auth, verifier = oauth()
    sent = headers(authorization=authorization) if authorization is not None else headers()
    refusal = refused(await auth.authenticate(sent, METADATA))
    assert refusal.status_code == 401
    assert refusal.challenge == f'Bearer resource_metadata="{METADATA}"'  # RFC 6750 §3.1: no error code
    assert verifier.seen == []


async def test_without_a_metadata_url_the_challenge_is_plain_bearer() -> None:
    auth, _ = oauth()
    refusal = refused(await auth.authenticate(headers()))
    assert refusal.challenge == "Bearer"


async def test_the_challenge_names_the_scopes_to_ask_for() -> None:
    auth, _ = oauth(required_scopes=["mcp", "1c.read"])
    missing = refused(await auth.authenticate(headers(), METADATA))
    auth, _ = oauth(
        TokenRejected("the token lacks the scope 1c.read", error="insufficient_scope"),
        required_scopes=["mcp", "1c.read"],
    )
    lacking = refused(await auth.authenticate(headers(authorization="Bearer x"), METADATA))
    assert missing.challenge == f'Bearer resource_metadata="{METADATA}", scope="mcp 1c.read"'
    assert lacking.challenge is not None
    assert challenge_params(lacking.challenge) == {
        "resource_metadata": METADATA,
        "scope": "mcp 1c.read",
        "error": "insufficient_scope",
        "error_description": "the token lacks the scope 1c.read",
    }


async def test_without_a_metadata_url_a_rejected_token_still_gets_a_well_formed_challenge() -> None:
    auth, _ = oauth(TokenRejected("the token has expired"))
    refusal = refused(await auth.authenticate(headers(authorization="Bearer x")))
    assert refusal.challenge == 'Bearer error="invalid_token", error_description="the token has expired"'


@pytest.mark.parametrize(
    ("rejected", "status"),
    [
        (TokenRejected("the token has expired (more than 30 s ago)"), 401),
        (TokenRejected("the token lacks the scope mcp", error="insufficient_scope"), 403),
    ],
)
async def test_a_rejected_token_gets_the_error_and_its_description_in_the_challenge(
    rejected: TokenRejected, status: int
) -> None:
    auth, verifier = oauth(rejected)
    refusal = refused(await auth.authenticate(headers(authorization="Bearer the.jwt.itself"), METADATA))
    assert verifier.seen == ["the.jwt.itself"]
    assert (refusal.status_code, refusal.oauth_error, refusal.message) == (status, rejected.error, rejected.description)
    assert refusal.challenge is not None and refusal.challenge.startswith("Bearer ")
    assert challenge_params(refusal.challenge) == {
        "resource_metadata": METADATA,
        "error": rejected.error,
        "error_description": rejected.description,
    }


@pytest.mark.parametrize(
    "description",
    [
        'the issuer publishes no key "k1"',
        'a "quoted" name, a \\ backslash and a trailing quote"',
        "ключ «k1» не найден",
    ],
)
async def test_a_description_with_quotes_or_other_letters_keeps_the_challenge_well_formed(description: str) -> None:
    auth, _ = oauth(TokenRejected(description))
    refusal = refused(await auth.authenticate(headers(authorization="Bearer x"), METADATA))
    challenge = refusal.challenge
    assert challenge is not None and challenge.isascii()
    params = challenge_params(challenge)
    assert set(params) == {"resource_metadata", "error", "error_description"}
    assert params["resource_metadata"] == METADATA and params["error"] == "invalid_token"
    # Nothing of the challenge is left outside its quoted parameters.
    assert QUOTED_PARAM.sub("", challenge.removeprefix("Bearer ")).replace(",", "").strip() == ""
    assert json.loads(refusal.response().body)["error_description"] == description  # the body keeps it whole


async def test_a_token_header_with_a_line_break_cannot_break_the_challenge() -> None:
    def unsigned(header: dict[str, str]) -> str:
        part = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        return f"{part}.e30.c2ln"

    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"the issuer was asked: {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(no_network)) as http:
        verifier = JWTVerifier("https://issuer.example", "https://proxy.example/mcp", http=http)
        auth = Authenticator(verifier=verifier)
        token = unsigned({"alg": "HS256\r\nSet-Cookie: x=1", "typ": "JWT"})
        refusal = refused(await auth.authenticate(headers(authorization=f"Bearer {token}"), METADATA))
    assert refusal.status_code == 401
    assert refusal.challenge is not None
    assert "\r" not in refusal.challenge and "\n" not in refusal.challenge


async def test_a_user_no_group_admits_is_forbidden_with_the_policys_reason() -> None:
    seen: list[Sequence[str]] = []

    def admits(groups: Sequence[str]) -> str | None:
        seen.append(groups)
        return "none of your groups (accountants, staff) is listed in MCP_POLICY_FILE"

    auth, _ = oauth(admits=admits)
    refusal = refused(await auth.authenticate(headers(authorization="Bearer x"), METADATA))
    assert (refusal.status_code, refusal.oauth_error) == (403, "insufficient_scope")
    assert "MCP_POLICY_FILE" in refusal.message
    assert seen == [("accountants", "staff")]


async def test_a_signed_in_user_reaches_1c_on_the_service_account_in_their_own_name() -> None:
    token = oauth_token()
    auth, _ = oauth(token, admits=lambda groups: None)
    user = admitted(await auth.authenticate(headers(authorization="Bearer x"), METADATA))
    assert user.proxy_identity == Identity("petrova", groups=("accountants", "staff"), on_behalf_of="petrova")
    assert user.access_token == token
    assert user.display_name == "petrova"


async def test_groups_may_come_as_one_string_and_a_user_without_a_name_goes_by_subject() -> None:
    token = oauth_token(preferred_username=None, groups="Domain Users")
    auth, _ = oauth(token)
    identity = admitted(await auth.authenticate(headers(authorization="Bearer x"))).proxy_identity
    assert identity == Identity("u-1", groups=("Domain Users",), on_behalf_of="u-1")  # one group, space and all


async def test_with_passthrough_a_signed_in_user_reaches_1c_with_their_own_login() -> None:
    check = LoginCheck()
    auth, _ = oauth(passthrough=True, verify_login=check)
    sent = headers(authorization="Bearer x", x_onec_authorization=basic("accountant", PASSWORD))
    user = admitted(await auth.authenticate(sent, METADATA))
    login = parse_basic(basic("accountant", PASSWORD))
    assert login is not None
    assert user.proxy_identity == Identity("petrova", groups=("accountants", "staff"), onec_login=login)
    assert user.proxy_identity.on_behalf_of is None  # 1C knows the person by the login itself
    # The session belongs to this token's user with this 1C login.
    assert user.access_token.subject == f"u-1|{login.key}"
    assert user.access_token.client_id == "mcp-client"
    assert check.checked == [user.proxy_identity]
    assert PASSWORD not in user.access_token.model_dump_json()


async def test_with_passthrough_a_signed_in_user_without_a_1c_login_is_asked_for_it() -> None:
    auth, _ = oauth(passthrough=True, verify_login=LoginCheck())
    refusal = refused(await auth.authenticate(headers(authorization="Bearer x"), METADATA))
    assert refusal.status_code == 401
    assert refusal.challenge is not None and BASIC_CHALLENGE.match(refusal.challenge)
    assert "X-OneC-Authorization" in refusal.message


async def test_with_passthrough_a_refused_token_is_refused_before_the_login_is_checked() -> None:
    check = LoginCheck()
    auth, _ = oauth(TokenRejected("the token has expired"), passthrough=True, verify_login=check)
    sent = headers(authorization="Bearer x", x_onec_authorization=basic("accountant", PASSWORD))
    refusal = refused(await auth.authenticate(sent, METADATA))
    assert refusal.oauth_error == "invalid_token"
    assert check.checked == []


# --- the refusal as an HTTP answer ----------------------------------------------------------


def test_an_oauth_refusal_answers_with_the_json_error() -> None:
    refusal = Refusal(401, 'the token has "expired"', 'Bearer error="invalid_token"', "invalid_token")
    response = refusal.response()
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body) == {"error": "invalid_token", "error_description": 'the token has "expired"'}


def test_other_refusals_answer_with_their_message_as_text() -> None:
    basic_refusal = Refusal(401, "Send your 1C login", 'Basic realm="1C", charset="UTF-8"').response()
    forbidden = Refusal(403, "Недостаточно прав").response()
    assert basic_refusal.headers["www-authenticate"] == 'Basic realm="1C", charset="UTF-8"'
    assert basic_refusal.headers["content-type"] == "text/plain; charset=utf-8"
    assert basic_refusal.body == b"Send your 1C login"
    assert forbidden.status_code == 403 and "www-authenticate" not in forbidden.headers
    assert forbidden.body.decode() == "Недостаточно прав"


# --- from the settings ----------------------------------------------------------------------


async def test_the_settings_choose_the_token_and_passthrough() -> None:
    settings = Settings(_env_file=None, auth_token=TOKEN, onec_auth="passthrough")  # type: ignore[call-arg]
    auth = Authenticator.from_settings(settings)
    assert auth.required and not auth.uses_oauth
    user = admitted(
        await auth.authenticate(
            headers(authorization=f"Bearer {TOKEN}", x_onec_authorization=basic("accountant", PASSWORD))
        )
    )
    assert user.proxy_identity.onec_user == "accountant"
