"""The provider's state in Redis: authorization codes, tokens by family, consents, and the
authorization requests waiting for a sign-in or a consent.

Tokens are stored under the SHA-256 of their value (Redis never holds a usable token). Every
token descends from one authorization code: the code, the access and refresh tokens issued
for it and every rotation after are one *family*, revoked together when a code or a rotated
refresh token is used twice (RFC 6749 section 4.1.2, OAuth 2.0 Security BCP section 4.14), when
the session they came from ends, or when their client is removed.

Keys (after ``REDIS_KEY_PREFIX``):

- ``oidc:code:<code>``: hash of the authorization request; 60 s, kept a little longer once
  used so that a second use is recognised.
- ``oidc:token:<sha256>``: hash ``{kind, client_id, user_id, scope, sid, family, auth_time}``,
  ``kind`` ``access`` or ``refresh``, TTL its life; ``oidc:spent:<sha256>``: the family of a
  refresh token already rotated.
- ``oidc:family:<family>``: set of the token hashes of a family; ``oidc:client:<id>:families``.
- ``oidc:consent:<user_id>:<client_id>``: set of the scopes the person allowed.
- ``oidc:request:<id>``: an authorization request waiting for a sign-in or a consent.
"""

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from ..metrics import OIDC_REFRESH_REUSE

#: The ``amr`` value of each login method.
AMR = {
    "scan": "wechat_scan",
    "message": "wechat_message",
    "wechat_browser": "wechat_oauth",
    "open_qr": "wechat_open",
}

#: Longest life of an authorization code, in seconds.
CODE_SECONDS = 60
#: How long a used code is remembered, so that a replay revokes what it gave (seconds).
SPENT_CODE_SECONDS = 600
#: How long an authorization request may wait for a sign-in or a consent, in seconds.
REQUEST_SECONDS = 600


