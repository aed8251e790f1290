"""User records, one per openid, in Redis (this app's database)."""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class User:
    """A person who has signed in with WeChat.

    Attributes:
        id: their own id here: random, given at the first login, never derived from a WeChat
            id; the OpenID Connect ``sub``. None for a record from before ids, until its next
            login gives it one.
        openid: their openid under our official account (the record's key).
        unionid: their unionid when the account is bound to an Open Platform account, else None.
        first_login_at, last_login_at: epoch seconds.
        login_count: completed scans that signed them in.
    """

    id: str | None
    openid: str
    unionid: str | None
    first_login_at: float
    last_login_at: float
    login_count: int

    def to_json(self) -> dict[str, Any]:
        """The public shape: ``{"id", "openid", "unionid", "first_login_at", "last_login_at",
        "login_count"}`` with times in ISO 8601 (UTC)."""
        return {
            "id": self.id,
            "openid": self.openid,
            "unionid": self.unionid,
            "first_login_at": _iso(self.first_login_at),
            "last_login_at": _iso(self.last_login_at),
            "login_count": self.login_count,
        }


class UserStore:
    """Reads and writes ``user:<openid>`` hashes.

    Args:
        redis_client: a client with ``decode_responses=True``.
        clock: returns the time in epoch seconds.
        prefix: put before every key (``REDIS_KEY_PREFIX``).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "",
    ) -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._clock = clock

    def record_login(self, openid: str) -> User:
        """Count one sign-in: create the record on the first, update the times and count, and
        give the person their id if they have none yet (records from before ids get one here).

        Returns:
            The user as recorded, read back in the same round trip.
        """
        key = f"{self._prefix}user:{openid}"
        now = repr(self._clock())
        new_id = secrets.token_urlsafe(16)
        with self._redis.pipeline() as pipe:
            pipe.hsetnx(key, "first_login_at", now)
            pipe.hsetnx(key, "id", new_id)
            pipe.hset(key, mapping={"openid": openid, "last_login_at": now})
            pipe.hincrby(key, "login_count", 1)
            pipe.hgetall(key)
            user = _user_from(openid, pipe.execute()[-1])
        if user.id == new_id:
            self._redis.set(self._id_key(new_id), openid)
        return user

    def by_id(self, user_id: str) -> User | None:
        """Load a user by their id (``User.id``), or None."""
        openid = self._redis.get(self._id_key(user_id))
        user = self.get(openid) if openid else None
        return user if user is not None and user.id == user_id else None

    def _id_key(self, user_id: str) -> str:
        return f"{self._prefix}user:id:{user_id}"

    def set_unionid(self, openid: str, unionid: str) -> None:
        """Attach the unionid learned from ``user/info`` to an existing record (else nothing:
        a record holding only a unionid would not be a user)."""
        key = f"{self._prefix}user:{openid}"

        def attach(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(key):
                pipe.multi()
                pipe.hset(key, "unionid", unionid)

        self._redis.transaction(attach, key)

    def add_device(self, openid: str, browser_hash: str) -> bool:
        """Remember that ``openid`` signed in from the browser with this binding-secret hash.

        Returns:
            True if the browser was new to them (this call made it known).
        """
        return bool(self._redis.sadd(f"{self._prefix}user:{openid}:devices", browser_hash))

    def forget_device(self, openid: str, browser_hash: str) -> None:
        """Stop trusting a browser for ``openid``: its next scan asks to confirm again."""
        self._redis.srem(f"{self._prefix}user:{openid}:devices", browser_hash)

    def knows_device(self, openid: str, browser_hash: str) -> bool:
        """Tell whether ``openid`` has signed in from this browser before."""
        return bool(self._redis.sismember(f"{self._prefix}user:{openid}:devices", browser_hash))

    def get(self, openid: str) -> User | None:
        """Load a user, or None if they never signed in.

        A record without what ``record_login`` writes (cut short, or holding only a unionid) is
        no user either: the next sign-in completes it, and until then it is never an error.
        """
        try:
            return _user_from(openid, self._redis.hgetall(f"{self._prefix}user:{openid}"))
        except (KeyError, ValueError):
            return None


def _user_from(openid: str, data: dict[str, str]) -> User:
    return User(
        id=data.get("id"),
        openid=openid,
        unionid=data.get("unionid") or None,
        first_login_at=float(data["first_login_at"]),
        last_login_at=float(data["last_login_at"]),
        login_count=int(data["login_count"]),
    )
