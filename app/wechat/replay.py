"""Callback signatures are spent once: the freshness window and the record of used signatures.

In plaintext and compatible mode WeChat's ``signature`` covers the Token, ``timestamp`` and
``nonce``, not the body. A signed query that leaves the server (a proxy's log, a tunnel, a
verification GET that went elsewhere) would let anyone post any message with it, such as a
scan of their own QR code in someone's name. So a signature is good for one request, GET or
POST, while its ``timestamp`` is within ``max_age_seconds`` of now, and its record lives for as
long as that timestamp could still pass.

A signature can also be reserved for a verification GET (``flask wechat check`` does so before
sending one): that GET is accepted once, and no POST ever is.

Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Access_Overview.html
"""

import time
from collections.abc import Callable

import redis

from .errors import StaleSignatureError
from .messages import is_timestamp

#: What the record of a signature holds: used, or reserved for one verification GET.
SPENT = "spent"
VERIFICATION_ONLY = "verification-only"


class SignatureLedger:
    """Accepts each callback signature once, and only with a fresh timestamp.

    Args:
        redis_client: the Redis every worker shares, ``decode_responses=True``.
        max_age_seconds: how far a ``timestamp`` may be from now, either way, in seconds
            (``WECHAT_CALLBACK_MAX_AGE_SECONDS``).
        clock: returns the time in epoch seconds.
        prefix: put before every key (``REDIS_KEY_PREFIX``).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        max_age_seconds: int,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "",
    ) -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._max_age = max_age_seconds
        self._clock = clock

    @property
    def _record_seconds(self) -> int:
        # A timestamp up to max_age ahead of now passes until max_age after it: the record of
        # a signature accepted now must last twice max_age, or a replay late in the window
        # would find it gone.
        return 2 * self._max_age

    def key(self, signature: str) -> str:
        """The Redis key recording ``signature``."""
        return f"{self._prefix}wechat:signature:{signature}"

    def spend(self, signature: str, timestamp: str, *, verification: bool = False) -> None:
        """Accept a validly signed callback's query once, or refuse it.

        Args:
            signature: the query's ``signature``, already checked against our Token.
            timestamp: the query's ``timestamp``, epoch seconds as WeChat writes them.
            verification: True for WeChat's verification GET, which may also spend a
                signature reserved by ``reserve_for_verification``.

        Raises:
            StaleSignatureError: the timestamp is malformed or further than
                ``max_age_seconds`` from now, or the signature was used (or, for a POST,
                reserved for a verification) before.
            redis.RedisError: Redis could not be asked; nothing is known about the signature.
        """
        if not is_timestamp(timestamp):
            raise StaleSignatureError("invalid timestamp")
        if abs(self._clock() - int(timestamp)) > self._max_age:
            raise StaleSignatureError("stale timestamp")
        key = self.key(signature)
        if verification:
            # One command, so that two requests racing with one query cannot both find it unused.
            if self._redis.set(key, SPENT, get=True, ex=self._record_seconds) == SPENT:
                raise StaleSignatureError("replayed signature")
            return
        if self._redis.set(key, SPENT, nx=True, ex=self._record_seconds):
            return
        if self._redis.get(key) == VERIFICATION_ONLY:
            raise StaleSignatureError("signature reserved for a verification GET")
        raise StaleSignatureError("replayed signature")

    def reserve_for_verification(self, signature: str) -> None:
        """Record a signature we made for a verification GET of our own: our callback will
        accept it for one GET and refuse it on every POST, wherever the query ends up.

        Args:
            signature: the signature of the query about to be sent, made just now.

        Raises:
            redis.RedisError: Redis could not be asked; do not send the query.
        """
        self._redis.set(self.key(signature), VERIFICATION_ONLY, nx=True, ex=self._record_seconds)
