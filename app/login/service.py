"""The login flow without Flask: start an attempt, take a scan (and the scanner's answer),
redeem the code."""

import enum
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from functools import partial

from ..metrics import DEDUPLICATED, LOGINS, QRCODES_CREATED, SCANS
from ..wechat.client import QRCode, WeChatClient
from ..wechat.dedupe import RetryLedger
from ..wechat.errors import WeChatAPIError
from ..wechat.messages import Message, ScanEvent
from .hub import LoginHub, Waiter
from .methods import API_UNAUTHORIZED, MESSAGE, SCAN, LoginMethods
from .methods.message import SLOWED_REPLY, WRONG_CODE_REPLY, MessageCodes, as_code
from .store import (
    Attempt,
    AttemptContext,
    ConfirmOutcome,
    LoginStore,
    RedeemError,
    is_login_scene,
    new_scene,
)
from .unionids import UnionidLookups
from .users import IdentityError, User, UserStore

log = logging.getLogger(__name__)

#: A browser asking again gets its live QR code back if it has at least this long to live.
REUSE_MIN_SECONDS = 30

#: Times told to scanners are Beijing time.
BEIJING = timezone(timedelta(hours=8))

#: Replies that need no details of the attempt.
TAKEN_REPLY = "这个二维码已被其他微信用户使用。请在网页上刷新二维码后重新扫码。"
UNKNOWN_REPLY = "二维码已过期或无效，请在网页上刷新二维码后重新扫码。"
CANCELLED_REPLY = "已取消本次登录。"
NOTHING_PENDING_REPLY = "没有等待你确认的登录。如需登录，请在网页上刷新二维码后重新扫码。"
NOTHING_TO_END_REPLY = "没有可以退出的登录。"
#: Told after "0" ended logins, with how many.
ENDED_REPLY = "已退出 {count} 个登录。如果不是你本人在登录，请留意微信账号安全。"


class ConfirmPolicy(enum.StrEnum):
    """When the scanner must confirm in WeChat before the page is signed in (``LOGIN_CONFIRM``)."""

    #: The scan signs in.
    OFF = "off"
    #: Every login asks "回复 1 确认登录，回复 0 取消".
    ALWAYS = "always"
    #: Only a browser this openid has not signed in from before asks.
    NEW_DEVICE = "new_device"


