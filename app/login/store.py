"""Login state in Redis: attempts keyed by scene, one-time codes, and callback dedupe.

Redis holds the truth; the hub only wakes waiters. Keys:

- ``login:attempt:<scene>``: hash ``{browser_hash, created_at, expires_at, status, openid,
  code}``; TTL the QR's life, then the code's life once confirmed.
- ``login:code:<code>``: the scene; TTL the code's life; deleted by the one redeem that wins.
- ``wechat:dedupe:<dedupe_key>``: the reply given to a callback, so that WeChat's retry of it
  gets the same answer and changes nothing.
"""

import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

#: How long a callback is remembered for dedupe, in seconds. WeChat retries within ~15 s.
DEDUPE_SECONDS = 300


def new_scene(now: float) -> str:
    """Make a fresh ``scene_str``: creation time in ms, a dash, 96 random bits in hex.

    The time prefix keeps scenes sortable for people reading logs; the random part makes them
    unique between browsers in the same millisecond and unguessable. 13 + 1 + 24 = 38 characters,
    within WeChat's 64.

    Args:
        now: the current time, epoch seconds.
    """
    return f"{int(now * 1000)}-{secrets.token_hex(12)}"


def hash_secret(secret: str) -> str:
    """Hash a browser-binding secret for storage (SHA-256 hex): Redis never holds the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Status(enum.StrEnum):
    """Where an attempt stands."""

    WAITING = "waiting"
    CONFIRMED = "confirmed"


@dataclass(frozen=True)
class Attempt:
    """One login attempt: a QR shown to one browser.

    Attributes:
        scene: its ``scene_str``.
        browser_hash: SHA-256 hex of the browser's binding secret.
        created_at, expires_at: epoch seconds; ``expires_at`` is the end of the QR's life.
        status: ``Status.WAITING`` or ``Status.CONFIRMED``.
        openid: the scanner, once confirmed.
        code: the one-time code for the browser, once confirmed.
    """

    scene: str
    browser_hash: str
    created_at: float
    expires_at: float
    status: Status
    openid: str | None = None
    code: str | None = None

    def owned_by(self, browser_hash: str) -> bool:
        """Tell, in constant time, whether the browser with this secret hash made the attempt."""
        return hmac.compare_digest(self.browser_hash, browser_hash)

    def expires_in(self, now: float) -> int:
        """Whole seconds of life left (0 when over)."""
        return max(int(self.expires_at - now), 0)


class ConfirmOutcome(enum.Enum):
    """What a scan did to an attempt."""

    #: The attempt was waiting and is now confirmed by this scan.
    CONFIRMED = "confirmed"
    #: The same openid had already confirmed it (a retry or a second scan): nothing changed.
    ALREADY_CONFIRMED = "already_confirmed"
    #: Another openid confirmed it first: this scan signs nobody in.
    TAKEN = "taken"
    #: No such attempt, or it expired.
    UNKNOWN = "unknown"


class RedeemError(Exception):
    """A code could not be redeemed: unknown, expired, already used, or another browser's."""


