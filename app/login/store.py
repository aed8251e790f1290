"""Login state in Redis: attempts keyed by scene, one-time codes, and callback dedupe.

Redis holds the truth; the hub only wakes waiters. Keys (each after ``REDIS_KEY_PREFIX``):

- ``login:attempt:<scene>``: hash ``{browser_hash, created_at, expires_at, status, openid,
  code, message_code}``; TTL the QR's life, then the code's life once confirmed.
- ``login:code:<code>``: the scene; TTL the code's life; deleted by the one redeem that wins.
- ``login:signin:<scene>``: hash ``{openid, browser_hash, session}``, a confirmed login and the
  session it became; ``login:signins:<openid>``: sorted set of those scenes by confirmation
  time. Both live as long as a session (``recent_ttl``): the scanner's "0" ends all of them.
"""

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis


def new_scene(now: float) -> str:
    """Make a fresh ``scene_str``: creation time in ms, a dash, 96 random bits in hex.

    The time prefix keeps scenes sortable for people reading logs; the random part makes them
    unique between browsers in the same millisecond and unguessable. 13 + 1 + 24 = 38 characters,
    within WeChat's 64.

    Args:
        now: the current time, epoch seconds.
    """
    return f"{int(now * 1000)}-{secrets.token_hex(12)}"


#: What ``new_scene`` makes. Other scenes belong to the account's other QR codes (a poster, a
#: shop counter): they are not login scans.
LOGIN_SCENE = re.compile(r"[0-9]{13}-[0-9a-f]{24}")


def is_login_scene(scene_str: str) -> bool:
    """Tell whether ``scene_str`` has the shape of a login scene made by ``new_scene``."""
    return LOGIN_SCENE.fullmatch(scene_str) is not None


def hash_secret(secret: str) -> str:
    """Hash a browser-binding secret for storage (SHA-256 hex): Redis never holds the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Status(enum.StrEnum):
    """Where an attempt stands."""

    WAITING = "waiting"
    #: Scanned; the scanner is asked to confirm in WeChat (``LOGIN_CONFIRM``).
    SCANNED = "scanned"
    CONFIRMED = "confirmed"
    #: The scanner answered 0: nobody signs in with this QR code.
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class AttemptContext:
    """What the scanner is told is being signed in.

    Attributes:
        site: the site's name (``SITE_NAME``).
        browser: browser and OS, e.g. ``Chrome 120 / Windows 10``.
        ip: the client IP address.
        client: the app being signed in to through the OpenID provider ("" for the site).
        link_to: the signed-in person (``User.id``) the scanner's WeChat is to be linked to,
            for "绑定公众号登录"; "" for a sign-in. The scanner always confirms a link.
    """

    site: str = ""
    browser: str = ""
    ip: str = ""
    client: str = ""
    link_to: str = ""


@dataclass(frozen=True)
class Attempt:
    """One login attempt: a QR shown to one browser.

    Attributes:
        scene: its ``scene_str``.
        browser_hash: SHA-256 hex of the browser's binding secret.
        created_at, expires_at: epoch seconds; ``expires_at`` is the end of the QR's life.
        status: a ``Status``.
        openid: the scanner, once scanned.
        code: the one-time code for the browser, once confirmed.
        ticket, qrcode_url: the QR code WeChat made for it (given back to the same browser).
        context: site, browser and IP of the attempt, for the scanner to check.
        confirmed_at: when it was confirmed, epoch seconds (None before).
        method: the login method whose proof scanned or confirmed it (``scan``,
            ``message``, ``wechat_browser``); "" while waiting.
        message_code: the code to send to the account as a message ("" without that method).
    """

    scene: str
    browser_hash: str
    created_at: float
    expires_at: float
    status: Status
    openid: str | None = None
    code: str | None = None
    ticket: str = ""
    qrcode_url: str = ""
    context: AttemptContext = AttemptContext()
    confirmed_at: float | None = None
    method: str = ""
    message_code: str = ""

    def owned_by(self, browser_hash: str) -> bool:
        """Tell, in constant time, whether the browser with this secret hash made the attempt."""
        return hmac.compare_digest(self.browser_hash, browser_hash)

    def expires_in(self, now: float) -> int:
        """Whole seconds of life left (0 when over)."""
        return max(int(self.expires_at - now), 0)


class ConfirmOutcome(enum.Enum):
    """What a scan, or the scanner's answer, did to an attempt."""

    #: The attempt is now confirmed by this openid.
    CONFIRMED = "confirmed"
    #: The same openid had already confirmed it (a retry or a second scan): nothing changed.
    ALREADY_CONFIRMED = "already_confirmed"
    #: Scanned by this openid, who is asked to confirm in WeChat (again, for a second scan).
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    #: The scanner cancelled it.
    CANCELLED = "cancelled"
    #: Another openid scanned it first: this one signs nobody in.
    TAKEN = "taken"
    #: No such attempt, or it expired or was cancelled.
    UNKNOWN = "unknown"
    #: WeChat's retry of a callback whose first delivery was answered already (its claim,
    #: taken in the same step, said so): nothing changed; answer what was answered then.
    RETRIED = "retried"


