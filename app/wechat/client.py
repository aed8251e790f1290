"""The WeChat API client: access_token shared through Redis, QR codes, user info, and the
web-authorization code exchange.

Every URL is built from one ``api_base`` so that the emulator (or any stand-in) can answer.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import requests
from requests.adapters import HTTPAdapter

from ..metrics import WECHAT_API_ERRORS
from .errors import InvalidCredentialError, WeChatTransportError, api_error

#: Users WeChat answers in one ``user/info/batchget`` call.
MAX_USERS_INFO = 100

log = logging.getLogger(__name__)

#: A cached token is dropped this many seconds before WeChat says it expires.
TOKEN_EARLY_REFRESH_SECONDS = 60

#: WeChat's "system busy": worth one more try after a short pause (seconds).
BUSY_ERRCODE = -1
BUSY_RETRY_SECONDS = 0.5

#: After a quota errcode, how long no worker calls that API again, in seconds:
#: 45009 (daily quota reached) and 45011 (per-minute limit).
COOLDOWN_SECONDS = {45009: 300, 45011: 60}

#: Keep-alive connections a process keeps to WeChat: about as many calls as a gevent worker
#: makes at once (a burst of page loads, each asking for a QR code). requests keeps 10, and
#: opens and then throws away a connection, a TLS handshake each, for every call beyond.
KEEP_ALIVE_CONNECTIONS = 100


@dataclass(frozen=True)
class QRCode:
    """A temporary parametric QR code, as ``qrcode/create`` returns it.

    Attributes:
        ticket: WeChat's ticket (may contain ``+/=``).
        expire_seconds: its life, in seconds.
        url: the text the QR image must encode.
    """

    ticket: str
    expire_seconds: int
    url: str


@dataclass(frozen=True)
class WebAuthorization:
    """What ``sns/oauth2/access_token`` says about the visitor of a web authorization.

    The user's own access_token and refresh_token it also returns are not kept: they are the
    visitor's, not the account's, and an openid is all a sign-in needs.

    Attributes:
        openid: the visitor's openid with this account.
        unionid: their unionid, when the account is bound to an Open Platform account.
        is_snapshotuser: the page was opened as a Moments "snapshot page": ``openid`` is a
            virtual one that must never sign anyone in.
    """

    openid: str
    unionid: str | None = None
    is_snapshotuser: bool = False


class WeChatClient:
    """Calls the WeChat API for one official account.

    The access_token is cached in Redis for every worker process and host; exactly one of them
    refreshes it at a time, under a Redis lock, since each classic refresh invalidates the
    previous token. A call rejected for a stale token (40001/40014/42001) refreshes once and
    retries once.

    Args:
        app_id: the account's AppID.
        app_secret: its AppSecret (never logged, never put in an error message).
        redis_client: where the token and its lock live (``decode_responses=True``).
        api_base: e.g. ``https://api.weixin.qq.com``, no trailing slash.
        session: the ``requests.Session`` to send with (tests and the emulator mount adapters);
            None: one that keeps ``KEEP_ALIVE_CONNECTIONS`` connections alive. It takes the
            environment's proxy and CA bundle settings now, once, and reads the environment
            no more (``_read_environment_once``).
        timeout: seconds allowed to connect and to read, per call.
        token_endpoint: ``stable`` (``cgi-bin/stable_token``) or ``classic`` (``cgi-bin/token``).
        sleep: pauses for n seconds before retrying a busy answer (tests pass their own).
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        *,
        redis_client: redis.Redis,
        api_base: str = "https://api.weixin.qq.com",
        session: requests.Session | None = None,
        timeout: float = 5.0,
        token_endpoint: str = "stable",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if token_endpoint not in ("stable", "classic"):
            raise ValueError(f"token_endpoint must be stable or classic, not {token_endpoint!r}")
        self.app_id = app_id
        self._app_secret = app_secret
        self._redis = redis_client
        self.api_base = api_base.rstrip("/")
        self._session = session or _keep_alive_session()
        _read_environment_once(self._session, self.api_base)
        self._timeout = timeout
        self._token_endpoint = token_endpoint
        self._sleep = sleep
        # Per AppID, not per deployment (no REDIS_KEY_PREFIX): WeChat wants one refresher per
        # account, so deployments of one account sharing a database share its token.
        self._token_key = f"wechat:access_token:{app_id}"
        self._lock_key = f"wechat:access_token_lock:{app_id}"

    def __repr__(self) -> str:
        return f"WeChatClient(app_id={self.app_id!r}, api_base={self.api_base!r})"

    def access_token(self) -> str:
        """Return a valid access_token, from the shared cache or freshly fetched.

        Raises:
            WeChatAPIError: WeChat refused (e.g. 40013 invalid appid, 40125 invalid appsecret,
                40164 IP not whitelisted, 45009 quota reached).
            WeChatTransportError: WeChat or Redis's lock could not be had in time.
        """
        cached = self._redis.get(self._token_key)
        return cached if cached else self._refresh_token(stale=None)

    def refresh_access_token(self) -> str:
        """Fetch an access_token from WeChat now, whatever the cache holds, and cache it: the
        proof that the credentials work (``flask wechat check``).

        Raises:
            As ``access_token``.
        """
        return self._refresh_token(stale=self._redis.get(self._token_key))

    def create_qrcode(self, scene_str: str, expire_seconds: int) -> QRCode:
        """Create a temporary ``QR_STR_SCENE`` QR code.

        Doc: https://developers.weixin.qq.com/doc/offiaccount/Account_Management/Generating_a_Parametric_QR_Code.html

        Args:
            scene_str: the scene, 1..64 characters.
            expire_seconds: its life in seconds (sent explicitly: WeChat's default is 60).

        Returns:
            The ``QRCode`` (ticket, expire_seconds as granted, url).

        Raises:
            WeChatAPIError, WeChatTransportError.
        """
        data = self._call_with_token(
            "POST",
            "/cgi-bin/qrcode/create",
            json={
                "expire_seconds": expire_seconds,
                "action_name": "QR_STR_SCENE",
                # The "scene" wrapper matters: without it WeChat silently uses scene 0.
                "action_info": {"scene": {"scene_str": scene_str}},
            },
        )
        if not data.get("ticket") or not data.get("url"):
            raise WeChatTransportError("POST /cgi-bin/qrcode/create: no ticket or url in answer")
        return QRCode(
            ticket=data["ticket"],
            expire_seconds=int(data.get("expire_seconds", expire_seconds)),
            url=data["url"],
        )

    def users_info(self, openids: list[str], lang: str = "zh_CN") -> list[dict[str, Any]]:
        """Fetch the basic information of up to ``MAX_USERS_INFO`` followers in one call.

        Doc: https://developers.weixin.qq.com/doc/offiaccount/User_Management/Get_users_basic_information_UnionID.html
        (batchget).

        Args:
            openids: the users, at most ``MAX_USERS_INFO``.
            lang: ``zh_CN``, ``zh_TW`` or ``en``.

        Returns:
            One ``user_info``-shaped dict per user, as WeChat lists them.

        Raises:
            ValueError: more than ``MAX_USERS_INFO`` openids.
            WeChatAPIError, WeChatTransportError.
        """
        if len(openids) > MAX_USERS_INFO:
            raise ValueError(f"at most {MAX_USERS_INFO} openids per call, not {len(openids)}")
        data = self._call_with_token(
            "POST",
            "/cgi-bin/user/info/batchget",
            json={"user_list": [{"openid": openid, "lang": lang} for openid in openids]},
        )
        return list(data.get("user_info_list", []))

    def oauth_access_token(self, code: str) -> WebAuthorization:
        """Exchange a web-authorization ``code`` for the visitor's openid.

        Doc: https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_webpage_authorization.html

        Args:
            code: the ``code`` WeChat appended to our ``redirect_uri``; it lives 5 minutes and
                works once.

        Returns:
            The ``WebAuthorization`` (openid, unionid if bound, snapshot flag).

        Raises:
            WeChatAPIError: e.g. 40029 invalid code, 40163 code been used, 40013/40125 wrong
                AppID or AppSecret.
            WeChatTransportError: WeChat could not be reached, or answered no openid.
        """
        # The AppSecret rides in the query, as WeChat wants: _send and _request log the path only.
        data = self._request(
            "GET",
            "/sns/oauth2/access_token",
            params={
                "appid": self.app_id,
                "secret": self._app_secret,
                "code": code,
                "grant_type": "authorization_code",
            },
        )
        if not data.get("openid"):
            raise WeChatTransportError("GET /sns/oauth2/access_token: no openid in answer")
        return WebAuthorization(
            openid=str(data["openid"]),
            unionid=str(data["unionid"]) if data.get("unionid") else None,
            is_snapshotuser=data.get("is_snapshotuser") == 1,
        )

    def _call_with_token(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        token = self.access_token()
        try:
            return self._request(method, path, access_token=token, **kwargs)
        except InvalidCredentialError as exc:
            log.warning("WeChat rejected the access_token (errcode %s); refreshing", exc.errcode)
            token = self._refresh_token(stale=token)
            return self._request(method, path, access_token=token, **kwargs)

    def _refresh_token(self, stale: str | None) -> str:
        # Twice the HTTP timeout: a holder that died frees the lock soon after.
        lock = self._redis.lock(self._lock_key, timeout=2 * self._timeout + 1)
        if not lock.acquire(blocking=True, blocking_timeout=2 * self._timeout + 1):
            raise WeChatTransportError("timed out waiting for another worker's token refresh")
        try:
            current = self._redis.get(self._token_key)
            if current and current != stale:
                return current  # another worker refreshed while we waited
            data = self._fetch_token()
            token = data.get("access_token")
            if not token:
                raise WeChatTransportError("token endpoint answered no access_token")
            ttl = int(data.get("expires_in", 7200)) - TOKEN_EARLY_REFRESH_SECONDS
            self._redis.set(self._token_key, token, ex=max(ttl, 1))
            log.info("fetched a new access_token, cached for %s s", max(ttl, 1))
            return token
        finally:
            lock.release()

    def _fetch_token(self) -> dict[str, Any]:
        # Doc: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/getStableAccessToken.html
        if self._token_endpoint == "stable":
            return self._request(
                "POST",
                "/cgi-bin/stable_token",
                json={
                    "grant_type": "client_credential",
                    "appid": self.app_id,
                    "secret": self._app_secret,
                    "force_refresh": False,
                },
            )
        # Doc: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Get_access_token.html
        return self._request(
            "GET",
            "/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": self.app_id,
                "secret": self._app_secret,
            },
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        access_token: str | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send one API call; -1 (busy) is retried once after a pause; 45009/45011 (quota)
        make every worker stop calling ``path`` for a while, so a busy WeChat is answered at
        once instead of hammered."""
        cooldown_key = f"wechat:cooldown:{self.app_id}:{path}"
        refused = self._redis.get(cooldown_key)
        if refused:
            log.warning("WeChat %s %s not called: cooling down, errcode=%s", method, path, refused)
            raise api_error(int(refused), "not called: WeChat refused this call moments ago")
        query = dict(params or {})
        if access_token is not None:
            query["access_token"] = access_token
        try:
            data = self._send(method, path, query, json)
            if data.get("errcode") == BUSY_ERRCODE:
                self._sleep(BUSY_RETRY_SECONDS)
                data = self._send(method, path, query, json)
        except WeChatTransportError as exc:
            WECHAT_API_ERRORS.labels("transport").inc()
            log.warning("WeChat not reached: %s", exc)
            raise
        errcode = int(data.get("errcode") or 0)
        if errcode in COOLDOWN_SECONDS:
            self._redis.set(cooldown_key, errcode, ex=COOLDOWN_SECONDS[errcode])
        if errcode:
            WECHAT_API_ERRORS.labels(str(errcode)).inc()
            errmsg = str(data.get("errmsg", ""))
            log.warning("WeChat %s %s answered errcode=%s errmsg=%s", method, path, errcode, errmsg)
            raise api_error(errcode, errmsg)
        return data

    def _send(
        self, method: str, path: str, query: dict[str, Any], json: dict[str, Any] | None
    ) -> dict[str, Any]:
        try:
            response = self._session.request(
                method, self.api_base + path, params=query, json=json, timeout=self._timeout
            )
        except requests.RequestException as exc:
            # Name the path, never the URL: its query may hold the AppSecret or access_token.
            raise WeChatTransportError(f"{method} {path}: {type(exc).__name__}") from None
        if not response.ok:
            raise WeChatTransportError(f"{method} {path}: HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise WeChatTransportError(f"{method} {path}: answer is not JSON") from None
        if not isinstance(data, dict):
            raise WeChatTransportError(f"{method} {path}: answer is not a JSON object")
        return data


def _keep_alive_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=KEEP_ALIVE_CONNECTIONS)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _read_environment_once(session: requests.Session, url: str) -> None:
    """Give ``session`` the proxy (``HTTPS_PROXY``, ``NO_PROXY``...) and CA bundle
    (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) the environment sets for ``url``, and turn its
    ``trust_env`` off, so that it stops reading them again on every request.

    Every call of a client goes to the host of its ``api_base``, so the proxy chosen for that
    host holds for all of them. Reading the environment on each request cost about 0.13 ms of
    CPU per call (the proxy lookup, and a ``~/.netrc`` search: no WeChat call authenticates
    with ``.netrc``). A session whose ``trust_env`` is off already is left alone.

    Args:
        session: the session, changed in place.
        url: the base of every URL it will be sent to.
    """
    if not session.trust_env:
        return
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies = settings["proxies"]
    session.verify = settings["verify"]
    session.trust_env = False
