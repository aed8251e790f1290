"""WeChat QR-code login for websites: the application factory."""

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask_limiter import Limiter
from limits.storage import storage_from_string
from werkzeug.middleware.proxy_fix import ProxyFix

from config import CONFIGS, Config

from . import cli, emulator, oidc, settings
from .extensions import client_ip, init_redis, key_prefix, limiter_storage_uri, sock
from .login.hub import LoginHub
from .login.methods import LoginMethods, parse_methods
from .login.methods.message import MessageCodes
from .login.methods.open_qr import OpenQRLogin, WebsiteOAuth
from .login.methods.wechat_browser import AuthorizationStates, WeChatBrowserLogin
from .login.service import ConfirmPolicy, LoginService
from .login.store import LoginStore
from .login.unionids import UnionidLookups
from .login.users import UserStore
from .logs import configure_logging
from .metrics import time_garbage_collections
from .setup_check import try_qr_creation
from .views import api, callback, errors, open_qr, ops, pages, security, wechat_browser, ws
from .views.cookies import SessionInterface, raise_session_error
from .wechat.callback import CallbackProtocol
from .wechat.client import WeChatClient
from .wechat.crypto import WeChatCrypto
from .wechat.dedupe import RetryLedger
from .wechat.forwarding import Forwarder
from .wechat.replay import SignatureLedger

ROOT = Path(__file__).resolve().parent.parent


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
    settings.validate(app.config)  # before the emulator fills in its AppID
    emulated = not app.config["WECHAT_APP_ID"]
    if emulated:
        emulator.configure(app)
    configure_logging(app.config["LOG_FORMAT"])
    time_garbage_collections()
    if not app.config["SECRET_KEY"]:
        # Development only: production requires it. (Sessions live in Redis, not in the key.)
        app.config["SECRET_KEY"] = os.urandom(32)
        log.warning("SECRET_KEY is unset: using a random one for this process")
    app.config["SITE_NAME"] = _site_name(app)
    methods = parse_methods(app.config["LOGIN_METHODS"])
    crypto = _crypto(app)

    redis_client, raw_redis = init_redis(app)
    prefix = app.config["REDIS_KEY_PREFIX"] = key_prefix(app)
    session = None  # WeChatClient's own, which keeps connections to WeChat alive
    if emulated:
        session = requests.Session()
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
    users = UserStore(redis_client, prefix=prefix, appid=app.config["WECHAT_APP_ID"])
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
            stream=f"{prefix}login:changes",
        ),
        retries=RetryLedger(redis_client, prefix=prefix),
        unionids=UnionidLookups(wechat, users.set_unionid),
        qr_expire_seconds=app.config["LOGIN_QR_EXPIRE_SECONDS"],
        confirm_policy=ConfirmPolicy(app.config["LOGIN_CONFIRM"]),
        end_session=end_session,
        forwarding=bool(app.config["WECHAT_FORWARD_URL"]),
        methods=LoginMethods(
            methods,
            redis_client=redis_client,
            probe=partial(try_qr_creation, wechat),
            prefix=prefix,
        ),
        message_codes=MessageCodes(
            redis_client,
            # Counted in the shared Redis, so a guesser gains nothing from many workers.
            storage_from_string(limiter_storage_uri(app), key_prefix=f"{prefix}limits"),
            prefix=prefix,
        ),
    )
    states = AuthorizationStates(redis_client, prefix=prefix)
    app.extensions["wechat_browser"] = WeChatBrowserLogin(
        service=app.extensions["wechat_login"],
        wechat=wechat,
        states=states,
        open_base=app.config["WECHAT_OPEN_BASE"],
    )
    transport = emulator.EmulatorTransport(app) if emulated else None
    app.extensions["open_qr"] = OpenQRLogin(
        service=app.extensions["wechat_login"],
        oauth=WebsiteOAuth(
            app.config["WECHAT_OPEN_APP_ID"],
            app.config["WECHAT_OPEN_APP_SECRET"],
            api_base=app.config["WECHAT_API_BASE"],
            mount=(
                (lambda s: s.mount(app.config["WECHAT_API_BASE"], transport))
                if transport
                else (lambda s: None)
            ),
            timeout=app.config["WECHAT_HTTP_TIMEOUT"],
        ),
        states=states,
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
        # No ping_interval: the login socket pings from its own wake (app/views/ws.py), so
        # that simple-websocket's reader needs no selector and no timer of its own.
        # We only ever receive tiny frames (if any): refuse anything larger.
        "max_message_size": 1024,
    }
    sock.init_app(app)
    for blueprint in (pages.bp, api.bp, ws.bp, callback.bp, ops.bp, wechat_browser.bp, open_qr.bp):
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
    for endpoint in ("wechat_browser.start", "open_qr.start", "open_qr.link"):
        api.limit_qrcode_creation(app, limiter, rate, endpoint, "登录太频繁了，请稍等片刻再试。")
    errors.init_app(app)
    security.init_app(app)
    cli.init_app(app)
    if emulated:
        app.register_blueprint(emulator.bp)
        log.warning("WECHAT_APP_ID is unset: the built-in WeChat emulator stands in for WeChat")
    return app


def _crypto(app: Flask) -> WeChatCrypto | None:
    """The message crypto when an EncodingAESKey is set (safe or compatible mode), else None."""
    if not app.config["WECHAT_ENCODING_AES_KEY"]:
        return None
    return WeChatCrypto(
        app.config["WECHAT_TOKEN"],
        app.config["WECHAT_ENCODING_AES_KEY"],
        app.config["WECHAT_APP_ID"],
        previous_key=app.config["WECHAT_ENCODING_AES_KEY_PREVIOUS"] or None,
    )


def _site_name(app: Flask) -> str:
    """``SITE_NAME``, else the host of ``PUBLIC_BASE_URL``, else a generic name (development)."""
    return app.config["SITE_NAME"] or urlsplit(app.config["PUBLIC_BASE_URL"]).netloc or "本网站"