def token_hash(value: str) -> str:
    """SHA-256 hex of a token, code or secret: what Redis keeps instead of the value."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class AuthorizationCode:
    """An authorization code's grant, as Authlib's ``AuthorizationCodeMixin`` reads it.

    Attributes:
        code: the code itself (only in memory).
        client_id, redirect_uri, scope: what was asked, exactly.
        user_id: who signed in (``sub``).
        sid: the session it came from.
        auth_time: when they signed in, epoch seconds.
        nonce, code_challenge, code_challenge_method: from the request ("" when absent).
        method: the login method of the session (``amr`` says it: ``AMR``).
        family: the token family its tokens belong to.
    """

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user_id: str
    sid: str
    auth_time: int
    nonce: str = ""
    code_challenge: str = ""
    code_challenge_method: str = ""
    method: str = "scan"
    family: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce or None

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> list[str]:
        return [AMR.get(self.method, "wechat_scan")]


@dataclass(frozen=True)
class Token:
    """A stored access or refresh token (without its value).

    Attributes:
        kind: ``access`` or ``refresh``.
        client_id, user_id, scope, sid, family: whose, for what, from which session and code.
        auth_time: when the person signed in, epoch seconds.
        expires_at: epoch seconds.
    """

    kind: str
    client_id: str
    user_id: str
    scope: str
    sid: str
    family: str
    auth_time: int
    expires_at: float

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(int(self.expires_at - time.time()), 0)

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False  # a revoked token is deleted: it is never found

    def get_user(self) -> str:
        return self.user_id

    def get_client(self) -> str:
        return self.client_id

    def check_client(self, client: Any) -> bool:
        return client.get_client_id() == self.client_id


class TokenStore:
    """Codes, tokens, consents and waiting requests in Redis.

    Args:
        redis_client: a client with ``decode_responses=True``.
        prefix: put before every key (``REDIS_KEY_PREFIX``).
        clock: returns the time in epoch seconds.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._clock = clock

    def _key(self, name: str) -> str:
        return self._prefix + "oidc:" + name

    # Authorization codes.

    def save_code(self, code: AuthorizationCode) -> None:
        """Store a new authorization code for ``CODE_SECONDS``."""
        record = {name: str(value) for name, value in vars(code).items() if name != "code"}
        key = self._key(f"code:{token_hash(code.code)}")
        with self._redis.pipeline() as pipe:
            pipe.hset(key, mapping=record)
            pipe.expire(key, CODE_SECONDS)
            pipe.execute()

    def use_code(self, code: str, client_id: str) -> AuthorizationCode | None:
        """Spend an authorization code of ``client_id``: once.

        A second use finds it spent: every token issued from it is revoked (the code leaked)
        and None is returned, as for an unknown or expired code or another client's.
        """
        key = self._key(f"code:{token_hash(code)}")
        with self._redis.pipeline() as pipe:
            pipe.hgetall(key)
            pipe.hsetnx(key, "used", "1")
            pipe.expire(key, SPENT_CODE_SECONDS)
            record, first_use, _ = pipe.execute()
        if not record:
            self._redis.delete(key)  # gone before HSETNX: it made a stray hash
            return None
        if not first_use:
            OIDC_REFRESH_REUSE.inc()
            self.revoke_family(record["family"])
            return None
        if record["client_id"] != client_id:
            return None
        fields = {name: value for name, value in record.items() if name != "used"}
        return AuthorizationCode(code=code, **{**fields, "auth_time": int(fields["auth_time"])})

    # Tokens.

    def save_tokens(
        self,
        token: dict[str, Any],
        *,
        client_id: str,
        user_id: str,
        sid: str,
        family: str,
        auth_time: int,
        refresh_seconds: int,
    ) -> None:
        """Store the access (and refresh) token of a token response, in ``family``."""
        now = self._clock()
        scope = token.get("scope", "")
        base = {
            "client_id": client_id,
            "user_id": user_id,
            "scope": scope,
            "sid": sid,
            "family": family,
            "auth_time": str(auth_time),
        }
        lives = [("access", token["access_token"], int(token["expires_in"]))]
        if token.get("refresh_token"):
            lives.append(("refresh", token["refresh_token"], refresh_seconds))
        family_key = self._key(f"family:{family}")
        with self._redis.pipeline() as pipe:
            for kind, value, seconds in lives:
                key = self._key(f"token:{token_hash(value)}")
                pipe.hset(key, mapping={**base, "kind": kind, "expires_at": repr(now + seconds)})
                pipe.expire(key, seconds)
                pipe.sadd(family_key, token_hash(value))
            pipe.expire(family_key, refresh_seconds)
            pipe.sadd(self._key(f"client:{client_id}:families"), family)
            pipe.execute()

    def get_token(self, value: str, kind: str) -> Token | None:
        """The live token of ``kind`` with this value, or None."""
        record = self._redis.hgetall(self._key(f"token:{token_hash(value)}"))
        if not record or record.get("kind") != kind:
            return None
        token = Token(
            kind=record["kind"],
            client_id=record["client_id"],
            user_id=record["user_id"],
            scope=record["scope"],
            sid=record["sid"],
            family=record["family"],
            auth_time=int(record["auth_time"]),
            expires_at=float(record["expires_at"]),
        )
        return None if token.is_expired() else token

    def spend_refresh_token(self, value: str) -> Token | None:
        """Take a refresh token for its one rotation.

        Returns:
            The token, now spent; None if unknown or expired. A refresh token that was
            already rotated revokes its whole family (it was stolen, or its copy was).
        """
        digest = token_hash(value)
        spent_family = self._redis.get(self._key(f"spent:{digest}"))
        if spent_family:
            OIDC_REFRESH_REUSE.inc()
            self.revoke_family(spent_family)
            return None
        token = self.get_token(value, "refresh")
        if token is None:
            return None
        key = self._key(f"token:{digest}")
        with self._redis.pipeline() as pipe:
            pipe.delete(key)
            pipe.set(
                self._key(f"spent:{digest}"),
                token.family,
                ex=max(int(token.expires_at - self._clock()), 1),
            )
            deleted, _ = pipe.execute()
        # Two rotations at once: only the one whose DEL removed it goes on.
        return token if deleted else None

    def revoke_token(self, value: str) -> bool:
        """Revoke one token's family (RFC 7009: revoking a refresh token may revoke the access
        tokens of its grant; we revoke the family either way). True if it was found."""
        record = self._redis.hget(self._key(f"token:{token_hash(value)}"), "family")
        if record:
            self.revoke_family(record)
        return bool(record)

    def revoke_family(self, family: str) -> None:
        """Delete every token of ``family``: they stop working at once."""
        family_key = self._key(f"family:{family}")
        digests = self._redis.smembers(family_key)
        with self._redis.pipeline() as pipe:
            for digest in digests:
                pipe.delete(self._key(f"token:{digest}"))
            pipe.delete(family_key)
            pipe.execute()

    def revoke_client(self, client_id: str) -> None:
        """Revoke every token ever issued to ``client_id`` that still lives."""
        key = self._key(f"client:{client_id}:families")
        for family in self._redis.smembers(key):
            self.revoke_family(family)
        self._redis.delete(key)

    # Consents.

    def consented(self, user_id: str, client_id: str, scope: str) -> bool:
        """Whether the person allowed ``client_id`` every scope in ``scope`` before."""
        wanted = set(scope.split())
        allowed = self._redis.smembers(self._key(f"consent:{user_id}:{client_id}"))
        return wanted <= allowed

    def consent(self, user_id: str, client_id: str, scope: str) -> None:
        """Remember that the person allowed ``client_id`` these scopes."""
        self._redis.sadd(self._key(f"consent:{user_id}:{client_id}"), *scope.split())

    # Authorization requests waiting for a sign-in or a consent.

    def hold_request(self, request: dict[str, Any]) -> str:
        """Keep a waiting authorization request for ``REQUEST_SECONDS``: its id."""
        request_id = secrets.token_urlsafe(16)
        self._redis.set(self._key(f"request:{request_id}"), json.dumps(request), ex=REQUEST_SECONDS)
        return request_id

    def held_request(self, request_id: str) -> dict[str, Any] | None:
        """A waiting authorization request, or None if unknown or too old."""
        if not request_id or len(request_id) > 64:
            return None
        data = self._redis.get(self._key(f"request:{request_id}"))
        return json.loads(data) if data else None

    def release_request(self, request_id: str) -> None:
        """Forget a waiting request once it was answered."""
        self._redis.delete(self._key(f"request:{request_id}"))
