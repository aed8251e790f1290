"""Message-code login: the page shows a short code, the person sends it to the account as a
text message, and the callback signs that page in.

Every account type receives text messages, so this works where parametric QR codes do not
(subscription and unverified accounts, WeChat's 48001).

The odds of a guess: ``len(ALPHABET) ** CODE_LENGTH`` = 31**7 = 27,512,614,111 codes. With
``MAX_LIVE_ATTEMPTS`` = 10,000 attempts live at once, one guess hits one of them with
probability 10,000 / 27,512,614,111 = 3.6e-7, under ``MAX_HIT_PER_GUESS`` = 1e-6 (six
characters would give 1.1e-5). And an openid may send at most ``SLOW_DOWN`` codes a minute and
``IGNORE_AFTER`` an hour: 240 guesses a day, 8.7e-5 for a day of trying.

Keys (after ``REDIS_KEY_PREFIX``): ``login:message-code:<code>`` (the scene; TTL the QR's
life), and the guess counters of ``limits`` under ``limits:`` (moving windows per openid).
"""

import secrets
import unicodedata
from collections.abc import Callable

import redis
from limits import RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

#: Easy to read and type on a phone: digits and capitals without 0/O and 1/I/L (codes are
#: matched case-insensitively, so a lower-case l would be an L).
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 7

#: The guessing bound the code length is chosen for: with this many attempts live at once,
#: one guess hits any of them with at most this probability.
MAX_LIVE_ATTEMPTS = 10_000
MAX_HIT_PER_GUESS = 1e-6

#: Code messages one openid may send: more within a minute are answered "wait a minute"...
SLOW_DOWN = RateLimitItemPerMinute(3)
#: ...and more within an hour are ignored (acknowledged with no reply) until it has passed.
IGNORE_AFTER = RateLimitItemPerHour(10)

#: Replies to a code message that signs nobody in.
WRONG_CODE_REPLY = "验证码不正确或已过期。请核对网页上的验证码后重新发送，或刷新网页获取新的。"
SLOWED_REPLY = "发送验证码太频繁了，请 1 分钟后再试。"

#: Issuing gives up after this many codes already taken (at 10,000 live, each try collides
#: with probability 3.6e-7: reaching it means Redis answers strangely, not bad luck).
MAX_ISSUE_TRIES = 5


def new_code() -> str:
    """A fresh random code: ``CODE_LENGTH`` characters of ``ALPHABET``."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize(text: str) -> str:
    """What a person typed, as a code would be compared: full-width characters made
    half-width (NFKC), surrounding spaces removed, upper case. Nothing else is forgiven."""
    return unicodedata.normalize("NFKC", text).strip().upper()


def as_code(text: str) -> str | None:
    """The code ``text`` carries (see ``normalize``), or None when it is not shaped like one
    (``CODE_LENGTH`` characters of ``ALPHABET``): then it is an ordinary message, never a
    guess. "1" and "0" never are: they answer a confirmation."""
    code = normalize(text)
    if len(code) == CODE_LENGTH and all(char in ALPHABET for char in code):
        return code
    return None


class MessageCodes:
    """Message codes in Redis: each maps to its attempt's scene for the QR's life.

    Args:
        redis_client: a client with ``decode_responses=True``.
        limit_storage: ``limits`` storage on the same Redis (``memory://`` with the stand-in),
            where each openid's code messages are counted.
        prefix: ``REDIS_KEY_PREFIX``.
        new: makes a candidate code (tests inject colliding ones).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        limit_storage: Storage,
        *,
        prefix: str = "",
        new: Callable[[], str] = new_code,
    ) -> None:
        self._redis = redis_client
        self._limiter = MovingWindowRateLimiter(limit_storage)
        self._prefix = prefix
        self._new = new

    def _key(self, code: str) -> str:
        return f"{self._prefix}login:message-code:{code}"

    def issue(self, scene: str, expire_seconds: int) -> str:
        """A code for ``scene`` that no other live attempt holds (``SET NX``).

        Args:
            scene: the attempt's scene.
            expire_seconds: the attempt's life, in seconds: the code lives as long.

        Raises:
            RuntimeError: ``MAX_ISSUE_TRIES`` candidates were all taken.
            redis.RedisError: Redis could not be written.
        """
        for _ in range(MAX_ISSUE_TRIES):
            code = self._new()
            if self._redis.set(self._key(code), scene, nx=True, ex=max(expire_seconds, 1)):
                return code
        raise RuntimeError("no free message code")

    def scene_of(self, code: str) -> str | None:
        """The scene of the live attempt holding ``code`` (as ``as_code`` gives it), or None."""
        return self._redis.get(self._key(code))

    def allowed(self, openid: str) -> bool | None:
        """Count a code message from ``openid``, if it may send one now.

        Every code message counts, right or wrong: a person signing in sends one.

        Returns:
            True to check the code; False when it sent ``SLOW_DOWN`` within a minute (tell it
            to wait); None when it sent ``IGNORE_AFTER`` within an hour (ignore it).
        """
        if not self._limiter.test(IGNORE_AFTER, "message-code", openid):
            return None
        if not self._limiter.hit(SLOW_DOWN, "message-code", openid):
            return False
        # Counted only once past the minute's limit: messages refused there do not extend it.
        return True if self._limiter.hit(IGNORE_AFTER, "message-code", openid) else None
