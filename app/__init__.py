"""WeChat QR-code login for websites: the application factory."""

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix

from config import CONFIGS, Config, SettingsError, Unreadable

from . import cli, emulator, oidc
from .extensions import client_ip, init_redis, key_prefix, limiter_storage_uri, sock
from .login.hub import LoginHub
from .login.methods.wechat_browser import AuthorizationStates, WeChatBrowserLogin
from .login.service import ConfirmPolicy, LoginService
from .login.store import LoginStore
from .login.users import UserStore
from .logs import configure_logging
from .setup_check import SETTINGS_PAGE
from .views import api, callback, errors, ops, pages, security, wechat_browser, ws
from .views.cookies import SessionInterface, raise_session_error
from .wechat.callback import CallbackProtocol
from .wechat.client import WeChatClient
from .wechat.crypto import WeChatCrypto
from .wechat.forwarding import Forwarder
from .wechat.replay import SignatureLedger

ROOT = Path(__file__).resolve().parent.parent

#: What WeChat accepts as a Token: 3 to 32 letters or digits.
TOKEN_PATTERN = r"[A-Za-z0-9]{3,32}"

log = logging.getLogger(__name__)


def create_app(
    config_class: type[Config] | None = None, overrides: dict[str, Any] | None = None
) -> Flask:
    """Build the application.

    Args:
        config_class: the settings; default chosen by ``APP_ENV`` (``development``).
        overrides: settings that win over the class (tests use this).

    Returns:
        The Flask app. With no ``WECHAT_APP_ID`` the WeChat emulator is mounted and answers the
        API calls; otherwise it is never mounted.

    Raises:
        SettingsError: a required setting is missing or one is malformed (its text names the
            setting and the fix, on one line).
    """
    if config_class is None:
        config_class = CONFIGS[os.environ.get("APP_ENV", "development")]
    app = Flask(__name__, template_folder=ROOT / "templates", static_folder=ROOT / "static")
    app.config.from_object(config_class)
    app.config.update(overrides or {})
    configure_logging(app.config["LOG_FORMAT"])

    _check_settings(app)
    app.config["SITE_NAME"] = _site_name(app)
    emulated = not app.config["WECHAT_APP_ID"]
    if emulated:
        emulator.configure(app)  # the emulated account's AppID and Token, which crypto uses
    _check_forward_token(app)  # after the emulator's default Token, which it must not equal
    crypto = _crypto(app)

    redis_client, raw_redis = init_redis(app)
    prefix = app.config["REDIS_KEY_PREFIX"] = key_prefix(app)
    session = requests.Session()
    if emulated:
        session.mount(app.config["WECHAT_API_BASE"], emulator.EmulatorTransport(app))
    wechat = WeChatClient(
        app.config["WECHAT_APP_ID"],
        app.config["WECHAT_APP_SECRET"],
        redis_client=redis_client,
        api_base=app.config["WECHAT_API_BASE"],
        session=session,
        timeout=app.config["WECHAT_HTTP_TIMEOUT"],
        token_endpoint=app.config["WECHAT_TOKEN_ENDPOINT"],
    )
    app.extensions["wechat_crypto"] = crypto
    app.extensions["wechat_signatures"] = SignatureLedger(
        redis_client, app.config["WECHAT_CALLBACK_MAX_AGE_SECONDS"], prefix=prefix
    )
    app.extensions["wechat_callback"] = CallbackProtocol(
        token=app.config["WECHAT_TOKEN"],
        crypto=crypto,
        safe_only=app.config["WECHAT_ENCRYPT_MODE"] == "safe",
        ledger=app.extensions["wechat_signatures"],
    )
    app.session_interface = SessionInterface(
        app,
        client=raw_redis,
        key_prefix=f"{prefix}session:",
        permanent=True,
        sid_length=32,
    )
    app.before_request(raise_session_error)
    store = LoginStore(
        redis_client,
        code_ttl=app.config["LOGIN_CODE_TTL_SECONDS"],
        recent_ttl=int(app.permanent_session_lifetime.total_seconds()),
        prefix=prefix,
    )
    users = UserStore(redis_client, prefix=prefix)
    provider = oidc.init_app(app, users)

    def end_session(session_id: str) -> None:
        # For good, and in every app the session signed in to (back-channel logout).
        app.session_interface.end(session_id)
        provider.session_ended(session_id)

    app.extensions["wechat_login"] = LoginService(
        wechat=wechat,
        store=store,
        users=users,
        hub=LoginHub(
            redis_client,
            statuses=store.statuses,
            sweep_seconds=app.config["LOGIN_RECHECK_SECONDS"],
            # Pub/sub ignores the database number: the channel is named after the deployment.
            channel=f"{prefix}login:attempts",
        ),
        qr_expire_seconds=app.config["LOGIN_QR_EXPIRE_SECONDS"],
        confirm_policy=ConfirmPolicy(app.config["LOGIN_CONFIRM"]),
        end_session=end_session,
        forwarding=bool(app.config["WECHAT_FORWARD_URL"]),
    )
    app.extensions["wechat_browser"] = WeChatBrowserLogin(
        service=app.extensions["wechat_login"],
        wechat=wechat,
        states=AuthorizationStates(redis_client, prefix=prefix),
        open_base=app.config["WECHAT_OPEN_BASE"],
    )
    app.extensions["wechat_forwarder"] = (
        Forwarder(
            app.config["WECHAT_FORWARD_URL"],
            app.config["WECHAT_FORWARD_TOKEN"],
            app.config["WECHAT_TOKEN"],
            timeout=app.config["WECHAT_FORWARD_TIMEOUT_SECONDS"],
        )
        if app.config["WECHAT_FORWARD_URL"]
        else None
    )

    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": app.config["LOGIN_WS_PING_SECONDS"],
        # We only ever receive tiny frames (if any): refuse anything larger.
        "max_message_size": 1024,
    }
    sock.init_app(app)
    for blueprint in (pages.bp, api.bp, ws.bp, callback.bp, ops.bp, wechat_browser.bp):
        app.register_blueprint(blueprint)
    rate = app.config["LOGIN_RATE_LIMIT"]
    limiter = Limiter(
        client_ip,
        app=app,
        storage_uri=limiter_storage_uri(app),
        key_prefix=f"{prefix}ratelimit",
        headers_enabled=True,
        enabled=rate != "off",
    )
    app.extensions["limiter"] = limiter
    api.limit_qrcode_creation(app, limiter, rate)
    api.limit_qrcode_creation(
        app, limiter, rate, "wechat_browser.start", "登录太频繁了，请稍等片刻再试。"
    )
    errors.init_app(app)
    security.init_app(app)
    cli.init_app(app)
    if emulated:
        app.register_blueprint(emulator.bp)
        log.warning("WECHAT_APP_ID is unset: the built-in WeChat emulator stands in for WeChat")
    return app


