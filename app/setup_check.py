"""The setup checker behind ``flask wechat check``: is this deployment set up so that WeChat
login can work? Each check talks to the real thing (Redis, WeChat, the public callback URL) and
gives a verdict with the fix.

The mistakes it finds are the ones people hit: the callback URL or Token "fails verification",
the AppSecret is wrong, the server's IP is not on the account's whitelist, or the account type
cannot create parametric QR codes.
"""

import enum
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
import requests
from flask import Flask

from config import SettingsError

from .login.methods import API_UNAUTHORIZED, MESSAGE, WECHAT_BROWSER
from .settings import SETTINGS_PAGE
from .wechat.client import QRCode, WeChatClient
from .wechat.delivery import WECHAT_REPLY_SECONDS
from .wechat.errors import WeChatAPIError, WeChatError, WeChatTransportError
from .wechat.replay import SignatureLedger
from .wechat.signature import signed_query

#: Where the account's settings live, for the fixes (the sandbox has them on one page).
#: Where the domain allowed for web authorization (网页授权域名) is set.
WEB_AUTHORIZATION_PAGE = (
    "公众号后台「设置与开发 → 公众号设置 → 功能设置 → 网页授权域名」"
    "（测试号：「网页服务 → 网页账号 → 网页授权获取用户基本信息」）"
)


class Verdict(enum.StrEnum):
    """How one check came out."""

    OK = "ok"
    #: Works, or may work, but deserves a look (e.g. a non-standard port behind a proxy).
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check.

    Attributes:
        item: what was checked (``"credentials"``, ``"callback URL"``...).
        verdict: ok, warning or failed.
        detail: what was seen, in a sentence.
        fix: what to do about it; empty when there is nothing to do.
    """

    item: str
    verdict: Verdict
    detail: str
    fix: str = ""


def run_checks(app: Flask) -> list[Finding]:
    """Check the settings, Redis, the credentials, QR creation, the login methods and the
    public callback URL.

    Args:
        app: the application, as configured for this deployment.

    Returns:
        One ``Finding`` per check, in that order. A check that cannot run because an earlier one
        failed (no token, no QR code) is reported as failed, saying why.
    """
    findings = [_settings(app), _redis(app)]
    if findings[-1].verdict is Verdict.FAILED:
        # The access_token and its lock live in Redis.
        findings.append(Finding("credentials", Verdict.FAILED, "not tried: no Redis"))
    else:
        findings.append(_credentials(app))
    if findings[-1].verdict is Verdict.FAILED:
        findings.append(Finding("QR creation", Verdict.FAILED, "not tried: no access_token"))
    else:
        findings.append(_qr_creation(app))
    if findings[1].verdict is not Verdict.FAILED:  # the methods of auto are kept in Redis
        findings.append(_login_methods(app))
    findings.append(_callback_url(app))
    if WECHAT_BROWSER in app.extensions["wechat_login"].offered():
        findings.append(_web_authorization(app))
    return findings


def refused_settings(error: SettingsError) -> Finding:
    """The settings verdict when the app refused to start on ``error``: failed, with its fix.

    The other checks need the app, so this is the only verdict there is.
    """
    return Finding("settings", Verdict.FAILED, f"{error.setting} {error.problem}", error.fix)


def _settings(app: Flask) -> Finding:
    if app.config.get("EMULATOR_ACCOUNT_ID"):
        return Finding(
            "settings",
            Verdict.WARNING,
            "WECHAT_APP_ID is unset: the built-in emulator stands in for WeChat, so the checks "
            "below talk to it, not to WeChat",
            "set WECHAT_APP_ID, WECHAT_APP_SECRET and WECHAT_TOKEN to check the real account",
        )
    missing = [name for name in ("WECHAT_APP_SECRET", "WECHAT_TOKEN") if not app.config[name]]
    if missing:
        return Finding(
            "settings",
            Verdict.FAILED,
            f"{', '.join(missing)} unset",
            f"copy them from {SETTINGS_PAGE}",
        )
    mode = (
        f"messages encrypted ({app.config['WECHAT_ENCRYPT_MODE']} mode)"
        if app.config["WECHAT_ENCODING_AES_KEY"]
        else "messages in plaintext (no WECHAT_ENCODING_AES_KEY)"
    )
    return Finding("settings", Verdict.OK, f"AppID {app.config['WECHAT_APP_ID']}, {mode}")


def _redis(app: Flask) -> Finding:
    try:
        app.extensions["redis"].ping()
    except redis.RedisError as exc:
        return Finding(
            "Redis",
            Verdict.FAILED,
            f"does not answer: {type(exc).__name__}",
            "start Redis, or point REDIS_URL (or REDIS_SENTINELS) at it",
        )
    if not (app.config["REDIS_URL"] or app.config["REDIS_SENTINELS"]):
        return Finding(
            "Redis",
            Verdict.WARNING,
            "REDIS_URL is unset: an in-process stand-in keeps the state, for one process only",
            "set REDIS_URL before running more than one worker or host",
        )
    return Finding("Redis", Verdict.OK, "answers")


def _credentials(app: Flask) -> Finding:
    wechat = app.extensions["wechat_login"].wechat
    try:
        wechat.refresh_access_token()  # from WeChat, not from the cache
    except WeChatError as exc:
        detail, fix = _explain(exc, token_call=True)
        return Finding("credentials", Verdict.FAILED, detail, fix)
    return Finding(
        "credentials",
        Verdict.OK,
        f"WeChat issued an access_token ({app.config['WECHAT_TOKEN_ENDPOINT']} endpoint)",
    )


def try_qr_creation(wechat: WeChatClient) -> QRCode:
    """Create one temporary parametric QR code (60 s) for a scene that is not a login's: can
    this account make them? (``LOGIN_METHODS=auto`` asks this too.)

    Doc: https://developers.weixin.qq.com/doc/offiaccount/Account_Management/Generating_a_Parametric_QR_Code.html

    Raises:
        WeChatError: WeChat refused (``48001``: this account type may not) or was not reached.
    """
    # Not shaped like a login scene: if anyone scans it, it signs nobody in.
    return wechat.create_qrcode(f"setup-check-{secrets.token_hex(4)}", 60)


def _qr_creation(app: Flask) -> Finding:
    service = app.extensions["wechat_login"]
    try:
        qrcode = try_qr_creation(service.wechat)
    except WeChatError as exc:
        detail, fix = _explain(exc, token_call=False)
        refused = isinstance(exc, WeChatAPIError) and exc.errcode == API_UNAUTHORIZED
        if refused and service.methods.auto:
            service.methods.learned(qr_allowed=False)
            fix = "LOGIN_METHODS=auto offers message-code login instead of scan; for scan, " + fix
            return Finding("QR creation", Verdict.WARNING, detail, fix)
        return Finding("QR creation", Verdict.FAILED, detail, fix)
    if service.methods.auto:
        service.methods.learned(qr_allowed=True)
    return Finding(
        "QR creation",
        Verdict.OK,
        f"created a temporary QR code ({qrcode.expire_seconds} s, for no login)",
    )


def _login_methods(app: Flask) -> Finding:
    """What the login page offers, and whether ``message`` has the account's QR to show."""
    methods = app.extensions["wechat_login"].methods
    offered = ", ".join(methods.offered())
    detail = f"offered: {offered}" + (" (LOGIN_METHODS=auto)" if methods.auto else "")
    if methods.enabled(MESSAGE) and not app.config["WECHAT_ACCOUNT_QR"]:
        return Finding(
            "login methods",
            Verdict.WARNING,
            f"{detail}; WECHAT_ACCOUNT_QR is unset, so the page cannot show the account's "
            "QR code to follow",
            "download it from 公众号后台「设置与开发 → 公众号设置」 and set WECHAT_ACCOUNT_QR",
        )
    return Finding("login methods", Verdict.OK, detail)


