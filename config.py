"""Configuration classes, read once from the environment.

``create_app()`` picks one by ``APP_ENV`` (``development`` by default, ``production``, ``testing``).
With no ``WECHAT_APP_ID`` the app runs against its built-in WeChat emulator; with no ``REDIS_URL``
it keeps its state in an in-process Redis stand-in (single process only).
"""

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SettingsError(RuntimeError):
    """A setting is missing or malformed: the app refuses to start.

    Its text is one line, ``<setting> <problem>; fix: <fix>``, what ``flask`` and gunicorn print.

    Attributes:
        setting: the environment variable(s) at fault, e.g. ``"WECHAT_TOKEN"``.
        problem: what is wrong, following the name (``"must be 3 to 32 letters or digits"``).
        fix: what to set instead, in a sentence.
    """

    def __init__(self, setting: str, problem: str, fix: str) -> None:
        super().__init__(f"{setting} {problem}; fix: {fix}")
        self.setting = setting
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class Unreadable:
    """The value of a setting whose environment variable does not parse.

    Raising while ``config.py`` is imported would be a traceback out of any ``import``; the
    refusal waits for ``create_app()``, which raises ``error`` before using any setting.
    """

    error: SettingsError


def _env(name: str, default: str, parse: Callable[[str], Any], expected: str) -> Any:
    """Read a setting with ``parse``, or an ``Unreadable`` naming it when ``parse`` refuses.

    Args:
        name: the environment variable.
        default: its value when unset or empty, as it would be written there.
        parse: turns the text into the value; raises ``ValueError`` on a malformed one.
        expected: what a good value is, for the refusal (``"a whole number"``).

    Returns:
        What ``parse`` returned, or an ``Unreadable`` for ``create_app()`` to refuse.
    """
    raw = os.environ.get(name) or default
    try:
        return parse(raw)
    except ValueError:
        return Unreadable(
            SettingsError(
                name,
                f"must be {expected}, not {raw!r}",
                f"set {name} to {expected}, or unset it for the default ({default or 'none'})",
            )
        )


def _env_int(name: str, default: int) -> int | Unreadable:
    """Read an integer setting (see ``_env``)."""
    return _env(name, str(default), int, "a whole number")


def _env_float(name: str, default: float) -> float | Unreadable:
    """Read a number of seconds (see ``_env``)."""
    return _env(name, str(default), float, "a number of seconds")


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``10.0.0.0/8,::1/128`` as networks; ``ValueError`` on a malformed one."""
    return tuple(ipaddress.ip_network(item.strip()) for item in text.split(",") if item.strip())


def _sentinels(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as ``(host, port)`` pairs; ``ValueError`` on a malformed one."""
    addresses = []
    for address in text.split(","):
        if address.strip():
            host, _, port = address.strip().rpartition(":")
            if not host:
                raise ValueError(address)
            addresses.append((host, int(port)))
    return addresses


