"""In-WeChat login (method ``wechat_browser``): a visitor inside WeChat's own browser proves
their openid through WeChat's web authorization (网页授权, scope ``snsapi_base``), with no scan.

::

    start   an attempt for this browser (no QR code), a ``state`` bound to the browser
            -> {WECHAT_OPEN_BASE}/connect/oauth2/authorize?appid&redirect_uri&response_type
               &scope&state#wechat_redirect
    WeChat  -> redirect_uri?code=CODE&state=STATE   (no code: the visitor refused)
    finish  state -> the attempt (once, same browser); code -> openid (sns/oauth2/access_token,
            once); LoginService.complete(...) -> the attempt's one-time code, which the browser
            redeems as every method's browser does

Free of Flask: the view passes in the browser's binding hash and our ``redirect_uri``.
"""

import enum
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import redis

from ...wechat.client import WeChatClient
from ...wechat.errors import WeChatAPIError
from ..service import LoginService
from ..store import AttemptContext, Status
from ..users import User

log = logging.getLogger(__name__)

#: The method's name in ``LOGIN_METHODS``, in attempts and sign-ins, and in the session.
METHOD = "wechat_browser"

#: Life of a ``state`` and of its attempt, in seconds: WeChat's code lives 5 minutes, and a
#: visitor who takes longer than that starts again.
STATE_SECONDS = 300

#: What ``AuthorizationStates.issue`` makes: 128 random bits in hex. WeChat accepts only
#: letters and digits in ``state``, up to 128 bytes.
STATE_PATTERN = re.compile(r"[0-9a-f]{32}")


def authorize_url(open_base: str, appid: str, redirect_uri: str, state: str) -> str:
    """The web-authorization URL to send the visitor's browser to.

    Doc: https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_webpage_authorization.html

    Args:
        open_base: ``WECHAT_OPEN_BASE``, e.g. ``https://open.weixin.qq.com``.
        appid: the account's AppID.
        redirect_uri: where WeChat sends the browser back; its host must be the account's
            网页授权域名.
        state: from ``AuthorizationStates.issue``.

    Returns:
        The URL, parameters in the order WeChat requires (it refuses others), ending in
        ``#wechat_redirect``.
    """
    query = urlencode(
        [
            ("appid", appid),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            # Silent, and all a sign-in needs: the openid. snsapi_userinfo would ask first.
            ("scope", "snsapi_base"),
            ("state", state),
        ],
        quote_via=quote,
        safe="",
    )
    return f"{open_base.rstrip('/')}/connect/oauth2/authorize?{query}#wechat_redirect"


