"""The login methods a site offers (``LOGIN_METHODS``), in order: ``scan`` (a parametric QR
code), ``message`` (a code sent to the account as a text message), ``wechat_browser`` (web
authorization inside WeChat's browser), ``open_qr`` (the Open Platform website application's
QR code: no follow needed; only when listed, with ``WECHAT_OPEN_APP_ID`` set).

``auto`` (the default) asks WeChat whether the account may create parametric QR codes: once at
first use, then every ``PROBE_EVERY_SECONDS``, with the answer shared by every worker through
Redis. Only a verified service account (or the sandbox test account) may; the others get
``48001``, and are offered ``message`` instead of ``scan``.

Keys (after ``REDIS_KEY_PREFIX``): ``login:methods:auto`` (the methods ``auto`` offers, comma
separated; TTL until the next probe) and ``login:methods:probing`` (one prober at a time).
"""

import logging
import time
from collections.abc import Callable

import redis

from ...wechat.errors import WeChatAPIError, WeChatError

log = logging.getLogger(__name__)

SCAN = "scan"
MESSAGE = "message"
WECHAT_BROWSER = "wechat_browser"
OPEN_QR = "open_qr"
#: Every method, in the order a page offers them.
NAMES = (SCAN, MESSAGE, WECHAT_BROWSER, OPEN_QR)
AUTO = "auto"

#: What ``auto`` offers when the account may create parametric QR codes, and when it may not.
AUTO_WITH_QR = (SCAN, WECHAT_BROWSER)
AUTO_WITHOUT_QR = (MESSAGE,)
#: WeChat's errcode for an account type without the permission ("api unauthorized").
API_UNAUTHORIZED = 48001

#: How long a probe's answer holds, in seconds: an account verified meanwhile gets ``scan``
#: back within this long.
PROBE_EVERY_SECONDS = 3600
#: After a probe that could not tell (WeChat busy or unreachable), ask again this soon, in s.
PROBE_RETRY_SECONDS = 60
#: How long a worker keeps its copy of the shared answer before reading Redis again, in s.
LOCAL_SECONDS = 30
#: The most one probe may take before another worker may start one, in seconds.
PROBE_LOCK_SECONDS = 30


def parse_methods(text: str) -> tuple[str, ...] | None:
    """``LOGIN_METHODS`` as the methods it names, in order; None for ``auto``.

    Args:
        text: ``auto``, or method names separated by commas (spaces allowed).

    Raises:
        ValueError: an unknown name, a name twice, or no name at all; its text says which.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == [AUTO]:
        return None
    unknown = [name for name in names if name not in NAMES]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(", ".join(unknown) or "no method, or one twice")
    return tuple(names)


class LoginMethods:
    """Which login methods are on, as configured or as ``auto`` found them.

    Args:
        configured: the methods ``LOGIN_METHODS`` names; None for ``auto``.
        redis_client: where ``auto``'s answer is shared (``decode_responses=True``).
        probe: creates one parametric QR code for a scene that is not a login's; raises
            ``WeChatError`` when WeChat refuses (``setup_check.try_qr_creation``).
        prefix: ``REDIS_KEY_PREFIX``.
        clock: returns the time in epoch seconds.
    """

    def __init__(
        self,
        configured: tuple[str, ...] | None,
        *,
        redis_client: redis.Redis,
        probe: Callable[[], object],
        prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configured = configured
        self._redis = redis_client
        self._probe = probe
        self._prefix = prefix
        self._clock = clock
        self._local: tuple[tuple[str, ...], float] | None = None  # (methods, read at)

    @property
    def auto(self) -> bool:
        """True when ``LOGIN_METHODS`` is ``auto``."""
        return self._configured is None

    def _key(self, name: str) -> str:
        return f"{self._prefix}login:methods:{name}"

    def offered(self) -> tuple[str, ...]:
        """The methods on now, in order.

        With ``auto``: this worker's copy if fresh, else the shared answer in Redis, else a
        probe (by one worker at a time; the others meanwhile offer ``scan``, and a 48001 from
        their QR creation then settles it, see ``qr_refused``).

        Raises:
            redis.RedisError: Redis could not be read.
        """
        if self._configured is not None:
            return self._configured
        now = self._clock()
        if self._local is not None and now - self._local[1] < LOCAL_SECONDS:
            return self._local[0]
        shared = self._redis.get(self._key(AUTO))
        if shared:
            methods = tuple(shared.split(","))
        elif self._redis.set(self._key("probing"), "1", nx=True, ex=PROBE_LOCK_SECONDS):
            methods = self._probe_now()
        else:
            return AUTO_WITH_QR  # another worker is asking WeChat; not kept
        self._local = (methods, now)
        return methods

    def enabled(self, name: str) -> bool:
        """Tell whether the method ``name`` is on now (see ``offered``)."""
        return name in self.offered()

    def _probe_now(self) -> tuple[str, ...]:
        try:
            self._probe()
        except WeChatAPIError as exc:
            if exc.errcode == API_UNAUTHORIZED:
                return self.learned(qr_allowed=False)
            log.warning("LOGIN_METHODS=auto could not tell the account type: %s", exc)
            return self._share(AUTO_WITH_QR, PROBE_RETRY_SECONDS)
        except WeChatError as exc:
            log.warning("LOGIN_METHODS=auto could not ask WeChat: %s", exc)
            return self._share(AUTO_WITH_QR, PROBE_RETRY_SECONDS)
        return self.learned(qr_allowed=True)

    def learned(self, *, qr_allowed: bool) -> tuple[str, ...]:
        """Record what WeChat said about parametric QR codes (a probe, the setup check, or a
        login's own QR creation answering 48001), for every worker, until the next probe.

        Returns:
            The methods ``auto`` offers from now on (the configured ones, unchanged, otherwise).
        """
        if not self.auto:
            return self.offered()
        if not qr_allowed:
            log.warning(
                "LOGIN_METHODS=auto: this account cannot create parametric QR codes (48001), "
                "so message-code login is offered instead of scan"
            )
        methods = AUTO_WITH_QR if qr_allowed else AUTO_WITHOUT_QR
        return self._share(methods, PROBE_EVERY_SECONDS)

    def _share(self, methods: tuple[str, ...], seconds: int) -> tuple[str, ...]:
        self._redis.set(self._key(AUTO), ",".join(methods), ex=seconds)
        self._local = (methods, self._clock())
        return methods