class Config:
    """Settings shared by every environment."""

    #: Signs the Flask session cookie. Production refuses to start without it.
    SECRET_KEY = os.environ.get("SECRET_KEY", "")

    #: The official account's AppID (``wx...``). Unset: the built-in emulator stands in for WeChat.
    WECHAT_APP_ID = os.environ.get("WECHAT_APP_ID", "")
    #: The account's AppSecret. Never logged.
    WECHAT_APP_SECRET = os.environ.get("WECHAT_APP_SECRET", "")
    #: The Token entered on the account's server-configuration page (3..32 letters or digits).
    WECHAT_TOKEN = os.environ.get("WECHAT_TOKEN", "")
    #: Base URL of every WeChat API call, so that an emulator can stand in.
    WECHAT_API_BASE = os.environ.get("WECHAT_API_BASE", "https://api.weixin.qq.com")
    #: Base URL of WeChat's web authorization (``connect/oauth2/authorize``), where a visitor
    #: inside WeChat's browser is sent to prove their openid without a scan (in-WeChat login).
    WECHAT_OPEN_BASE = os.environ.get("WECHAT_OPEN_BASE", "https://open.weixin.qq.com")
    #: ``stable`` (cgi-bin/stable_token: no invalidation races between hosts) or ``classic``.
    WECHAT_TOKEN_ENDPOINT = os.environ.get("WECHAT_TOKEN_ENDPOINT", "stable")
    #: Seconds allowed for one WeChat API call (connect and read each).
    WECHAT_HTTP_TIMEOUT = _env_float("WECHAT_HTTP_TIMEOUT", 5)

    #: The account's EncodingAESKey (43 letters or digits): turns message encryption on.
    WECHAT_ENCODING_AES_KEY = os.environ.get("WECHAT_ENCODING_AES_KEY", "")
    #: The EncodingAESKey before the last rotation, tried when the current one fails.
    WECHAT_ENCODING_AES_KEY_PREVIOUS = os.environ.get("WECHAT_ENCODING_AES_KEY_PREVIOUS", "")
    #: With a key: ``safe`` (encrypted callbacks only) or ``compatible`` (both kinds).
    WECHAT_ENCRYPT_MODE = os.environ.get("WECHAT_ENCRYPT_MODE", "safe")
    #: Callbacks whose ``timestamp`` is further than this from now are refused, in seconds;
    #: a signature is accepted once inside this window.
    WECHAT_CALLBACK_MAX_AGE_SECONDS = _env_int("WECHAT_CALLBACK_MAX_AGE_SECONDS", 300)

    #: The account's other callback handler (a bot, a CMS): every message and event that is not
    #: a login scan is passed on to it, signed afresh, and its reply relayed. Unset: none.
    WECHAT_FORWARD_URL = os.environ.get("WECHAT_FORWARD_URL", "")
    #: The upstream's own Token (3..32 letters or digits), required with a forward URL and
    #: never the account's: what we forward is signed with it, so nothing the upstream receives
    #: (or logs, or leaks) is signed as WeChat signs our callbacks.
    WECHAT_FORWARD_TOKEN = os.environ.get("WECHAT_FORWARD_TOKEN", "")
    #: The most a forwarded message may wait for the upstream's reply, in seconds; then WeChat
    #: gets ``success``. WeChat itself waits 5 s for the whole answer.
    WECHAT_FORWARD_TIMEOUT_SECONDS = _env_float("WECHAT_FORWARD_TIMEOUT_SECONDS", 4)

    #: The site's public address as WeChat and browsers reach it (``https://login.example.com``):
    #: ``flask wechat check`` verifies ``<PUBLIC_BASE_URL>/wechat/callback`` through it.
    PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "").rstrip("/")

    #: The site's name as the scanner reads it in WeChat ("登录成功：<SITE_NAME>"). Default: the
    #: host of ``PUBLIC_BASE_URL``. Never taken from a request, whose ``Host`` anyone can forge.
    SITE_NAME = os.environ.get("SITE_NAME", "")

    #: The OpenID provider's issuer URL, exactly as relying parties must see it. Default:
    #: ``PUBLIC_BASE_URL`` (in development without it, ``http://127.0.0.1:5000``).
    OIDC_ISSUER = os.environ.get("OIDC_ISSUER", "")
    #: PEM file of the key that signs ID and logout tokens (RSA: RS256, or EC P-256: ES256).
    #: Required in production; development makes one and keeps it in Redis.
    OIDC_SIGNING_KEY = os.environ.get("OIDC_SIGNING_KEY", "")
    #: PEM file of the key before the last rotation: still published in the JWKS.
    OIDC_SIGNING_KEY_PREVIOUS = os.environ.get("OIDC_SIGNING_KEY_PREVIOUS", "")
    #: Life of an access token, in seconds.
    OIDC_ACCESS_TOKEN_SECONDS = _env_int("OIDC_ACCESS_TOKEN_SECONDS", 600)
    #: Life of a refresh token (``offline_access``), in seconds; each use gives a new one.
    OIDC_REFRESH_TOKEN_SECONDS = _env_int("OIDC_REFRESH_TOKEN_SECONDS", 30 * 86400)

    #: ``text`` (one readable line per event) or ``json`` (one JSON object per line).
    LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")

    #: ``redis://`` URL shared by every worker. Unset: an in-process stand-in (one process only).
    REDIS_URL = os.environ.get("REDIS_URL", "")
    #: Put before every Redis key and the pub/sub channel. Unset: ``wxlogin:<db>:``, after the
    #: database in use (pub/sub ignores database numbers, so deployments on one Redis server
    #: must not share a channel). Give each deployment in one database a prefix of its own.
    REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX")
    #: Redis Sentinel addresses, ``host:port,host:port``: when set, Redis is found through them
    #: (and followed across failovers) instead of at ``REDIS_URL``.
    REDIS_SENTINELS = _env("REDIS_SENTINELS", "", _sentinels, "host:port,host:port")
    #: The Sentinel service name of the master, and the database number to use on it.
    REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "mymaster")
    REDIS_SENTINEL_DB = _env_int("REDIS_SENTINEL_DB", 0)

    #: Life of a login QR code, in seconds; the attempt lives in Redis exactly as long.
    LOGIN_QR_EXPIRE_SECONDS = _env_int("LOGIN_QR_EXPIRE_SECONDS", 180)
    #: Life of the one-time code handed to the browser after a scan, in seconds.
    LOGIN_CODE_TTL_SECONDS = _env_int("LOGIN_CODE_TTL_SECONDS", 60)
    #: How often each worker re-reads the status of every attempt its sockets wait on, in
    #: seconds: the most a lost push can delay a login.
    LOGIN_RECHECK_SECONDS = _env_float("LOGIN_RECHECK_SECONDS", 1)
    #: Waiting sockets one worker process holds at most (0: no cap); more are closed with
    #: 1013 "try again later" and the page reconnects. gunicorn.conf.py sets it below the
    #: worker's connection limit, so that WeChat's callback always finds a free slot.
    LOGIN_MAX_SOCKETS = _env_int("LOGIN_MAX_SOCKETS", 0)
    #: Waiting sockets one client (an IPv4 address, or an IPv6 /64) holds at most on one
    #: worker (0: no cap); its further handshakes are refused with 429. Generous enough for an
    #: office behind one NAT, and far below LOGIN_MAX_SOCKETS, so that no single client can
    #: fill a worker and leave others a 1013.
    LOGIN_MAX_SOCKETS_PER_IP = _env_int("LOGIN_MAX_SOCKETS_PER_IP", 200)
    #: Websocket keep-alive ping interval, in seconds (keep below proxies' idle timeouts): a
    #: socket whose previous ping went unanswered is closed, so a dead peer goes within two.
    LOGIN_WS_PING_SECONDS = _env_int("LOGIN_WS_PING_SECONDS", 25)

    #: The login methods offered, in order, comma-separated: ``scan`` (a parametric QR code),
    #: ``message`` (a code sent to the account as a text message), ``wechat_browser``,
    #: ``open_qr`` (the website application; needs WECHAT_OPEN_APP_ID). ``auto``:
    #: ``scan``, or ``message`` when WeChat answers 48001 (no parametric QR codes for this
    #: account type), asked at first use and then every hour.
    LOGIN_METHODS = os.environ.get("LOGIN_METHODS", "auto")
    #: The Open Platform website application's AppID (开放平台「管理中心 → 网站应用」), for
    #: ``open_qr`` in LOGIN_METHODS; not the official account's. Unset with the emulator: it
    #: brings a website application of its own.
    WECHAT_OPEN_APP_ID = os.environ.get("WECHAT_OPEN_APP_ID", "")
    #: The website application's AppSecret. Never logged.
    WECHAT_OPEN_APP_SECRET = os.environ.get("WECHAT_OPEN_APP_SECRET", "")
    #: The account's own follow QR code, shown beside the message code: an image URL
    #: (``https://...``) or the path of an image file, which we serve at ``/account-qr``.
    #: Download it from 公众号后台「设置与开发 → 公众号设置」. Required with ``message``.
    WECHAT_ACCOUNT_QR = os.environ.get("WECHAT_ACCOUNT_QR", "")

    #: ``off`` (the scan signs in), ``always`` or ``new_device``: when the scanner must
    #: confirm in WeChat by replying 1 (against QR-login hijacking).
    LOGIN_CONFIRM = os.environ.get("LOGIN_CONFIRM", "off")
    #: Limits on QR creation per client IP and per browser, e.g. ``10/minute;100/hour``;
    #: ``off`` disables them (load tests).
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "10/minute;60/hour")
    #: Other origins (``https://example.com``, comma-separated) allowed to open the login
    #: socket and redeem or log out; the site's own origin always is.
    LOGIN_ALLOWED_ORIGINS = tuple(
        origin.strip().rstrip("/")
        for origin in os.environ.get("LOGIN_ALLOWED_ORIGINS", "").split(",")
        if origin.strip()
    )

    #: Networks allowed to read ``/metrics`` (comma-separated CIDRs): loopback and private
    #: addresses by default, never the public internet.
    METRICS_ALLOWED_NETWORKS = _env(
        "METRICS_ALLOWED_NETWORKS",
        "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        _networks,
        "comma-separated networks (CIDR, like 10.0.0.0/8)",
    )

    #: How many reverse proxies in front of the app to trust for X-Forwarded-For/-Proto/-Host.
    TRUSTED_PROXIES = _env_int("TRUSTED_PROXIES", 0)

    #: Add ``includeSubDomains`` to HSTS: every subdomain of this host is then reached over https
    #: only, so none can be used over plain http to plant cookies. Off by default: turn it on
    #: only once every subdomain serves https.
    HSTS_INCLUDE_SUBDOMAINS = os.environ.get("HSTS_INCLUDE_SUBDOMAINS", "") in ("1", "true", "yes")

    #: Life of a signed-in session, in seconds (sessions live in Redis and can be ended).
    PERMANENT_SESSION_LIFETIME = _env_int("SESSION_LIFETIME_SECONDS", 7 * 86400)
    SESSION_COOKIE_HTTPONLY = True
    #: A session lasts its lifetime from sign-in; requests that do not change it never write it.
    SESSION_REFRESH_EACH_REQUEST = False
    SESSION_COOKIE_SAMESITE = "Lax"

    #: Keys that must be set for this environment to start.
    REQUIRED_SETTINGS: tuple[str, ...] = ()
    #: Whether a shared Redis (``REDIS_URL`` or ``REDIS_SENTINELS``) is required to start.
    REQUIRE_REDIS = False