class LoginStore:
    """Attempts, one-time codes and dedupe records in Redis.

    Args:
        redis_client: a client with ``decode_responses=True``.
        code_ttl: life of a one-time code, in seconds.
        clock: returns the time in epoch seconds (tests inject their own).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        code_ttl: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis_client
        self._code_ttl = code_ttl
        self._clock = clock

    @staticmethod
    def _attempt_key(scene: str) -> str:
        return f"login:attempt:{scene}"

    def create_attempt(self, scene: str, browser_hash: str, expire_seconds: int) -> Attempt:
        """Store a new waiting attempt that lives exactly as long as its QR.

        Args:
            scene: a fresh ``new_scene()`` value.
            browser_hash: ``hash_secret()`` of the browser's binding secret.
            expire_seconds: the QR's life, in seconds.

        Returns:
            The stored ``Attempt``.
        """
        now = self._clock()
        attempt = Attempt(scene, browser_hash, now, now + expire_seconds, Status.WAITING)
        key = self._attempt_key(scene)
        with self._redis.pipeline() as pipe:
            pipe.hset(
                key,
                mapping={
                    "browser_hash": browser_hash,
                    "created_at": repr(now),
                    "expires_at": repr(attempt.expires_at),
                    "status": attempt.status.value,
                },
            )
            pipe.expire(key, expire_seconds)
            pipe.execute()
        return attempt

    def get_attempt(self, scene: str) -> Attempt | None:
        """Load an attempt.

        Returns:
            The ``Attempt``; None when there is none, or when it is still waiting past its QR's
            life (Redis's TTL is the backstop, this check is exact to the clock).
        """
        return self._attempt_from(scene, self._redis.hgetall(self._attempt_key(scene)))

    def _attempt_from(self, scene: str, data: dict[str, str]) -> Attempt | None:
        if not data:
            return None
        attempt = Attempt(
            scene=scene,
            browser_hash=data["browser_hash"],
            created_at=float(data["created_at"]),
            expires_at=float(data["expires_at"]),
            status=Status(data["status"]),
            openid=data.get("openid"),
            code=data.get("code"),
        )
        if attempt.status is Status.WAITING and self._clock() >= attempt.expires_at:
            return None
        return attempt

    def confirm(self, scene: str, openid: str) -> tuple[ConfirmOutcome, Attempt | None]:
        """Mark a waiting attempt confirmed by a scan, atomically, once.

        The attempt then lives as long as its one-time code, so that a browser reconnecting
        shortly after the scan still gets the code.

        Args:
            scene: the scanned ``scene_str``.
            openid: the scanner.

        Returns:
            ``(outcome, attempt)``; the attempt is None for ``ConfirmOutcome.UNKNOWN``.
        """
        key = self._attempt_key(scene)

        def transition(pipe: redis.client.Pipeline) -> tuple[ConfirmOutcome, Attempt | None]:
            attempt = self._attempt_from(scene, pipe.hgetall(key))
            if attempt is None:
                return ConfirmOutcome.UNKNOWN, None
            if attempt.status is Status.CONFIRMED:
                same = hmac.compare_digest(attempt.openid or "", openid)
                return (ConfirmOutcome.ALREADY_CONFIRMED if same else ConfirmOutcome.TAKEN), attempt
            code = secrets.token_urlsafe(32)
            pipe.multi()
            pipe.hset(
                key, mapping={"status": Status.CONFIRMED.value, "openid": openid, "code": code}
            )
            pipe.expire(key, self._code_ttl)
            pipe.set(f"login:code:{code}", scene, ex=self._code_ttl)
            confirmed = Attempt(
                scene,
                attempt.browser_hash,
                attempt.created_at,
                attempt.expires_at,
                Status.CONFIRMED,
                openid,
                code,
            )
            return ConfirmOutcome.CONFIRMED, confirmed

        return self._redis.transaction(transition, key, value_from_callable=True)

    def redeem(self, code: str, browser_hash: str) -> str:
        """Spend a one-time code from the browser that made the attempt.

        Args:
            code: the code the websocket delivered.
            browser_hash: ``hash_secret()`` of the redeeming browser's binding secret.

        Returns:
            The openid that scanned.

        Raises:
            RedeemError: the code is unknown, expired or used, or belongs to another browser
                (that browser's code stays usable).
        """
        code_key = f"login:code:{code}"
        scene = self._redis.get(code_key)
        attempt = self.get_attempt(scene) if scene else None
        if attempt is None or attempt.code != code or not attempt.openid:
            raise RedeemError("unknown or expired code")
        if not attempt.owned_by(browser_hash):
            raise RedeemError("code belongs to another browser")
        # Only one DEL can return 1: that redeem wins, every other loses.
        if not self._redis.delete(code_key):
            raise RedeemError("code already used")
        self._redis.delete(self._attempt_key(scene))
        return attempt.openid

    def claim_callback(self, dedupe_key: str) -> str | None:
        """Claim a callback for processing, or learn the reply already given to it.

        Args:
            dedupe_key: ``Message.dedupe_key``.

        Returns:
            None when this is the first delivery (process it, then ``remember_reply``); the
            stored reply content (``""`` for none, or while the first delivery is still being
            processed) for a retry.
        """
        key = f"wechat:dedupe:{dedupe_key}"
        if self._redis.set(key, "", nx=True, ex=DEDUPE_SECONDS):
            return None
        return self._redis.get(key) or ""

    def remember_reply(self, dedupe_key: str, reply: str) -> None:
        """Store the reply given to a claimed callback, for its retries."""
        self._redis.set(f"wechat:dedupe:{dedupe_key}", reply, ex=DEDUPE_SECONDS)

    def release_callback(self, dedupe_key: str) -> None:
        """Forget a claim whose processing failed, so WeChat's retry is processed afresh."""
        self._redis.delete(f"wechat:dedupe:{dedupe_key}")