#: A push to send when an attempt changes: ``(channel, message, stream)``
#: (``LoginHub.announcement``): ``message`` published on ``channel``, the scene added to
#: ``stream``.
Announcement = tuple[str, str, str]

#: Changes kept in the announcements' stream (about, as Redis trims it in whole nodes): far
#: more than happen between two sweeps of the hub; a sweep that finds its place trimmed away
#: reads every status instead.
CHANGES_KEPT = 10_000

#: The claim of the callback that carries a proof, taken in the same step as the transition:
#: ``(key, seconds)`` (``RetryLedger.claim_of``).
Claim = tuple[str, int]

#: An attempt's transition, read, decided, written and announced in one atomic step (one round
#: trip on the scan's path, where a WATCH/MULTI transaction took three and the push a fourth).
#: KEYS: the attempt; the scanner's pending confirmation; the new code (confirm only, else the
#: attempt again); the sign-in record; the scanner's sign-ins; the scanner's user record
#: (counted only if ARGV[11] is "1", else the attempt again); the callback's claim (taken
#: only if ARGV[12], its TTL, is not "", else the attempt again); the announcements' stream
#: (else the attempt again). ARGV: action (confirm, scan or cancel), scene, openid, now (epoch
#: seconds), method ("" keeps the recorded one, else scan), code, code TTL, recent-login TTL,
#: channel ("" announces nothing), message (JSON: the new status, and code and confirmed_at
#: once confirmed, are added to it), count, claim TTL, changes kept in the stream.
#: Returns {outcome} or {outcome, the attempt's fields after it as a flat list}.
_TRANSITION = """
if ARGV[12] ~= '' and not redis.call('SET', KEYS[7], '', 'NX', 'EX', ARGV[12]) then
  -- A retry: answered already (a reply is kept), or still being handled (taken again, as
  -- every step of a transition is idempotent).
  if (redis.call('GET', KEYS[7]) or '') ~= '' then return {'retried'} end
end
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return {'unknown'} end
local a = {}
for i = 1, #flat, 2 do a[flat[i]] = flat[i + 1] end
local action, scene, openid, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local open = a.status == 'waiting' or a.status == 'scanned'
local linking = (a.link_to or '') ~= ''
if open and now >= tonumber(a.expires_at) then return {'unknown'} end
if (a.openid or '') ~= '' and a.openid ~= openid then return {'taken', flat} end
if a.status == 'confirmed' then return {'already_confirmed', flat} end
local outcome
if action == 'cancel' then
  if a.status ~= 'scanned' then return {'unknown'} end
  redis.call('HSET', KEYS[1], 'status', 'cancelled')
  redis.call('DEL', KEYS[2])
  outcome = 'cancelled'
elseif a.status == 'cancelled' then
  return {'unknown'}
else
  local method = ARGV[5]
  if method == '' then method = a.method or '' end
  if method == '' then method = 'scan' end
  if action == 'scan' or (linking and a.status == 'waiting') then
    -- A link is never made by a scan alone: the scanner confirms it, whatever LOGIN_CONFIRM
    -- says (else showing someone a link QR code would plant their WeChat in the account).
    local left = math.max(math.ceil(tonumber(a.expires_at) - now), 1)
    redis.call('HSET', KEYS[1], 'status', 'scanned', 'openid', openid, 'method', method)
    -- One pending confirmation per openid: their next "1" or "0" answers this one.
    redis.call('SET', KEYS[2], scene, 'EX', left)
    outcome = 'awaiting_confirmation'
  else
    local code_ttl, recent_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
    redis.call('HSET', KEYS[1], 'status', 'confirmed', 'openid', openid, 'code', ARGV[6],
      'confirmed_at', ARGV[4], 'method', method)
    redis.call('EXPIRE', KEYS[1], code_ttl)
    redis.call('SET', KEYS[3], scene, 'EX', code_ttl)
    redis.call('DEL', KEYS[2])
    -- The record of a confirmed login, so that the scanner's "0" can find and end it.
    redis.call('HSET', KEYS[4], 'openid', openid, 'browser_hash', a.browser_hash,
      'method', method)
    redis.call('EXPIRE', KEYS[4], recent_ttl)
    redis.call('ZADD', KEYS[5], ARGV[4], scene)
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - recent_ttl)
    redis.call('EXPIRE', KEYS[5], recent_ttl)
    -- A link is counted by the identity store as it links.
    if ARGV[11] == '1' and not linking then
      redis.call('HINCRBY', KEYS[6], 'login_count', 1)
    end
    outcome = 'confirmed'
  end
end
local after = redis.call('HGETALL', KEYS[1])
-- A confirmed link is announced by its caller once the link is made (or refused and void):
-- the page must not read "confirmed" before.
if ARGV[9] ~= '' and not (outcome == 'confirmed' and linking) then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[13], '*', 'scene', scene)
  -- The push carries the new state, so that the waiting socket need not read it.
  local t = {}
  for i = 1, #after, 2 do t[after[i]] = after[i + 1] end
  local message = cjson.decode(ARGV[10])
  message.status, message.code, message.confirmed_at = t.status, t.code, t.confirmed_at
  redis.call('PUBLISH', ARGV[9], cjson.encode(message))
end
return {outcome, after}
"""


