"""The login flow without Flask: start an attempt, take a scan, redeem the code."""

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

import redis

from ..wechat.client import QRCode, WeChatClient
from ..wechat.errors import WeChatError
from ..wechat.messages import Message, ScanEvent
from .hub import LoginHub
from .store import Attempt, ConfirmOutcome, LoginStore, new_scene
from .users import User, UserStore

log = logging.getLogger(__name__)

#: The passive reply the scanner sees in WeChat, per outcome of the scan.
SCAN_REPLIES = {
    ConfirmOutcome.CONFIRMED: "登录成功，请回到网页继续。",
    ConfirmOutcome.ALREADY_CONFIRMED: "登录成功，请回到网页继续。",
    ConfirmOutcome.TAKEN: "这个二维码已被其他微信用户使用。请在网页上刷新二维码后重新扫码。",
    ConfirmOutcome.UNKNOWN: "二维码已过期或无效，请在网页上刷新二维码后重新扫码。",
}


class LoginService:
    """Ties the WeChat client, the stores and the hub into the login flow.

    Args:
        wechat: the API client.
        store: attempts, codes, dedupe.
        users: user records.
        hub: the cross-worker push.
        qr_expire_seconds: the life asked of each QR code, in seconds.
        clock: returns the time in epoch seconds.
        executor: runs ``user/info`` look-ups off the callback's path (default: 2 threads).
    """

    def __init__(
        self,
        *,
        wechat: WeChatClient,
        store: LoginStore,
        users: UserStore,
        hub: LoginHub,
        qr_expire_seconds: int,
        clock: Callable[[], float] = time.time,
        executor: Executor | None = None,
    ) -> None:
        self.wechat = wechat
        self.store = store
        self.users = users
        self.hub = hub
        self.qr_expire_seconds = qr_expire_seconds
        self._clock = clock
        self._executor = executor or ThreadPoolExecutor(2, thread_name_prefix="user-info")

    def start_attempt(self, browser_hash: str) -> tuple[Attempt, QRCode]:
        """Create a QR code and the attempt bound to the browser that asked for it.

        Args:
            browser_hash: ``hash_secret()`` of the browser's binding secret.

        Returns:
            ``(attempt, qrcode)``; the attempt lives as long as WeChat granted the QR.

        Raises:
            WeChatError: WeChat refused or could not be reached.
            redis.RedisError: the attempt could not be stored.
        """
        scene = new_scene(self._clock())
        qrcode = self.wechat.create_qrcode(scene, self.qr_expire_seconds)
        attempt = self.store.create_attempt(scene, browser_hash, qrcode.expire_seconds)
        log.info("login attempt created scene=%s expire_seconds=%s", scene, qrcode.expire_seconds)
        return attempt, qrcode

    def handle_message(self, message: Message) -> str | None:
        """Act on a verified callback message.

        Args:
            message: the parsed message.

        Returns:
            The text to reply to the sender, or None to acknowledge with ``success``.
            A retry of a message already handled gets the first reply again, and changes nothing.

        Raises:
            redis.RedisError: state could not be read or written (the caller still answers).
        """
        scan = message.login_scan()
        if scan is None:
            return None
        earlier_reply = self.store.claim_callback(message.dedupe_key)
        if earlier_reply is not None:
            log.info("retried callback deduplicated scene=%s", scan.scene_str)
            return earlier_reply or None
        try:
            reply = self._take_scan(scan)
        except Exception:
            self.store.release_callback(message.dedupe_key)
            raise
        self.store.remember_reply(message.dedupe_key, reply)
        return reply

    def _take_scan(self, scan: ScanEvent) -> str:
        outcome, _ = self.store.confirm(scan.scene_str, scan.openid)
        kind = "new follower" if scan.new_follower else "returning follower"
        log.info("scan by a %s scene=%s outcome=%s", kind, scan.scene_str, outcome.value)
        if outcome is ConfirmOutcome.CONFIRMED:
            self.users.record_login(scan.openid)
            # State first, then the push: a waiter that misses it still reads the truth.
            self.hub.publish(scan.scene_str)
            user = self.users.get(scan.openid)
            if user is not None and user.unionid is None:
                self._executor.submit(self._fetch_unionid, scan.openid)
        return SCAN_REPLIES[outcome]

    def _fetch_unionid(self, openid: str) -> None:
        # Off the callback's path: WeChat waits only 5 s for our reply.
        try:
            info = self.wechat.user_info(openid)
            if info.get("unionid"):
                self.users.set_unionid(openid, info["unionid"])
        except (WeChatError, redis.RedisError) as exc:
            log.warning("user/info look-up failed, unionid unknown for now: %s", exc)

    def redeem(self, code: str, browser_hash: str) -> User:
        """Turn a one-time code into the signed-in user.

        Args:
            code: the code the websocket delivered.
            browser_hash: ``hash_secret()`` of the redeeming browser's binding secret.

        Returns:
            The ``User``.

        Raises:
            RedeemError: unknown, expired, used, or another browser's code.
        """
        openid = self.store.redeem(code, browser_hash)
        user = self.users.get(openid)
        if user is None:  # the scan's record_login failed after its confirm; count it now
            self.users.record_login(openid)
            user = self.users.get(openid)
        log.info("login code redeemed")
        return user
