"""Every setting checked in one place, before anything is built: a refused one stops the
start with one line naming it and the fix (``config.SettingsError``).

``validate`` is called by ``create_app`` once the environment's settings, the overrides and the
emulator's defaults are in: what it lets through, the rest of the app can rely on.
"""

import os
import re
from collections.abc import Mapping
from typing import Any

from config import SettingsError, Unreadable

from .emulator import EMULATOR_TOKEN
from .login.methods import MESSAGE, OPEN_QR, parse_methods
from .login.service import ConfirmPolicy

#: Where an account's AppID, AppSecret, Token and EncodingAESKey are, for fixes.
SETTINGS_PAGE = "公众号后台「设置与开发 → 基本配置」（测试号：「测试号管理」页）"
#: WeChat's rule for a Token: 3 to 32 letters or digits.
TOKEN_PATTERN = r"[A-Za-z0-9]{3,32}"

#: What to do about each setting production requires, when it is missing.
REQUIRED_FIXES = {
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


def validate(config: Mapping[str, Any]) -> None:
    """Refuse to start on a missing or malformed setting.

    Args:
        config: the app's settings, the emulator's defaults included.

    Raises:
        SettingsError: the first one found, naming it and the fix (never a secret's value).
    """
    for value in config.values():
        if isinstance(value, Unreadable):
            raise value.error
    missing = [name for name in config["REQUIRED_SETTINGS"] if not config.get(name)]
    if config["REQUIRE_REDIS"] and not (config["REDIS_URL"] or config["REDIS_SENTINELS"]):
        missing.append("REDIS_URL (or REDIS_SENTINELS)")
    if missing:
        fixes = dict.fromkeys(REQUIRED_FIXES[name] for name in missing)  # in order, once each
        raise SettingsError(
            ", ".join(missing),
            "must be set in production",
            "; ".join(fixes),
        )
    token = config["WECHAT_TOKEN"]
    if token and not re.fullmatch(TOKEN_PATTERN, token):
        raise SettingsError(
            "WECHAT_TOKEN",
            "must be 3 to 32 letters or digits, as WeChat requires",
            f"choose one, and set the same here and as Token (令牌) in {SETTINGS_PAGE}",
        )
    if config["LOGIN_CONFIRM"] not in {policy.value for policy in ConfirmPolicy}:
        raise SettingsError(
            "LOGIN_CONFIRM",
            f"must be off, always or new_device, not {config['LOGIN_CONFIRM']!r}",
            "set one of the three, or unset it (off)",
        )
    if config["WECHAT_TOKEN_ENDPOINT"] not in ("stable", "classic"):
        raise SettingsError(
            "WECHAT_TOKEN_ENDPOINT",
            f"must be stable or classic, not {config['WECHAT_TOKEN_ENDPOINT']!r}",
            "unset it (stable), or set classic for cgi-bin/token",
        )
    try:
        methods = parse_methods(config["LOGIN_METHODS"])
    except ValueError as exc:
        raise SettingsError(
            "LOGIN_METHODS",
            f"must be auto, or some of scan, message, wechat_browser, open_qr (comma-separated, "
            f"each once), not {config['LOGIN_METHODS']!r} ({exc})",
            "list the methods to offer in order, e.g. scan,message; or unset it (auto)",
        ) from None
    _validate_open_app(config, methods)
    account_qr = config["WECHAT_ACCOUNT_QR"]
    # Without an AppID the emulator stands in, with an account QR of its own.
    if methods is not None and MESSAGE in methods and not account_qr and config["WECHAT_APP_ID"]:
        raise SettingsError(
            "WECHAT_ACCOUNT_QR",
            "must be set with LOGIN_METHODS=message: people follow the account before they "
            "send it the code",
            "download the account's QR code from 公众号后台「设置与开发 → 公众号设置」 and set "
            "WECHAT_ACCOUNT_QR to the file's path or to an https:// URL of it",
        )
    if account_qr and not re.match(r"https?://", account_qr) and not os.path.isfile(account_qr):
        raise SettingsError(
            "WECHAT_ACCOUNT_QR",
            "must be an http(s) URL or the path of an image file, and no file is there",
            "set the path of the downloaded QR image (readable by this process), or its URL",
        )
    if config["LOG_FORMAT"] not in ("text", "json"):
        raise SettingsError(
            "LOG_FORMAT",
            f"must be text or json, not {config['LOG_FORMAT']!r}",
            "set LOG_FORMAT=text or json",
        )
    if config["WECHAT_ENCODING_AES_KEY"]:
        if config["WECHAT_ENCRYPT_MODE"] not in ("safe", "compatible"):
            raise SettingsError(
                "WECHAT_ENCRYPT_MODE",
                f"must be safe or compatible, not {config['WECHAT_ENCRYPT_MODE']!r}",
                "set it to safe (the account's 安全模式), or compatible (兼容模式) during a switch",
            )
        for name in ("WECHAT_ENCODING_AES_KEY", "WECHAT_ENCODING_AES_KEY_PREVIOUS"):
            key = config[name]
            if key and not re.fullmatch(r"[A-Za-z0-9]{43}", key):
                # Never the key itself in the message: it is a secret.
                raise SettingsError(
                    name,
                    f"must be 43 letters or digits, not {len(key)} characters",
                    f"copy the whole EncodingAESKey (消息加解密密钥) from {SETTINGS_PAGE}",
                )
    if config["WECHAT_FORWARD_URL"]:
        # The upstream's own Token: with the account's, any query it receives would open our
        # callback too.
        forward_token = config["WECHAT_FORWARD_TOKEN"]
        if not re.fullmatch(TOKEN_PATTERN, forward_token):
            raise SettingsError(
                "WECHAT_FORWARD_TOKEN",
                "must be 3 to 32 letters or digits, and is required with WECHAT_FORWARD_URL",
                "choose a Token for the upstream handler, and configure the same there",
            )
        # Without an AppID the emulator stands in, with its Token unless one is set.
        account_token = config["WECHAT_TOKEN"] or (
            "" if config["WECHAT_APP_ID"] else EMULATOR_TOKEN
        )
        if forward_token == account_token:
            raise SettingsError(
                "WECHAT_FORWARD_TOKEN",
                "must differ from WECHAT_TOKEN",
                "give the upstream handler a Token of its own: with ours, what it receives would "
                "open our callback",
            )


def _validate_open_app(config: Mapping[str, Any], methods: tuple[str, ...] | None) -> None:
    """The website application's settings: both or neither, not the account's AppID, and set
    whenever ``open_qr`` is listed (unless the emulator stands in, with its own)."""
    open_app_id, open_secret = config["WECHAT_OPEN_APP_ID"], config["WECHAT_OPEN_APP_SECRET"]
    where = "开放平台「管理中心 → 网站应用 → 查看」"
    if bool(open_app_id) != bool(open_secret):
        raise SettingsError(
            "WECHAT_OPEN_APP_ID, WECHAT_OPEN_APP_SECRET",
            "must be set together",
            f"copy the website application's AppID and AppSecret from {where}",
        )
    if open_app_id and open_app_id == config["WECHAT_APP_ID"]:
        raise SettingsError(
            "WECHAT_OPEN_APP_ID",
            "is the official account's AppID; it must be the website application's",
            f"copy the website application's AppID from {where}",
        )
    emulated = not config["WECHAT_APP_ID"]
    if methods is not None and OPEN_QR in methods and not open_app_id and not emulated:
        raise SettingsError(
            "WECHAT_OPEN_APP_ID",
            "must be set with LOGIN_METHODS=open_qr",
            f"create a website application (网站应用) and copy its AppID and AppSecret from "
            f"{where}, or remove open_qr from LOGIN_METHODS",
        )