class LoginService:
    """Ties the WeChat client, the stores and the hub into the login flow.

    Args:
        wechat: the API client.
        store: attempts and codes.
        users: user records.
        hub: the cross-worker push.
        retries: WeChat's retried callbacks, answered once.
        qr_expire_seconds: the life asked of each QR code, in seconds.
        confirm_policy: when the scanner must confirm in WeChat.
        end_session: ends a server-side session by id for good (the scanner's "0", sign-out).
        clock: returns the time in epoch seconds.
        unionids: looks up each signed-in follower's unionid, in batches, off the callback's
            path; None looks up nothing.
        forwarding: another handler takes the messages that are not about logging in
            (``WECHAT_FORWARD_URL``): a "1" or "0" with no login to act on is then left to it
            rather than answered here.
        methods: the login methods on (``LOGIN_METHODS``); None: ``scan`` only.
        message_codes: the codes of the ``message`` method (needed when it may be on).
    """

    def __init__(
        self,
        *,
        wechat: WeChatClient,
        store: LoginStore,
        users: UserStore,
        hub: LoginHub,
        retries: RetryLedger,
        qr_expire_seconds: int,
        confirm_policy: ConfirmPolicy = ConfirmPolicy.OFF,
        end_session: Callable[[str], None] = lambda session_id: None,
        clock: Callable[[], float] = time.time,
        unionids: UnionidLookups | None = None,
        forwarding: bool = False,
        methods: LoginMethods | None = None,
        message_codes: MessageCodes | None = None,
    ) -> None:
        self.wechat = wechat
        self.store = store
        self.users = users
        self.hub = hub
        self.retries = retries
        self.qr_expire_seconds = qr_expire_seconds
        self.confirm_policy = ConfirmPolicy(confirm_policy)
        self._end_session = end_session
        self._clock = clock
        self._unionids = unionids
        self._forwarding = forwarding
        self.methods = methods
        self._message_codes = message_codes

    # What the views need, so that none reaches into the stores or the hub.

    def attempt(self, scene: str) -> Attempt | None:
        """The attempt for ``scene``, or None when there is none (or it expired).

        Raises:
            redis.RedisError: Redis could not be read.
        """
        return self.store.get_attempt(scene)

    def method_of(self, scene: str) -> str:
        """The login method that signed in ``scene``'s attempt (``scan``, ``message``, ...)."""
        return self.store.signin_method(scene)

    def user(self, openid: str) -> User | None:
        """The user record of ``openid``, or None."""
        return self.users.get(openid)

    def waiting(
        self, scene: str, client: str, wake: threading.Event | None = None
    ) -> AbstractContextManager[Waiter]:
        """Wait for changes to ``scene``'s attempt (see ``LoginHub.waiting``)."""
        return self.hub.waiting(scene, client, wake)

    def waiting_count(self, client: str | None = None) -> int:
        """Pages waiting in this process: all, or those of ``client``."""
        return self.hub.waiting_count(client)

    @property
    def going_away(self) -> bool:
        """True once this process is shutting down: waiting pages should reconnect elsewhere."""
        return self.hub.going_away

    def go_away(self) -> None:
        """This process is shutting down: close every waiting page's socket now."""
        self.hub.go_away()

    def close(self) -> None:
        """Stop this process's background work: the hub's listener and sweep (within about a
        second), and the unionid look-ups (once those asked for are done)."""
        self.hub.close()
        if self._unionids is not None:
            self._unionids.close()

    def listening(self, timeout: float) -> bool:
        """Start this process's pub/sub listener if needed; True once it is subscribed (within
        ``timeout`` seconds)."""
        self.hub.start()
        return self.hub.subscribed.wait(timeout)

    def offered(self) -> tuple[str, ...]:
        """The login methods on now, in order (``LOGIN_METHODS``, or what ``auto`` found).

        Raises:
            redis.RedisError: ``auto``'s shared answer could not be read.
        """
        return self.methods.offered() if self.methods is not None else (SCAN,)

    def start_attempt(
        self, browser_hash: str, context: AttemptContext
    ) -> tuple[Attempt, QRCode | None]:
        """Give the browser an attempt bound to it: its live one if it has one, asks from the
        same browser and IP, and carries the methods on now; else a new one, with a QR code
        when ``scan`` is on and a message code when ``message`` is.

        Args:
            browser_hash: ``hash_secret()`` of the browser's binding secret.
            context: site, browser and IP, shown to the scanner.

        Returns:
            ``(attempt, qrcode)``; ``qrcode.expire_seconds`` is the life left; ``qrcode`` is
            None when ``scan`` is off (``attempt.expires_in`` tells the life left then).

        Raises:
            WeChatError: WeChat refused or could not be reached.
            redis.RedisError: the attempt could not be stored.
        """
        now = self._clock()
        offered = self.offered()
        live = self.store.live_attempt_of(browser_hash, context)
        if (
            live is not None
            and live.expires_in(now) >= REUSE_MIN_SECONDS
            and bool(live.qrcode_url) == (SCAN in offered)
            and bool(live.message_code) == (MESSAGE in offered and self._message_codes is not None)
        ):
            # Spares WeChat's daily QR quota: reloads and extra tabs share one QR code (and
            # keep its message code).
            qrcode = QRCode(live.ticket, live.expires_in(now), live.qrcode_url)
            return live, qrcode if live.qrcode_url else None
        scene = new_scene(now)
        qrcode = None
        if SCAN in offered:
            try:
                qrcode = self.wechat.create_qrcode(scene, self.qr_expire_seconds)
            except WeChatAPIError as exc:
                # With auto, a 48001 here answers the question before the next probe does.
                if exc.errcode != API_UNAUTHORIZED or self.methods is None or not self.methods.auto:
                    raise
                offered = self.methods.learned(qr_allowed=False)
            else:
                QRCODES_CREATED.inc()
        expire_seconds = qrcode.expire_seconds if qrcode else self.qr_expire_seconds
        message_code = ""
        if MESSAGE in offered and self._message_codes is not None:
            message_code = self._message_codes.issue(scene, expire_seconds)
        attempt = self.store.create_attempt(
            scene,
            browser_hash,
            expire_seconds,
            ticket=qrcode.ticket if qrcode else "",
            qrcode_url=qrcode.url if qrcode else "",
            context=context,
            message_code=message_code,
        )
        log.info(
            "login attempt created scene=%s expire_seconds=%s methods=%s",
            scene,
            expire_seconds,
            ",".join(offered),
        )
        return attempt, qrcode

    def open_attempt(
        self, browser_hash: str, context: AttemptContext, expire_seconds: int
    ) -> Attempt:
        """Start an attempt with no QR code, for a method whose proof needs none (web
        authorization inside WeChat): a fresh scene bound to the browser, waiting.

        Args:
            browser_hash: ``hash_secret()`` of the browser's binding secret.
            context: site, browser and IP of the attempt.
            expire_seconds: its life, in seconds.

        Raises:
            redis.RedisError: the attempt could not be stored.
        """
        scene = new_scene(self._clock())
        attempt = self.store.create_attempt(scene, browser_hash, expire_seconds, context=context)
        log.info("login attempt opened without a QR code scene=%s", scene)
        return attempt

    def handle_message(self, message: Message) -> str | None:
        """Act on a verified callback message: a scan, a message code, or the scanner's "1"
        or "0".

        Args:
            message: the parsed message.

        Returns:
            The text to reply to the sender; ``""`` to acknowledge with ``success`` and say
            nothing; None when the message is not about logging in (acknowledge it, or pass it
            on to another handler). A retry of a message already answered gets the first reply
            again, and changes nothing. A retry of a scan whose first delivery has no reply yet
            (still running, or failed) is taken again: every step of a scan is idempotent, so
            it cannot sign in twice, and it cannot be lost. A retried "1" or "0" is taken once only.

        Raises:
            redis.RedisError: state could not be read or written.
        """
        action = self._action_for(message)
        if action is None:
            return None
        # A scan claims its callback in the same step as its transition (one round trip less
        # before the push); anything else claims it first.
        earlier_reply = None if message.login_scan() else self.retries.claim(message.dedupe_key)
        if earlier_reply:
            DEDUPLICATED.inc()
            log.info("retried callback deduplicated")
            return earlier_reply
        if earlier_reply == "":
            log.info("retried answer deduplicated while the first is being handled")
            return ""
        try:
            reply = action()
        except Exception:
            self.retries.release(message.dedupe_key)
            raise
        # A message left to another handler is remembered as answered with nothing: a retry
        # of it is acknowledged, never handed over twice.
        self.retries.remember(message.dedupe_key, reply or "")
        return reply

    def _action_for(self, message: Message) -> Callable[[], str | None] | None:
        scan = message.login_scan()
        if scan is not None:
            # The account's other parametric QR codes (posters, shop counters) are not ours.
            if not is_login_scene(scan.scene_str):
                return None
            return partial(self._take_scan, scan, message.dedupe_key)
        answer = message.fields.get("Content", "").strip() if message.MsgType == "text" else ""
        if answer in ("1", "0"):
            return partial(self._take_answer, message.FromUserName, answer)
        code = as_code(message.fields.get("Content", "")) if message.MsgType == "text" else None
        if code is not None and self._message_codes is not None and MESSAGE in self.offered():
            return partial(self._take_message_code, message.FromUserName, code)
        return None

    def _take_message_code(self, openid: str, code: str) -> str:
        assert self._message_codes is not None  # _action_for routes codes only then
        allowed = self._message_codes.allowed(openid)
        if allowed is None:
            log.info("message code ignored: too many from one openid this hour")
            return ""
        if not allowed:
            log.info("message code refused: too many from one openid this minute")
            return SLOWED_REPLY
        scene = self._message_codes.scene_of(code)
        if scene is None:
            log.info("message code unknown or expired")
            return WRONG_CODE_REPLY
        return self.complete(scene, openid, method=MESSAGE, logged="message code")

    def _take_scan(self, scan: ScanEvent, dedupe_key: str) -> str:
        kind = "new_follower" if scan.new_follower else "returning"
        SCANS.labels(kind).inc()
        return self.complete(
            scan.scene_str,
            scan.openid,
            method="scan",
            logged=f"scan by a {kind}",
            dedupe_key=dedupe_key,
        )

    def complete(
        self,
        scene: str,
        openid: str,
        *,
        method: str,
        logged: str = "",
        same_device: bool = False,
        appid: str | None = None,
        unionid: str | None = None,
        profile: dict[str, str] | None = None,
        dedupe_key: str | None = None,
    ) -> str:
        """A proof from a login method arrived: ``openid`` completes ``scene``'s attempt, as
        every method does (the confirm policy, the push, the reply).

        Args:
            scene: the attempt's scene.
            openid: who proved themselves.
            method: the login method (``scan``, ``message``, ``wechat_browser``).
            logged: how the log names it (default ``proof by <method>``).
            same_device: the proof came back to the very browser being signed in (web
                authorization inside WeChat; the website application, whose QR page WeChat
                confirms on the phone itself): nobody can be lured into confirming someone
                else's login with it, so the confirm policy does not ask.
            appid: the AppID ``openid`` is under; None: the Official Account's.
            unionid, profile: what WeChat gave with the proof (``nickname``, ``headimgurl``),
                kept on the person.
            dedupe_key: the proof came in a WeChat callback (``Message.dedupe_key``) not yet
                claimed: claimed here, in the same step as the transition; a retry of one
                answered already gets that answer again and changes nothing.

        Returns:
            The text to reply to ``openid`` in WeChat: signed in (naming the site, browser, IP
            and time), asked to confirm, or why not (taken, unknown or expired).

        Raises:
            redis.RedisError: state could not be read or written.
        """
        # The push goes out with the write, in one round trip; the user record follows.
        announce = self.hub.announcement(scene)
        claim = self.retries.claim_of(dedupe_key) if dedupe_key else None
        if not same_device and self._confirmation_due(openid, scene):
            outcome, attempt = self.store.mark_scanned(
                scene, openid, method, announce=announce, claim=claim
            )
        else:
            outcome, attempt = self.store.confirm(
                scene,
                openid,
                method,
                announce=announce,
                login_count_key=self.users.record_key(openid),
                claim=claim,
            )
        if outcome is ConfirmOutcome.RETRIED:
            DEDUPLICATED.inc()
            log.info("retried callback deduplicated")
            return self.retries.reply_of(dedupe_key)
        log.info("%s scene=%s outcome=%s", logged or f"proof by {method}", scene, outcome.value)
        if outcome is ConfirmOutcome.CONFIRMED:
            self._signed_in(openid, method=method, appid=appid, unionid=unionid, profile=profile)
        return self._reply(outcome, attempt)

    def _take_answer(self, openid: str, answer: str) -> str | None:
        scene = self.store.pending_scene(openid)
        if answer == "1":
            if scene is None:
                return None if self._forwarding else NOTHING_PENDING_REPLY
            outcome, attempt = self.store.confirm(
                scene,
                openid,
                announce=self.hub.announcement(scene),
                login_count_key=self.users.record_key(openid),
            )
            log.info("confirmation answered scene=%s outcome=%s", scene, outcome.value)
            if outcome is ConfirmOutcome.CONFIRMED and attempt.context.link_to:
                return self._link(openid, scene, attempt)
            if outcome is ConfirmOutcome.CONFIRMED:
                self._signed_in(openid, method=attempt.method)
            return self._reply(outcome, attempt)
        if scene is not None:
            outcome, attempt = self.store.cancel(
                scene, openid, announce=self.hub.announcement(scene)
            )
            log.info("cancellation answered scene=%s outcome=%s", scene, outcome.value)
            return self._reply(outcome, attempt)
        ended = self.store.end_signins(openid)
        if not ended:
            return None if self._forwarding else NOTHING_TO_END_REPLY
        for signin in ended:
            if signin.session_id:
                self._end_session(signin.session_id)
            # A login made by mistake leaves no trust behind: that browser confirms again.
            self.users.forget_device(openid, signin.browser_hash)
            log.info("login ended by its scanner scene=%s", signin.scene)
            self.hub.publish(signin.scene)
        return ENDED_REPLY.format(count=len(ended))

    def _confirmation_due(self, openid: str, scene: str) -> bool:
        if self.confirm_policy is ConfirmPolicy.OFF:
            return False
        if self.confirm_policy is ConfirmPolicy.ALWAYS:
            return True
        # Only new_device needs the attempt: which browser is being signed in.
        attempt = self.store.get_attempt(scene)
        return attempt is not None and not self.users.knows_device(openid, attempt.browser_hash)

    def _signed_in(
        self,
        openid: str,
        *,
        method: str = SCAN,
        appid: str | None = None,
        unionid: str | None = None,
        profile: dict[str, str] | None = None,
    ) -> None:
        LOGINS.inc()
        # Counted already, with the confirmation that announced it.
        user = self.users.record_login(
            openid, method=method, appid=appid, unionid=unionid, profile=profile, count=False
        )
        # Only the Official Account's openids can be looked up with user/info.
        if user.unionid is None and appid in (None, self.users.appid) and self._unionids:
            self._unionids.want(openid)

    def link_identity(
        self,
        user_id: str,
        openid: str,
        *,
        method: str,
        appid: str,
        unionid: str | None = None,
        profile: dict[str, str] | None = None,
    ) -> User:
        """Attach a freshly proven identity to the signed-in person ``user_id`` (a link).

        Raises:
            IdentityError: it is another person's, or conflicts (``reason`` says why).
            LookupError: no person ``user_id``.
        """
        user = self.users.link(
            user_id, openid, method=method, appid=appid, unionid=unionid, profile=profile
        )
        LOGINS.inc()
        log.info("identity linked method=%s", method)
        return user

    def unlink_identity(self, user_id: str, openid: str) -> User:
        """Detach one identity from the person ``user_id`` (see ``UserStore.unlink``).

        Raises:
            IdentityError: the last one, or one sharing their unionid.
            LookupError: no such person, or not their identity.
        """
        return self.users.unlink(user_id, openid)

    def user_by_id(self, user_id: str) -> User | None:
        """The person with id ``user_id`` (a joined person's old id finds them), or None."""
        return self.users.by_id(user_id)

    def _link(self, openid: str, scene: str, attempt: Attempt) -> str:
        """The scanner confirmed "绑定公众号登录": attach their openid to the signed-in person the
        attempt was made for; or, if it is someone else's or conflicts, void the attempt (its
        code signs nobody in) and say why."""
        try:
            self.link_identity(
                attempt.context.link_to,
                openid,
                method=attempt.method or SCAN,
                appid=self.users.appid,  # the Official Account's: scans and messages come to it
            )
        except (IdentityError, LookupError) as exc:
            self.store.void(scene)
            self.hub.publish(scene)
            log.info("link refused scene=%s", scene)
            return getattr(exc, "reason", UNKNOWN_REPLY)
        self.hub.publish(scene)
        return (
            f"绑定成功：这个微信已绑定到 {describe(attempt)}\n\n"
            "以后用这个微信扫码，登录的就是这个账号。如非本人操作，请在网页上解绑。"
        )

    def _reply(self, outcome: ConfirmOutcome, attempt: Attempt | None) -> str:
        if attempt is None or outcome in (ConfirmOutcome.UNKNOWN, ConfirmOutcome.TAKEN):
            return TAKEN_REPLY if outcome is ConfirmOutcome.TAKEN else UNKNOWN_REPLY
        if outcome is ConfirmOutcome.CANCELLED:
            return CANCELLED_REPLY
        details = describe(attempt)
        if outcome is ConfirmOutcome.AWAITING_CONFIRMATION and attempt.context.link_to:
            return (
                f"你正在把这个微信绑定到 {details} 上已登录的账号。\n\n"
                "绑定后用这个微信登录的就是那个账号。回复 1 确认绑定，回复 0 取消。"
            )
        if outcome is ConfirmOutcome.AWAITING_CONFIRMATION:
            return f"你正在登录 {details}\n\n回复 1 确认登录，回复 0 取消。"
        return f"登录成功：{details}\n\n如果不是你本人在登录，请回复 0 退出此次登录。"

    def redeem(self, code: str, browser_hash: str, session_id: str) -> tuple[User, str]:
        """``redeem_login`` without the proof's openid (see there)."""
        user, scene, _ = self.redeem_login(code, browser_hash, session_id)
        return user, scene

    def redeem_login(self, code: str, browser_hash: str, session_id: str) -> tuple[User, str, str]:
        """Turn a one-time code into a signed-in session, and remember this browser for them.

        Args:
            code: the code the websocket delivered.
            browser_hash: ``hash_secret()`` of the redeeming browser's binding secret.
            session_id: the fresh id the new session will be stored under.

        Returns:
            ``(user, scene, openid)``: who signed in, the attempt it came from, and the openid
            that proved it (under whichever AppID the method uses).

        Raises:
            RedeemError: unknown, expired, used, revoked or void, another browser's code, or a
                login its scanner ended ("0") while this redeem ran: hand out no session.
        """
        openid, scene = self.store.redeem(code, browser_hash)
        # Trust first, then the check that the login stands: a "0" racing this redeem removes
        # the trust after, or is seen by the check (then the trust is taken back here).
        new_device = self.users.add_device(openid, browser_hash)
        if not self.store.bind_session(scene, openid, session_id):
            if new_device:
                self.users.forget_device(openid, browser_hash)
            log.info("login code redeemed after its scanner ended it scene=%s", scene)
            raise RedeemError("login ended by its scanner")
        user = self.users.get(openid)
        if user is None:
            # The proof's record_login has not run yet, or failed: complete the record here
            # (the confirmation counted the login already).
            user = self.users.record_login(
                openid, method=self.store.signin_method(scene), count=False
            )
        log.info("login code redeemed scene=%s", scene)
        return user, scene, openid

    def sign_out(self, openid: str, scene: str | None, session_id: str) -> None:
        """End a session for good, and forget the login it came from.

        Args:
            openid: who is signed in.
            scene: the attempt the session came from (None for a session from before this
                was recorded).
            session_id: the session's id.
        """
        self._end_session(session_id)
        if scene:
            self.store.forget_signin(openid, scene)


def describe(attempt: Attempt) -> str:
    """The attempt as the scanner reads it: site, then browser and OS, IP and time, a line each."""
    created = datetime.fromtimestamp(attempt.created_at, BEIJING).strftime("%Y-%m-%d %H:%M:%S")
    context = attempt.context
    site = f"{context.client}（{context.site}）" if context.client else context.site
    return (
        f"{site or '网站'}\n"
        f"浏览器：{context.browser or '未知'}\n"
        f"IP 地址：{context.ip or '未知'}\n"
        f"时间：{created}（北京时间）"
    )
