"""Each signed-in follower's unionid, looked up after the sign-in, many users per WeChat call.

A scan brings an openid only; the unionid (one person across the apps of an Open Platform
account) comes from ``user/info``. Looking it up once per sign-in cost an API call (an HTTPS
round trip to WeChat, and one unit of its daily quota) per scan. Here the look-ups of one
process wait together for up to ``window_seconds`` and go out as one
``user/info/batchget`` of up to 100 users: at one sign-in a second nothing changes but the short
wait; at hundreds a second, one call serves a hundred.
"""

import logging
import os
import threading
import time
from collections.abc import Callable

import redis

from ..wechat.client import MAX_USERS_INFO, WeChatClient
from ..wechat.errors import WeChatError

log = logging.getLogger(__name__)


class UnionidLookups:
    """Looks up the unionid of followers in batches, off every request's path.

    Args:
        wechat: the API client.
        found: called with ``(openid, unionid)`` for each user WeChat gave a unionid
            (``UserStore.set_unionid``).
        window_seconds: how long a look-up waits for others to join its call, in seconds.
    """

    def __init__(
        self,
        wechat: WeChatClient,
        found: Callable[[str, str], None],
        *,
        window_seconds: float = 0.2,
    ) -> None:
        self._wechat = wechat
        self._found = found
        self._window = window_seconds
        self._wanted: dict[str, None] = {}  # insertion-ordered set: first asked, first sent
        self._lock = threading.Lock()
        self._asked = threading.Event()
        self._worker: threading.Thread | None = None
        self._worker_pid: int | None = None
        self._closing = False

    def want(self, openid: str) -> None:
        """Look up ``openid``'s unionid soon (within about ``window_seconds``); nothing once
        ``close`` was called."""
        with self._lock:
            if self._closing:
                return
            self._wanted[openid] = None
            # A forked child (a gunicorn worker) inherits the attribute but not the thread.
            if self._worker_pid != os.getpid():
                self._worker_pid = os.getpid()
                self._worker = threading.Thread(
                    target=self._run, name="unionid-lookups", daemon=True
                )
                self._worker.start()
        self._asked.set()

    def close(self, timeout: float = 5.0) -> None:
        """Look up what is waiting now, then stop (waiting up to ``timeout`` seconds): no
        look-up outlives the app that asked for it (tests start one app after another)."""
        with self._lock:
            self._closing = True
            worker = self._worker if self._worker_pid == os.getpid() else None
        self._asked.set()
        if worker is not None:
            worker.join(timeout)

    def _run(self) -> None:
        while True:
            self._asked.wait()
            self._asked.clear()
            if not self._closing:
                time.sleep(self._window)  # let the others of this moment join
            while batch := self._take():
                self._look_up(batch)
            if self._closing:
                return

    def _take(self) -> list[str]:
        with self._lock:
            batch = list(self._wanted)[:MAX_USERS_INFO]
            for openid in batch:
                del self._wanted[openid]
        return batch

    def _look_up(self, openids: list[str]) -> None:
        try:
            for info in self._wechat.users_info(openids):
                if info.get("unionid") and info.get("openid") in openids:
                    self._found(info["openid"], info["unionid"])
        except (WeChatError, redis.RedisError) as exc:
            # Not retried: the next sign-in of each asks again, and the page says "查询中…"
            # until then.
            log.warning(
                "user/info look-up failed for %s users, unionid unknown for now: %s",
                len(openids),
                exc,
            )
