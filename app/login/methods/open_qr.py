"""Website application login (method ``open_qr``): the Open Platform's 网站应用微信登录, scope
``snsapi_login``. The visitor scans WeChat's own QR code on WeChat's page, without following
anything, and WeChat gives their openid under the website application's AppID, their nickname
and avatar URL, and the unionid.

::

    start   an attempt for this browser (no QR code of ours), a ``state`` bound to the browser
            -> {WECHAT_OPEN_BASE}/connect/qrconnect?appid&redirect_uri&response_type=code
               &scope=snsapi_login&state#wechat_redirect
    WeChat  -> redirect_uri?code=CODE&state=STATE   (no code: the visitor cancelled)
    finish  state -> the attempt (once, same browser); code -> access_token and openid
            (sns/oauth2/access_token); sns/userinfo -> nickname, headimgurl, unionid;
            LoginService.complete(...) -> the one-time code the browser redeems. A state issued
            with a link intent attaches the identity to the signed-in person instead.

We send the browser to WeChat's page rather than embed WeChat's JS widget: the widget is a
third-party script and an iframe, which our CSP (``script-src 'self'``, no frames) forbids.

The HTTP side is Authlib's OAuth 2 client (``OAuth2Session``) with WeChat's compliance fixes:
the code exchange is a GET whose query names the client ``appid`` and ``secret`` (not
``client_id``/``client_secret``, no ``redirect_uri``), and errors come as ``errcode`` in a 200
JSON answer, without ``token_type``. ``sns/userinfo`` takes the token in the query.

Free of Flask: the view passes in the browser's binding hash, our ``redirect_uri`` and the
signed-in person for a link.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import requests
from authlib.integrations.requests_client import OAuth2Session

from ...wechat.errors import WeChatAPIError, WeChatTransportError, api_error
from ..service import LoginService
from ..store import AttemptContext
from ..users import IdentityError
from .wechat_browser import (
    STATE_SECONDS,
    AuthorizationStates,
    Finished,
    Refusal,
    StateGrant,
    WebAuthorizationRefused,
    code_of_completed,
    refusals_for,
)

log = logging.getLogger(__name__)

#: The method's name in ``LOGIN_METHODS``, in attempts, sign-ins and identities.
METHOD = "open_qr"

#: The errcodes of ``sns/oauth2/access_token`` that are the visitor's to retry, not ours:
#: 40029 invalid code, 40163 code used; 40125 (invalid appsecret) is ours, but the visitor
#: is told the same way, with a clear page, and it is logged.
CODE_ERRCODES = {40029: Refusal.INVALID_CODE, 40163: Refusal.CODE_USED}
#: WeChat's answer for a wrong AppSecret.
BAD_SECRET = 40125


def qrconnect_url(open_base: str, appid: str, redirect_uri: str, state: str) -> str:
    """The URL of WeChat's QR-code page for the website application.

    Doc: https://developers.weixin.qq.com/doc/oplatform/Website_App/WeChat_Login/Wechat_Login.html

    Args:
        open_base: ``WECHAT_OPEN_BASE``, e.g. ``https://open.weixin.qq.com``.
        appid: the website application's AppID (``WECHAT_OPEN_APP_ID``).
        redirect_uri: our callback; its host must be the application's 授权回调域.
        state: from ``AuthorizationStates.issue``.

    Returns:
        The URL, parameters in WeChat's order, ending in ``#wechat_redirect``.
    """
    query = urlencode(
        [
            ("appid", appid),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", "snsapi_login"),
            ("state", state),
        ],
        quote_via=quote,
        safe="",
    )
    return f"{open_base.rstrip('/')}/connect/qrconnect?{query}#wechat_redirect"


@dataclass(frozen=True)
class WebsiteVisitor:
    """Who WeChat says signed in: ``openid`` under the website AppID, and what
    ``sns/userinfo`` gave (``unionid``, ``nickname``, ``headimgurl``; None when absent)."""

    openid: str
    unionid: str | None
    nickname: str | None
    headimgurl: str | None

    @property
    def profile(self) -> dict[str, str]:
        """``{"nickname", "headimgurl"}``, the ones known."""
        return {
            k: v for k, v in (("nickname", self.nickname), ("headimgurl", self.headimgurl)) if v
        }


def _wechat_client_auth(
    client: Any, method: str, uri: str, headers: dict, body: str
) -> tuple[str, dict, str]:
    """Authlib client authentication as WeChat wants it: ``appid`` and ``secret`` in the
    query, in WeChat's order, and nothing it does not name (no ``redirect_uri``)."""
    parts = urlsplit(uri)
    given = dict(parse_qsl(parts.query))
    query = urlencode(
        [
            ("appid", client.client_id),
            ("secret", client.client_secret),
            ("code", given.get("code", "")),
            ("grant_type", "authorization_code"),
        ]
    )
    return urlunsplit(parts._replace(query=query)), headers, body