#: What to do about each setting production requires, when it is missing.
_REQUIRED_FIXES = {
    "SECRET_KEY": "set SECRET_KEY to a long random string, the same on every process "
    "(python3 -c 'import secrets; print(secrets.token_hex(32))')",
    "WECHAT_APP_ID": f"copy the AppID, AppSecret and Token from {SETTINGS_PAGE}",
    "WECHAT_APP_SECRET": f"copy the AppID, AppSecret and Token from {SETTINGS_PAGE}",
    "WECHAT_TOKEN": f"copy the AppID, AppSecret and Token from {SETTINGS_PAGE}",
    "REDIS_URL (or REDIS_SENTINELS)": "set REDIS_URL=redis://host:6379/0, or REDIS_SENTINELS",
    "PUBLIC_BASE_URL": "set PUBLIC_BASE_URL to the site's public address "
    "(https://login.example.com): the scanner is told its host",
    "OIDC_SIGNING_KEY": "make a key with `openssl genpkey -algorithm RSA -pkeyopt "
    "rsa_keygen_bits:2048 -out /etc/wechat-login/oidc.pem` and set OIDC_SIGNING_KEY to its path",
}


def _crypto(app: Flask) -> WeChatCrypto | None:
    """The message crypto when an EncodingAESKey is set (safe or compatible mode), else None.

    Raises:
        SettingsError: ``WECHAT_ENCRYPT_MODE`` or a key is malformed.
    """
    if not app.config["WECHAT_ENCODING_AES_KEY"]:
        return None
    if app.config["WECHAT_ENCRYPT_MODE"] not in ("safe", "compatible"):
        raise SettingsError(
            "WECHAT_ENCRYPT_MODE",
            f"must be safe or compatible, not {app.config['WECHAT_ENCRYPT_MODE']!r}",
            "set it to safe (the account's 安全模式), or compatible (兼容模式) during a switch",
        )
    for name in ("WECHAT_ENCODING_AES_KEY", "WECHAT_ENCODING_AES_KEY_PREVIOUS"):
        key = app.config[name]
        if key and not re.fullmatch(r"[A-Za-z0-9]{43}", key):
            # Never the key itself in the message: it is a secret.
            raise SettingsError(
                name,
                f"must be 43 letters or digits, not {len(key)} characters",
                f"copy the whole EncodingAESKey (消息加解密密钥) from {SETTINGS_PAGE}",
            )
    return WeChatCrypto(
        app.config["WECHAT_TOKEN"],
        app.config["WECHAT_ENCODING_AES_KEY"],
        app.config["WECHAT_APP_ID"],
        previous_key=app.config["WECHAT_ENCODING_AES_KEY_PREVIOUS"] or None,
    )