def _explain(exc: WeChatError, token_call: bool) -> tuple[str, str]:
    """``(detail, fix)`` for a failed WeChat call, in the words of its errcode."""
    if isinstance(exc, WeChatTransportError):
        return (
            f"WeChat was not reached: {exc}",
            "check this host's DNS, firewall and outgoing proxy towards api.weixin.qq.com",
        )
    if not isinstance(exc, WeChatAPIError):
        return str(exc), ""
    detail = f"WeChat answered errcode {exc.errcode}: {exc.errmsg}"
    errcode = exc.errcode
    if errcode == 40013:
        return detail, f"WECHAT_APP_ID is not a valid AppID: copy the wx... id from {SETTINGS_PAGE}"
    # The token endpoints answer 40001 "invalid credential" to a wrong AppSecret too.
    if errcode == 40125 or (errcode == 40001 and token_call):
        return detail, (
            f"WECHAT_APP_SECRET is wrong (or was reset): copy it again from {SETTINGS_PAGE}"
        )
    if errcode == 40164:
        ip = re.search(r"invalid ip ([0-9A-Fa-f.:]+)", exc.errmsg)
        address = ip.group(1) if ip else "this server's outgoing IP"
        return detail, f"add {address} to the IP whitelist (IP白名单) in {SETTINGS_PAGE}"
    if errcode in (89503, 89501, 89506, 89507):
        return detail, "an administrator must allow this IP: confirm it in WeChat, or whitelist it"
    if errcode == 48001:
        return detail, (
            "this account type cannot create parametric QR codes: use a verified service "
            "account (认证服务号) or the sandbox test account (测试号)"
        )
    if errcode in (45009, 45011):
        return detail, "a call quota is used up: wait (45011: a minute; 45009: until tomorrow)"
    if errcode == -1:
        return detail, "WeChat is busy: run the check again in a moment"
    return detail, "look the errcode up in WeChat's global return codes"