def _errcode_to_exception(response: requests.Response) -> requests.Response:
    """Authlib compliance hook: WeChat's ``errcode`` in a 200 answer becomes our exception, and
    a good answer gets the ``token_type`` WeChat leaves out (its tokens are bearer tokens)."""
    data = _json(response)
    if data.get("errcode"):
        raise api_error(int(data["errcode"]), str(data.get("errmsg", "")))
    data.setdefault("token_type", "bearer")
    response._content = json.dumps(data).encode()
    return response


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise WeChatTransportError(f"HTTP {response.status_code}: not JSON") from None
    if not isinstance(data, dict):
        raise WeChatTransportError("not a JSON object")
    return data


class WebsiteOAuth:
    """The website application's two calls, through Authlib's OAuth 2 client.

    Args:
        appid: ``WECHAT_OPEN_APP_ID``.
        secret: ``WECHAT_OPEN_APP_SECRET`` (never logged).
        api_base: ``WECHAT_API_BASE``.
        mount: prepares each session (the emulator's transport in emulator mode).
        timeout: per request, in seconds.
    """

    def __init__(
        self,
        appid: str,
        secret: str,
        *,
        api_base: str,
        mount: Callable[[requests.Session], None] = lambda session: None,
        timeout: float = 5,
    ) -> None:
        self.appid = appid
        self._secret = secret
        self._api_base = api_base.rstrip("/")
        self._mount = mount
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"WebsiteOAuth(appid={self.appid!r})"  # never the secret

    def visitor(self, code: str) -> WebsiteVisitor:
        """Exchange ``code`` and read who it is.

        Doc: https://developers.weixin.qq.com/doc/oplatform/Website_App/WeChat_Login/Wechat_Login.html
        and .../Authorized_Interface_Calling_UnionID.html (``sns/userinfo``).

        Raises:
            WeChatAPIError: e.g. 40029 invalid code, 40163 code used, 40125 wrong AppSecret.
            WeChatTransportError: WeChat could not be reached, or answered no openid.
        """
        # One session per exchange: a token belongs to one visitor.
        with OAuth2Session(
            self.appid,
            self._secret,
            token_endpoint_auth_method=_wechat_client_auth,
            token_placement="uri",
        ) as session:
            self._mount(session)
            session.register_compliance_hook("access_token_response", _errcode_to_exception)
            try:
                token = session.fetch_token(
                    f"{self._api_base}/sns/oauth2/access_token",
                    method="GET",
                    code=code,
                    grant_type="authorization_code",
                    timeout=self._timeout,
                )
                if not token.get("openid"):
                    raise WeChatTransportError("sns/oauth2/access_token: no openid in answer")
                answer = session.get(
                    f"{self._api_base}/sns/userinfo",
                    params={"openid": token["openid"], "lang": "zh_CN"},
                    timeout=self._timeout,
                )
            except requests.RequestException as exc:
                raise WeChatTransportError(f"sns/oauth2: {type(exc).__name__}") from None
        info = _json(answer)
        if info.get("errcode"):
            raise api_error(int(info["errcode"]), str(info.get("errmsg", "")))
        return WebsiteVisitor(
            openid=str(token["openid"]),
            unionid=str(info.get("unionid") or token.get("unionid") or "") or None,
            nickname=str(info["nickname"]) if info.get("nickname") else None,
            headimgurl=str(info["headimgurl"]) if info.get("headimgurl") else None,
        )