class RedeemError(Exception):
    """A code could not be redeemed: unknown, expired, already used, or another browser's."""


#: Redeems of one code from browsers other than its own before the code is void: a stolen code
#: cannot be tried again and again until some binding check slips.
MAX_FOREIGN_REDEEMS = 3


@dataclass(frozen=True)
class SignIn:
    """A confirmed login, as the scanner's "0" ends it.

    Attributes:
        scene: the attempt it came from.
        browser_hash: the browser it signed in (or would have, if not redeemed yet).
        session_id: the session it became; None if its code was not redeemed yet.
    """

    scene: str
    browser_hash: str
    session_id: str | None


class LoginStore:
    """Attempts, one-time codes and dedupe records in Redis.

    Args:
        redis_client: a client with ``decode_responses=True``.
        code_ttl: life of a one-time code, in seconds.
        recent_ttl: how long a login can be ended by the scanner's "0", in seconds.
        clock: returns the time in epoch seconds (tests inject their own).
        prefix: put before every key (``REDIS_KEY_PREFIX``), so deployments sharing a Redis
            database never meet.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        code_ttl: int = 60,
        recent_ttl: int = 7 * 86400,
        clock: Callable[[], float] = time.time,
        prefix: str = "",
    ) -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._code_ttl = code_ttl
        self._recent_ttl = recent_ttl
        self._clock = clock
        self._run_transition = redis_client.register_script(_TRANSITION)

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _attempt_key(self, scene: str) -> str:
        return self._key(f"login:attempt:{scene}")

    def create_attempt(
        self,
        scene: str,
        browser_hash: str,
        expire_seconds: int,
        *,
        ticket: str = "",
        qrcode_url: str = "",
        context: AttemptContext = AttemptContext(),
        message_code: str = "",
    ) -> Attempt:
        """Store a new waiting attempt that lives exactly as long as its QR.

        Args:
            scene: a fresh ``new_scene()`` value.
            browser_hash: ``hash_secret()`` of the browser's binding secret.
            expire_seconds: the QR's life, in seconds.
            ticket, qrcode_url: the QR code, so the same browser can be given it again.
            context: site, browser and IP, for the scanner to check.
            message_code: its message code, if the ``message`` method is on.

        Returns:
            The stored ``Attempt``.
        """
        now = self._clock()
        attempt = Attempt(
            scene,
            browser_hash,
            now,
            now + expire_seconds,
            Status.WAITING,
            ticket=ticket,
            qrcode_url=qrcode_url,
            context=context,
            message_code=message_code,
        )
        key = self._attempt_key(scene)
        with self._redis.pipeline() as pipe:
            pipe.hset(
                key,
                mapping={
                    "browser_hash": browser_hash,
                    "created_at": repr(now),
                    "expires_at": repr(attempt.expires_at),
                    "status": attempt.status.value,
                    "ticket": ticket,
                    "qrcode_url": qrcode_url,
                    "site": context.site,
                    "browser": context.browser,
                    "ip": context.ip,
                    "client": context.client,
                    "link_to": context.link_to,
                    "message_code": message_code,
                },
            )
            pipe.expire(key, expire_seconds)
            pipe.set(self._live_key(browser_hash, context), scene, ex=expire_seconds)
            pipe.execute()
        return attempt

    def get_attempt(self, scene: str) -> Attempt | None:
        """Load an attempt.

        Returns:
            The ``Attempt``; None when there is none, or when it is still open (waiting or
            scanned) past its QR's life (Redis's TTL is the backstop, this check is exact).
        """
        return self._attempt_from(scene, self._redis.hgetall(self._attempt_key(scene)))

    def statuses(self, scenes: list[str]) -> list[str | None]:
        """Each attempt's raw status (``"waiting"``, ...; None when gone), in one round trip.

        Cheap enough to run for every socket a worker holds, every second.
        """
        with self._redis.pipeline(transaction=False) as pipe:
            for scene in scenes:
                pipe.hget(self._attempt_key(scene), "status")
            return pipe.execute()

    def live_attempt_of(
        self, browser_hash: str, context: AttemptContext = AttemptContext()
    ) -> Attempt | None:
        """The browser's latest attempt made from ``context`` if it still waits, else None.

        Holding a binding value is not enough to be shown its live QR code: the request must
        also come from the same browser and address, or a copied or planted binding would hand
        one person's login to whoever holds the copy.
        """
        scene = self._redis.get(self._live_key(browser_hash, context))
        attempt = self.get_attempt(scene) if scene else None
        if attempt is None or attempt.status is not Status.WAITING:
            return None
        return attempt if attempt.owned_by(browser_hash) else None

    def _live_key(self, browser_hash: str, context: AttemptContext) -> str:
        where = f"{context.browser}\n{context.ip}\n{context.client}\n{context.link_to}"
        where = hashlib.sha256(where.encode()).hexdigest()[:16]
        return self._key(f"login:browser:{browser_hash}:{where}")

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
            ticket=data.get("ticket", ""),
            qrcode_url=data.get("qrcode_url", ""),
            context=AttemptContext(
                data.get("site", ""),
                data.get("browser", ""),
                data.get("ip", ""),
                data.get("client", ""),
                data.get("link_to", ""),
            ),
            confirmed_at=float(data["confirmed_at"]) if "confirmed_at" in data else None,
            method=data.get("method", ""),
            message_code=data.get("message_code", ""),
        )
        still_open = attempt.status in (Status.WAITING, Status.SCANNED)
        if still_open and self._clock() >= attempt.expires_at:
            return None
        return attempt

    def confirm(
        self,
        scene: str,
        openid: str,
        method: str | None = None,
        *,
        announce: Announcement | None = None,
        login_count_key: str = "",
        claim: Claim | None = None,
    ) -> tuple[ConfirmOutcome, Attempt | None]:
        """Mark an attempt confirmed by ``openid``, atomically, once.

        From waiting (a proof, no confirmation asked) or scanned by the same openid (their "1").
        The attempt then lives as long as its one-time code, so that a browser reconnecting
        shortly after still gets the code. An attempt made to link an identity (``link_to``)
        and still waiting is only marked scanned: the scanner always confirms a link.

        Args:
            method: the login method whose proof this is; None keeps the one recorded when it
                was scanned (a "1"), else ``scan``.
            announce: ``(channel, message, stream)`` announced in the same step when the
                attempt changed (``LoginHub.announcement``), so that the push costs no round
                trip of its own and never precedes the state it announces; except a confirmed
                link, which the caller announces once the link is made or refused.
            login_count_key: the scanner's user record, whose ``login_count`` is incremented
                in the same step when a sign-in (not a link) is confirmed: counted exactly once,
                however the user record is completed afterwards.
            claim: the claim of the callback carrying the proof, taken in the same step.

        Returns:
            ``(outcome, attempt)``: ``CONFIRMED``, ``AWAITING_CONFIRMATION`` (a link),
            ``ALREADY_CONFIRMED``, ``TAKEN``, or ``UNKNOWN`` or ``RETRIED`` (attempt None).
        """
        return self._transition(
            "confirm",
            scene,
            openid,
            method or "",
            announce,
            login_count_key=login_count_key,
            claim=claim,
        )

    def mark_scanned(
        self,
        scene: str,
        openid: str,
        method: str = "scan",
        *,
        announce: Announcement | None = None,
        claim: Claim | None = None,
    ) -> tuple[ConfirmOutcome, Attempt | None]:
        """Mark a waiting attempt scanned by ``openid`` (its proof came by ``method``), whose
        confirmation is now awaited.

        Args:
            announce, claim: as for ``confirm``.

        Returns:
            ``(outcome, attempt)``: ``AWAITING_CONFIRMATION`` (also for the same openid
            scanning again), ``ALREADY_CONFIRMED``, ``TAKEN``, or ``UNKNOWN`` or ``RETRIED``
            (attempt None).
        """
        return self._transition("scan", scene, openid, method, announce, claim=claim)

    def cancel(
        self, scene: str, openid: str, *, announce: Announcement | None = None
    ) -> tuple[ConfirmOutcome, Attempt | None]:
        """Cancel an attempt scanned by ``openid`` and awaiting their confirmation.

        Args:
            announce: as for ``confirm``.

        Returns:
            ``(outcome, attempt)``: ``CANCELLED``, ``ALREADY_CONFIRMED``, ``TAKEN`` or
            ``UNKNOWN``.
        """
        return self._transition("cancel", scene, openid, "", announce)

    def _transition(
        self,
        action: str,
        scene: str,
        openid: str,
        method: str,
        announce: Announcement | None,
        *,
        login_count_key: str = "",
        claim: Claim | None = None,
    ) -> tuple[ConfirmOutcome, Attempt | None]:
        """Run ``_TRANSITION``: claim, read, decide, write and announce in one atomic step.

        Someone else's attempt (another openid already on it) is ``TAKEN`` without a write;
        an ``UNKNOWN`` or ``RETRIED`` outcome comes with no attempt.
        """
        claim_key, claim_seconds = claim or (self._attempt_key(scene), "")
        code = secrets.token_urlsafe(32) if action == "confirm" else ""
        channel, message, stream = announce or ("", "", "")
        outcome, *after = self._run_transition(
            keys=[
                self._attempt_key(scene),
                self._key(f"login:pending:{openid}"),
                self._key(f"login:code:{code}") if code else self._attempt_key(scene),
                self._key(f"login:signin:{scene}"),
                self._key(f"login:signins:{openid}"),
                login_count_key or self._attempt_key(scene),
                claim_key,
                stream or self._attempt_key(scene),
            ],
            args=[
                action,
                scene,
                openid,
                repr(self._clock()),
                method,
                code,
                self._code_ttl,
                self._recent_ttl,
                channel,
                message,
                "1" if login_count_key else "",
                claim_seconds,
                CHANGES_KEPT,
            ],
        )
        outcome = ConfirmOutcome(outcome)
        if outcome in (ConfirmOutcome.UNKNOWN, ConfirmOutcome.RETRIED):
            return outcome, None
        flat = after[0]
        return outcome, self._attempt_from(scene, dict(zip(flat[::2], flat[1::2], strict=True)))

    def pending_scene(self, openid: str) -> str | None:
        """The scene whose confirmation ``openid`` was asked for, if still open."""
        return self._redis.get(self._key(f"login:pending:{openid}"))

    def redeem(self, code: str, browser_hash: str) -> tuple[str, str]:
        """Spend a one-time code from the browser that made the attempt.

        A code tried by ``MAX_FOREIGN_REDEEMS`` other browsers is void: its owner scans again.

        Args:
            code: the code the websocket delivered.
            browser_hash: ``hash_secret()`` of the redeeming browser's binding secret.

        Returns:
            ``(openid, scene)``: who scanned, and which attempt it was.

        Raises:
            RedeemError: the code is unknown, expired, used, revoked or void, or belongs to
                another browser (counted).
        """
        code_key = self._key(f"login:code:{code}")
        scene = self._redis.get(code_key)
        attempt = self.get_attempt(scene) if scene else None
        if attempt is None or attempt.code != code or not attempt.openid:
            raise RedeemError("unknown or expired code")
        if not attempt.owned_by(browser_hash):
            self._count_foreign_redeem(scene, code, attempt.openid)
            raise RedeemError("code belongs to another browser")
        # Only one DEL can return 1: that redeem wins, every other loses. The attempt itself
        # stays for the rest of the code's life: another tab of this browser still waiting on
        # it must read "confirmed" (and find itself signed in), not "expired".
        if not self._redis.delete(code_key):
            raise RedeemError("code already used")
        return attempt.openid, scene

    def _count_foreign_redeem(self, scene: str, code: str, openid: str) -> None:
        key = self._attempt_key(scene)
        with self._redis.pipeline() as pipe:
            pipe.exists(key)
            pipe.hincrby(key, "foreign_redeems", 1)
            exists, count = pipe.execute()
        if not exists:
            self._redis.delete(key)  # gone meanwhile: HINCRBY made a stray hash without a TTL
        elif count >= MAX_FOREIGN_REDEEMS:
            # Void: nobody signs in with this code; its owner's redeem fails and says scan again.
            with self._redis.pipeline() as pipe:
                pipe.delete(
                    self._key(f"login:code:{code}"), key, self._key(f"login:signin:{scene}")
                )
                pipe.zrem(self._key(f"login:signins:{openid}"), scene)
                pipe.execute()

    def bind_session(self, scene: str, openid: str, session_id: str) -> bool:
        """Record the session a redeemed login became, unless "0" ended that login meanwhile.

        The session is written first and the login's record read after, while "0" removes the
        record first and reads the session after: whichever comes second sees the other, so a
        redeem racing a "0" never leaves a live session behind.

        Returns:
            True if the login stands; False if it was ended (do not hand out the session).
        """
        signin = self._key(f"login:signin:{scene}")
        with self._redis.pipeline() as pipe:
            pipe.hset(signin, "session", session_id)
            pipe.expire(signin, self._recent_ttl)
            pipe.zscore(self._key(f"login:signins:{openid}"), scene)
            standing = pipe.execute()[-1] is not None
        if not standing:
            self._redis.delete(signin)
        return standing

    def end_signins(self, openid: str) -> list[SignIn]:
        """End every login ``openid`` confirmed within the recent-login window.

        Their codes stop working at once; their sessions are given back for the caller to end.

        Returns:
            The logins ended, newest first (empty if there were none).
        """
        signins = self._key(f"login:signins:{openid}")
        with self._redis.pipeline() as pipe:
            pipe.zrevrangebyscore(signins, "+inf", self._clock() - self._recent_ttl)
            pipe.delete(signins)
            scenes = pipe.execute()[0]
        if not scenes:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for scene in scenes:
                pipe.hgetall(self._key(f"login:signin:{scene}"))
                pipe.hget(self._attempt_key(scene), "code")
            read = pipe.execute()
        ended = []
        with self._redis.pipeline(transaction=False) as pipe:
            for scene, record, code in zip(scenes, read[::2], read[1::2], strict=True):
                if code:
                    pipe.delete(self._key(f"login:code:{code}"))
                pipe.delete(self._attempt_key(scene), self._key(f"login:signin:{scene}"))
                ended.append(
                    SignIn(scene, record.get("browser_hash", ""), record.get("session") or None)
                )
            pipe.execute()
        return ended

    def void(self, scene: str) -> None:
        """End an attempt whose proof came but must sign nobody in (a refused link): its code
        stops working, and its page reads "cancelled"."""
        attempt = self.get_attempt(scene)
        if attempt is None:
            return  # gone already: nothing can use it
        with self._redis.pipeline() as pipe:
            if attempt.code:
                pipe.delete(self._key(f"login:code:{attempt.code}"))
            pipe.hset(self._attempt_key(scene), "status", Status.CANCELLED.value)
            pipe.hdel(self._attempt_key(scene), "code")
            pipe.execute()

    def signin_method(self, scene: str) -> str:
        """The login method of a confirmed login (``scan`` for one recorded before methods)."""
        return self._redis.hget(self._key(f"login:signin:{scene}"), "method") or "scan"

    def forget_signin(self, openid: str, scene: str) -> None:
        """Drop the record of a login whose session was ended by signing out."""
        with self._redis.pipeline() as pipe:
            pipe.zrem(self._key(f"login:signins:{openid}"), scene)
            pipe.delete(self._key(f"login:signin:{scene}"))
            pipe.execute()