class AuthorizationStates:
    """The ``state`` of each web authorization under way: random, bound to the browser that
    started it, single-use and short-lived, in Redis.

    Shared by every method that sends the browser to WeChat and back (``wechat_browser``,
    ``open_qr``). Key (after ``REDIS_KEY_PREFIX``): ``login:oauth_state:<state>``, hash
    ``{browser_hash, scene, link_user, oidc_request, expires_at}``, TTL ``ttl``.

    Args:
        redis_client: a client with ``decode_responses=True``.
        ttl: life of a state, in seconds.
        clock: returns the time in epoch seconds (tests inject their own).
        prefix: ``REDIS_KEY_PREFIX``.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        ttl: int = STATE_SECONDS,
        clock: Callable[[], float] = time.time,
        prefix: str = "",
    ) -> None:
        self._redis = redis_client
        self._ttl = ttl
        self._clock = clock
        self._prefix = prefix

    def _key(self, state: str) -> str:
        return f"{self._prefix}login:oauth_state:{state}"

    def issue(
        self, browser_hash: str, scene: str, link_user: str = "", oidc_request: str = ""
    ) -> str:
        """Make a state for ``scene``'s attempt, good for the browser of ``browser_hash`` only.

        Args:
            browser_hash: ``hash_secret()`` of the browser's binding secret.
            scene: the attempt the proof completes ("" when it completes none: a link).
            link_user: the signed-in person the identity is to be linked to; "" to sign in.
            oidc_request: the app's authorization request (held by the OpenID provider) the
                sign-in is for, which the browser goes on to once signed in; "" for the site.

        Raises:
            redis.RedisError: it could not be stored.
        """
        state = secrets.token_hex(16)
        key = self._key(state)
        with self._redis.pipeline() as pipe:
            pipe.hset(
                key,
                mapping={
                    "browser_hash": browser_hash,
                    "scene": scene,
                    "link_user": link_user,
                    "oidc_request": oidc_request,
                    "expires_at": repr(self._clock() + self._ttl),
                },
            )
            pipe.expire(key, self._ttl)
            pipe.execute()
        return state

    def take(self, state: str, browser_hash: str) -> str | None:
        """Spend ``state``: it works once, whoever presents it.

        Returns:
            The scene of its attempt; None when the state is unknown, malformed, expired,
            already spent, or was issued to another browser.

        Raises:
            redis.RedisError: Redis could not be read.
        """
        grant = self.take_grant(state, browser_hash)
        return grant.scene if grant is not None else None

    def take_grant(self, state: str, browser_hash: str) -> "StateGrant | None":
        """Spend ``state`` as ``take`` does, and say what it was issued for.

        Returns:
            What it was issued for; None as ``take``.

        Raises:
            redis.RedisError: Redis could not be read.
        """
        if not STATE_PATTERN.fullmatch(state):
            return None
        key = self._key(state)
        # Read and delete in one transaction: of two requests with one state, one reads it.
        with self._redis.pipeline() as pipe:
            pipe.hgetall(key)
            pipe.delete(key)
            record = pipe.execute()[0]
        if not record or self._clock() >= float(record["expires_at"]):
            return None
        if not hmac.compare_digest(record["browser_hash"], browser_hash):
            return None
        return StateGrant(
            record["scene"], record.get("link_user", ""), record.get("oidc_request", "")
        )


@dataclass(frozen=True)
class StateGrant:
    """What a spent ``state`` was issued for: the attempt's ``scene`` ("" for a link), the
    person to link the identity to (``link_user``, "" for a sign-in), and the app's
    authorization request the sign-in is for (``oidc_request``, "" for the site itself)."""

    scene: str
    link_user: str
    oidc_request: str = ""


@dataclass(frozen=True)
class Finished:
    """How a login through WeChat's pages ended: ``code`` (the one-time login code to redeem)
    for a sign-in, or ``linked`` (the person, identity attached) for a link; and the app's
    authorization request the browser goes on to (``oidc_request``, "" for the site)."""

    code: str = ""
    linked: User | None = None
    oidc_request: str = ""


class Refusal(enum.StrEnum):
    """Why a web authorization signed nobody in."""

    #: No state, or one unknown, expired, already used, or another browser's.
    BAD_STATE = "bad_state"
    #: WeChat came back without a code: the visitor refused.
    DENIED = "denied"
    #: 40029: WeChat does not know the code (made up, or older than 5 minutes).
    INVALID_CODE = "invalid_code"
    #: 40163: the code was exchanged already.
    CODE_USED = "code_used"
    #: A Moments "snapshot page": WeChat gave a virtual openid.
    SNAPSHOT = "snapshot"
    #: The attempt ended meanwhile (expired, or taken).
    ATTEMPT_GONE = "attempt_gone"
    #: 40125: WeChat refused our AppSecret (the site's fault; logged).
    BAD_SECRET = "bad_secret"


#: The errcodes of ``sns/oauth2/access_token`` that are the visitor's to retry, not ours.
CODE_ERRCODES = {40029: Refusal.INVALID_CODE, 40163: Refusal.CODE_USED}


class WebAuthorizationRefused(Exception):
    """A web authorization that signs nobody in; the visitor may start again.

    Attributes:
        reason: a ``Refusal``.
        oidc_request: the app's authorization request the sign-in was for (``StateGrant``),
            whose sign-in the ways back lead to; "" for the site, or when the state is unknown.
    """

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.oidc_request = ""


@contextmanager
def refusals_for(grant: StateGrant) -> Iterator[None]:
    """Within the block, a ``WebAuthorizationRefused`` names the app's authorization request
    ``grant`` was issued for, so that the page saying why leads back to that app's sign-in."""
    try:
        yield
    except WebAuthorizationRefused as refused:
        refused.oidc_request = grant.oidc_request
        raise