class LinkRefused(Exception):
    """The identity could not be linked; ``reason`` is for the person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OpenQRLogin:
    """Starts and finishes website-application logins (and links).

    Args:
        service: the login service (attempts, ``complete``, users).
        oauth: the website application's calls.
        states: the state store shared with ``wechat_browser``.
        open_base: ``WECHAT_OPEN_BASE``.
    """

    def __init__(
        self,
        *,
        service: LoginService,
        oauth: WebsiteOAuth,
        states: AuthorizationStates,
        open_base: str,
    ) -> None:
        self._service = service
        self._oauth = oauth
        self._states = states
        self._open_base = open_base

    def start(
        self,
        browser_hash: str,
        context: AttemptContext,
        redirect_uri: str,
        link_user: str = "",
        oidc_request: str = "",
    ) -> str:
        """Open an attempt for this browser (none for a link) and say where to send it.

        Args:
            browser_hash: ``hash_secret()`` of the browser's binding secret.
            context: site, browser and IP, kept with the attempt.
            redirect_uri: our absolute callback URL.
            link_user: the signed-in person's id to link the identity to; "" to sign in.
            oidc_request: the app's authorization request the sign-in is for ("" for the
                site), handed back by ``finish``.

        Returns:
            The ``qrconnect_url``.

        Raises:
            redis.RedisError: the attempt or its state could not be stored.
        """
        scene = ""
        if not link_user:
            scene = self._service.open_attempt(browser_hash, context, STATE_SECONDS).scene
        state = self._states.issue(browser_hash, scene, link_user, oidc_request)
        return qrconnect_url(self._open_base, self._oauth.appid, redirect_uri, state)

    def finish(self, code: str, state: str, browser_hash: str) -> Finished:
        """Take WeChat's answer: sign in (complete the attempt) or link, as the state says.

        Args:
            code: the ``code`` WeChat added ("" when the visitor cancelled).
            state: the ``state`` WeChat gave back.
            browser_hash: ``hash_secret()`` of this browser's binding secret ("" for none).

        Raises:
            WebAuthorizationRefused: bad state, cancelled, 40029, 40163, 40125, attempt gone.
            LinkRefused: the identity is another person's, or conflicts.
            WeChatError: the exchange failed otherwise (WeChat busy or unreachable).
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
            visitor = self._oauth.visitor(code)
        except WeChatAPIError as exc:
            if exc.errcode in CODE_ERRCODES:
                raise WebAuthorizationRefused(CODE_ERRCODES[exc.errcode]) from exc
            if exc.errcode == BAD_SECRET:
                log.error("website login: WECHAT_OPEN_APP_SECRET refused by WeChat (40125)")
                raise WebAuthorizationRefused(Refusal.BAD_SECRET) from exc
            raise
        if grant.link_user:
            try:
                user = self._service.link_identity(
                    grant.link_user,
                    visitor.openid,
                    method=METHOD,
                    appid=self._oauth.appid,
                    unionid=visitor.unionid,
                    profile=visitor.profile,
                )
            except (IdentityError, LookupError) as exc:
                raise LinkRefused(
                    getattr(exc, "reason", "登录已失效，请重新登录后再绑定。")
                ) from exc
            return Finished(linked=user)
        self._service.complete(
            grant.scene,
            visitor.openid,
            method=METHOD,
            logged="website application login",
            same_device=True,
            appid=self._oauth.appid,
            unionid=visitor.unionid,
            profile=visitor.profile,
        )
        return Finished(
            code=code_of_completed(self._service, grant.scene, visitor.openid),
            oidc_request=grant.oidc_request,
        )
