"""WeChat's retries, answered once: WeChat posts a message again when our answer took over
5 s (three tries in all). The first delivery claims the message; a retry gets the reply the
first one gave, or waits its turn, and changes nothing.

Keys (after the prefix): ``wechat:dedupe:<dedupe_key>``, the reply given (``""`` while the
first delivery is being handled), for ``DEDUPE_SECONDS``.
"""

import redis

#: How long a callback is remembered for dedupe, in seconds. WeChat retries within ~15 s.
DEDUPE_SECONDS = 300


class RetryLedger:
    """Claims of callbacks by their ``Message.dedupe_key``, and the replies given to them.

    Args:
        redis_client: the shared Redis, ``decode_responses=True``.
        prefix: put before every key (``REDIS_KEY_PREFIX``).
    """

    def __init__(self, redis_client: redis.Redis, *, prefix: str = "") -> None:
        self._redis = redis_client
        self._prefix = prefix

    def _key(self, dedupe_key: str) -> str:
        return f"{self._prefix}wechat:dedupe:{dedupe_key}"

    def claim_of(self, dedupe_key: str) -> tuple[str, int]:
        """``(key, seconds)``: the claim ``claim`` takes, for a writer that takes it in the same
        step as its own write (``LoginStore.confirm``); ``reply_of`` then reads a retry's reply."""
        return self._key(dedupe_key), DEDUPE_SECONDS

    def reply_of(self, dedupe_key: str) -> str:
        """The reply stored for a claimed callback (``""`` for none, or none yet)."""
        return self._redis.get(self._key(dedupe_key)) or ""

    def claim(self, dedupe_key: str) -> str | None:
        """Claim a callback for processing, or learn the reply already given to it.

        Args:
            dedupe_key: ``Message.dedupe_key``.

        Returns:
            None when this is the first delivery (process it, then ``remember``); the stored
            reply content (``""`` for none, or while the first delivery is still being
            processed) for a retry.
        """
        if self._redis.set(self._key(dedupe_key), "", nx=True, ex=DEDUPE_SECONDS):
            return None
        return self.reply_of(dedupe_key)

    def remember(self, dedupe_key: str, reply: str) -> None:
        """Store the reply given to a claimed callback, for its retries."""
        self._redis.set(self._key(dedupe_key), reply, ex=DEDUPE_SECONDS)

    def release(self, dedupe_key: str) -> None:
        """Forget a claim whose processing failed, so WeChat's retry is processed afresh."""
        self._redis.delete(self._key(dedupe_key))