def _site_name(app: Flask) -> str:
    """``SITE_NAME``, else the host of ``PUBLIC_BASE_URL``, else a generic name (development)."""
    return app.config["SITE_NAME"] or urlsplit(app.config["PUBLIC_BASE_URL"]).netloc or "本网站"


def _check_forward_token(app: Flask) -> None:
    """With ``WECHAT_FORWARD_URL``, refuse a ``WECHAT_FORWARD_TOKEN`` that is missing,
    malformed, or the account's own: with the account's, any query the upstream receives would
    open our callback too."""
    if not app.config["WECHAT_FORWARD_URL"]:
        return
    forward_token = app.config["WECHAT_FORWARD_TOKEN"]
    if not re.fullmatch(TOKEN_PATTERN, forward_token):
        raise SettingsError(
            "WECHAT_FORWARD_TOKEN",
            "must be 3 to 32 letters or digits, and is required with WECHAT_FORWARD_URL",
            "choose a Token for the upstream handler, and configure the same there",
        )
    if forward_token == app.config["WECHAT_TOKEN"]:
        raise SettingsError(
            "WECHAT_FORWARD_TOKEN",
            "must differ from WECHAT_TOKEN",
            "give the upstream handler a Token of its own: with ours, what it receives would "
            "open our callback",
        )


def _check_settings(app: Flask) -> None:
    """Refuse to start on a missing or malformed setting.

    Raises:
        SettingsError: the first one found, naming it and the fix.
    """
    for value in app.config.values():
        if isinstance(value, Unreadable):
            raise value.error
    missing = [name for name in app.config["REQUIRED_SETTINGS"] if not app.config.get(name)]
    if app.config["REQUIRE_REDIS"] and not (
        app.config["REDIS_URL"] or app.config["REDIS_SENTINELS"]
    ):
        missing.append("REDIS_URL (or REDIS_SENTINELS)")
    if missing:
        fixes = dict.fromkeys(_REQUIRED_FIXES[name] for name in missing)  # in order, once each
        raise SettingsError(
            ", ".join(missing),
            "must be set in production",
            "; ".join(fixes),
        )
    token = app.config["WECHAT_TOKEN"]
    if token and not re.fullmatch(TOKEN_PATTERN, token):
        raise SettingsError(
            "WECHAT_TOKEN",
            "must be 3 to 32 letters or digits, as WeChat requires",
            f"choose one, and set the same here and as Token (令牌) in {SETTINGS_PAGE}",
        )
    if app.config["LOGIN_CONFIRM"] not in {policy.value for policy in ConfirmPolicy}:
        raise SettingsError(
            "LOGIN_CONFIRM",
            f"must be off, always or new_device, not {app.config['LOGIN_CONFIRM']!r}",
            "set one of the three, or unset it (off)",
        )
    if app.config["WECHAT_TOKEN_ENDPOINT"] not in ("stable", "classic"):
        raise SettingsError(
            "WECHAT_TOKEN_ENDPOINT",
            f"must be stable or classic, not {app.config['WECHAT_TOKEN_ENDPOINT']!r}",
            "unset it (stable), or set classic for cgi-bin/token",
        )
    if not app.config["SECRET_KEY"]:
        # Development only: production requires it. (Sessions live in Redis, not in the key.)
        app.config["SECRET_KEY"] = os.urandom(32)
        log.warning("SECRET_KEY is unset: using a random one for this process")