class WeChatBrowserLogin:
    """Starts and finishes in-WeChat logins.

    Args:
        service: the login service (attempts, ``complete``).
        wechat: the API client (AppID, the code exchange).
        states: the state store.
        open_base: ``WECHAT_OPEN_BASE``.
    """

    def __init__(
        self,
        *,
        service: LoginService,
        wechat: WeChatClient,
        states: AuthorizationStates,
        open_base: str,
    ) -> None:
        self._service = service
        self._wechat = wechat
        self._states = states
        self._open_base = open_base

    def start(
        self,
        browser_hash: str,
        context: AttemptContext,
        redirect_uri: str,
        oidc_request: str = "",
    ) -> str:
        """Open an attempt for this browser and say where to send it.

        Args:
            browser_hash: ``hash_secret()`` of the browser's binding secret.
            context: site, browser and IP, kept with the attempt.
            redirect_uri: our absolute callback URL (WeChat sends the browser back there).
            oidc_request: the app's authorization request the sign-in is for ("" for the
                site), handed back by ``finish``.

        Returns:
            The authorize URL (``authorize_url``).

        Raises:
            redis.RedisError: the attempt or its state could not be stored.
        """
        attempt = self._service.open_attempt(browser_hash, context, STATE_SECONDS)
        state = self._states.issue(browser_hash, attempt.scene, oidc_request=oidc_request)
        return authorize_url(self._open_base, self._wechat.app_id, redirect_uri, state)

    def finish(self, code: str, state: str, browser_hash: str) -> Finished:
        """Take WeChat's answer: the visitor's openid completes the attempt ``state`` names.

        Args:
            code: the ``code`` WeChat added ("" when the visitor refused).
            state: the ``state`` WeChat gave back.
            browser_hash: ``hash_secret()`` of this browser's binding secret ("" for none).

        Returns:
            ``code``: the attempt's one-time login code, for this browser to redeem; and the
            ``oidc_request`` it was started for.

        Raises:
            WebAuthorizationRefused: see ``Refusal``.
            WeChatError: the exchange failed otherwise (WeChat busy or unreachable, a wrong
                AppSecret).
            redis.RedisError: state could not be read or written.
        """
        grant = self._states.take_grant(state, browser_hash)
        if grant is None:
            raise WebAuthorizationRefused(Refusal.BAD_STATE)
        with refusals_for(grant):
            return self._finish(grant, code)

    def _finish(self, grant: StateGrant, code: str) -> Finished:
        if not code:
            raise WebAuthorizationRefused(Refusal.DENIED)
        try:
            visitor = self._wechat.oauth_access_token(code)
        except WeChatAPIError as exc:
            if exc.errcode in CODE_ERRCODES:
                raise WebAuthorizationRefused(CODE_ERRCODES[exc.errcode]) from exc
            raise
        if visitor.is_snapshotuser:
            raise WebAuthorizationRefused(Refusal.SNAPSHOT)
        self._service.complete(
            grant.scene,
            visitor.openid,
            method=METHOD,
            logged="web authorization inside WeChat",
            same_device=True,
            # The only unionid a visitor who does not follow the account has: user/info
            # gives none for them, and without it their website person stays apart.
            unionid=visitor.unionid,
        )
        return Finished(
            code=code_of_completed(self._service, grant.scene, visitor.openid),
            oidc_request=grant.oidc_request,
        )


def code_of_completed(service: LoginService, scene: str, openid: str) -> str:
    """The one-time code of an attempt a web authorization just completed, for the browser that
    came back to redeem (the same one that started it: its state said so).

    Raises:
        WebAuthorizationRefused: ``ATTEMPT_GONE``: the attempt expired meanwhile, or another
            openid completed it first.
    """
    attempt = service.attempt(scene)
    if (
        attempt is None
        or attempt.status is not Status.CONFIRMED
        or attempt.openid != openid
        or not attempt.code
    ):
        raise WebAuthorizationRefused(Refusal.ATTEMPT_GONE)
    return attempt.code
