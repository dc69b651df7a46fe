"""Who a request comes from, and as whom it reaches 1C.

An `Identity` is made once per HTTP request by the request guard (from the bearer token, the OAuth
token and the 1C login the client sent) and once for a stdio proxy (its operating-system user and
the service account). Everything after the guard reads it; nothing else parses credentials.

* `subject`: the name policy, audit and logs use: the token's user, the 1C user, the credential's
  name ("bearer-token") or the operating-system user. Never a secret.
* `groups`: the groups an OAuth token puts its user in (for `MCP_POLICY_FILE`).
* `onec_login`: with `MCP_ONEC_AUTH=passthrough`, the person's own 1C login; None means the
  service account of the settings.
* `on_behalf_of`: the signed-in user named to 1C in `MCP_ONEC_USER_HEADER` on calls made with the
  service account (OAuth without passthrough).

    login = parse_basic("Basic aXZhbm92OnNlY3JldA==")     # OneCLogin("ivanov", ...)
    identity = Identity("ivanov", onec_login=login)
    identity.connection_key                               # a hash: the key of its 1C connection
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from pydantic import SecretStr

__all__ = ["SERVICE_KEY", "Identity", "OneCLogin", "parse_basic"]

SERVICE_KEY = "service"  # the connection key of the service account
_PROCESS_SECRET = secrets.token_bytes(32)


@dataclass(frozen=True)
class OneCLogin:
    """A 1C user's login, kept in memory only; its `key` is a hash, safe to log and to compare."""

    username: str
    password: SecretStr
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: every request of a passthrough client looks its connection up by it. Keyed
        # with a secret of this process, so the key, if it ever showed, says nothing of the password.
        login = f"{self.username}\x00{self.password.get_secret_value()}".encode()
        digest = hmac.new(_PROCESS_SECRET, login, hashlib.sha256).hexdigest()[:32]
        object.__setattr__(self, "key", "onec:" + digest)

    def __repr__(self) -> str:
        return f"OneCLogin(username={self.username!r}, password='**********')"


@dataclass(frozen=True)
class Identity:
    subject: str
    groups: tuple[str, ...] = ()
    onec_login: OneCLogin | None = None
    on_behalf_of: str | None = None

    @property
    def connection_key(self) -> str:
        """Which 1C connection serves this identity: the service account's or the login's own."""
        return SERVICE_KEY if self.onec_login is None else self.onec_login.key

    @property
    def onec_user(self) -> str | None:
        """The 1C user the calls run as, when it is the person's own login (None: the service account)."""
        return None if self.onec_login is None else self.onec_login.username


def parse_basic(header: str) -> OneCLogin | None:
    """`Basic <base64 user:password>` (UTF-8, as 1C's web server expects) -> OneCLogin; None if malformed."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        return None
    return OneCLogin(username, SecretStr(password))