def _callback_url(app: Flask) -> Finding:
    base = app.config["PUBLIC_BASE_URL"]
    if not base:
        return Finding(
            "callback URL",
            Verdict.WARNING,
            "PUBLIC_BASE_URL is unset, so the callback WeChat calls was not checked",
            "set PUBLIC_BASE_URL=https://your.domain and run the check again",
        )
    url = base + "/wechat/callback"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Finding(
            "callback URL", Verdict.FAILED, f"{url} is not an http(s) URL", "fix PUBLIC_BASE_URL"
        )
    finding = _verification_answer(
        url, app.config["WECHAT_TOKEN"], app.extensions["wechat_signatures"]
    )
    standard = {"http": 80, "https": 443}[parts.scheme]
    if finding.verdict is Verdict.OK and (parts.port or standard) != standard:
        return Finding(
            "callback URL",
            Verdict.WARNING,
            f"{finding.detail}; but WeChat only calls http on port 80 and https on 443",
            f"enter a URL on port {standard} in {SETTINGS_PAGE} (a proxy or tunnel in front "
            "of this port is fine)",
        )
    return finding


def _web_authorization(app: Flask) -> Finding:
    """Where in-WeChat login comes back to, and the domain WeChat must allow for it: WeChat
    tells nobody whether it is set, so this is a reminder with the domain to enter."""
    path = next(
        rule.rule for rule in app.url_map.iter_rules() if rule.endpoint == "wechat_browser.callback"
    )
    base = app.config["PUBLIC_BASE_URL"]
    if not base:
        return Finding(
            "web authorization",
            Verdict.WARNING,
            "PUBLIC_BASE_URL is unset, so in-WeChat login comes back to whatever host the "
            f"visitor used, at {path}",
            "set PUBLIC_BASE_URL=https://your.domain, and that domain as 网页授权域名 in "
            + WEB_AUTHORIZATION_PAGE,
        )
    domain = urlsplit(base).netloc
    return Finding(
        "web authorization",
        Verdict.OK,
        f"in-WeChat login comes back to {base}{path}: WeChat sends it there only if {domain} "
        "is the account's 网页授权域名 (it cannot be checked from here)",
        f"enter {domain} (no https://) as 网页授权域名 in {WEB_AUTHORIZATION_PAGE}; a real "
        "account first has you serve the MP_verify_*.txt file it offers at that domain's root",
    )


def _verification_answer(url: str, token: str, ledger: SignatureLedger) -> Finding:
    """Send WeChat's signed verification GET to ``url`` and judge the answer.

    The query is reserved for a verification first: whoever it reaches (a tunnel, a proxy's
    log, another server), our callback takes it for that GET only, never for a POST.
    """
    echostr = str(secrets.randbits(63))
    query = signed_query(token)
    try:
        ledger.reserve_for_verification(query["signature"])
    except redis.RedisError as exc:
        return Finding(
            "callback URL",
            Verdict.FAILED,
            f"not tried: Redis does not answer ({type(exc).__name__}), and without it the "
            "signed verification query would also be good for a POST to the callback",
            "start Redis, or point REDIS_URL (or REDIS_SENTINELS) at it",
        )
    try:
        response = requests.get(
            url,
            params={**query, "echostr": echostr},
            timeout=WECHAT_REPLY_SECONDS,  # WeChat's own patience
            allow_redirects=False,  # WeChat does not follow redirects
        )
    except requests.exceptions.SSLError:
        return Finding(
            "callback URL",
            Verdict.FAILED,
            f"{url}: the TLS certificate is not trusted",
            "serve a certificate from a public CA for this host name (WeChat checks it)",
        )
    except requests.RequestException as exc:
        return Finding(
            "callback URL",
            Verdict.FAILED,
            f"{url} could not be reached: {type(exc).__name__}",
            "check DNS, the firewall and the proxy or tunnel in front of this app",
        )
    body = response.text
    if response.status_code == 200 and body == echostr:
        return Finding("callback URL", Verdict.OK, f"{url} answers WeChat's verification")
    return Finding("callback URL", Verdict.FAILED, *_why_not_echoed(response, echostr))


def _why_not_echoed(response: requests.Response, echostr: str) -> tuple[str, str]:
    status, body = response.status_code, response.text
    if status in (301, 302, 303, 307, 308):
        return (
            f"redirects (HTTP {status}) to {response.headers.get('Location', '?')}",
            "enter the final URL: WeChat does not follow redirects",
        )
    if status == 403:
        return (
            "refused the signature (HTTP 403): the server there uses another Token",
            "set the same WECHAT_TOKEN here, on that server, and in " + SETTINGS_PAGE,
        )
    if status == 200 and body.strip() == f'"{echostr}"':
        return (
            "echoes echostr JSON-quoted; WeChat wants the bare text",
            "the callback there is not this app's: answer echostr as text/plain",
        )
    if body.lstrip().startswith("<"):
        return (
            f"answered an HTML page (HTTP {status}), not echostr",
            "route /wechat/callback to this app in the proxy, and check that it runs",
        )
    return (
        f"answered HTTP {status} with {body[:60]!r}, not echostr",
        "make /wechat/callback reach this app",
    )