class DevelopmentConfig(Config):
    """Local development: the emulator and the in-process store unless told otherwise."""


class TestingConfig(Config):
    """pytest: fixtures override what they need (``REDIS_URL`` to a real Redis, short expiries)."""

    TESTING = True
    SECRET_KEY = "testing-secret-key"
    WECHAT_APP_ID = ""
    WECHAT_FORWARD_URL = ""
    WECHAT_FORWARD_TOKEN = ""
    REDIS_URL = ""
    #: Tests read keys by their bare names; tests/test_prefix.py checks the default.
    REDIS_KEY_PREFIX = ""
    #: Tests choose their methods: ``auto``'s first probe would take the faults a test injects
    #: for a login's QR code. tests/test_message_login.py tests ``auto``.
    LOGIN_METHODS = "scan,wechat_browser"
    WECHAT_OPEN_APP_ID = ""
    WECHAT_OPEN_APP_SECRET = ""


class ProductionConfig(Config):
    """Real WeChat, real Redis: refuses to start without its secrets."""

    REQUIRED_SETTINGS = (
        "SECRET_KEY",
        "WECHAT_APP_ID",
        "WECHAT_APP_SECRET",
        "WECHAT_TOKEN",
        "PUBLIC_BASE_URL",
        "OIDC_SIGNING_KEY",
    )
    REQUIRE_REDIS = True


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}
