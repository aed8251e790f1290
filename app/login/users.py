"""User records, one per openid, in Redis (this app's database)."""

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
        openid: their openid under our official account (the record's key).
        unionid: their unionid when the account is bound to an Open Platform account, else None.
        first_login_at, last_login_at: epoch seconds.
        login_count: completed scans that signed them in.
    """

    openid: str
    unionid: str | None
    first_login_at: float
    last_login_at: float
    login_count: int

    def to_json(self) -> dict[str, Any]:
        """The public shape: ``{"openid", "unionid", "first_login_at", "last_login_at",
        "login_count"}`` with times in ISO 8601 (UTC)."""
        return {
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
        """Count one sign-in: create the record on the first, update the times and count.

        Returns:
            The user as recorded, read back in the same round trip.
        """
        key = f"{self._prefix}user:{openid}"
        now = repr(self._clock())
        with self._redis.pipeline() as pipe:
            pipe.hsetnx(key, "first_login_at", now)
            pipe.hset(key, mapping={"openid": openid, "last_login_at": now})
            pipe.hincrby(key, "login_count", 1)
            pipe.hgetall(key)
            return _user_from(openid, pipe.execute()[-1])

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
        openid=openid,
        unionid=data.get("unionid") or None,
        first_login_at=float(data["first_login_at"]),
        last_login_at=float(data["last_login_at"]),
        login_count=int(data["login_count"]),
    )
