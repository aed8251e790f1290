"""A local emulator of WeChat, for development and tests; never mounted with real credentials.

It answers the API calls we make (``cgi-bin/token``, ``cgi-bin/stable_token``,
``cgi-bin/qrcode/create``, ``cgi-bin/user/info``, ``sns/oauth2/access_token``) with WeChat's
JSON and errcodes, and plays the user's phone: its page lists the live QR codes and, when a
person "scans" one, posts the real-format event XML, signed with our Token, to our callback
over HTTP, as WeChat would. It also serves WeChat's web authorization
(``connect/oauth2/authorize``) and the website application's QR page (``connect/qrconnect``,
with ``sns/userinfo``), under ``EMULATOR_OPEN_BASE``, for the browser to be sent to.
"""

from pathlib import Path

from flask import Blueprint, Flask

from . import api, oauth, phone
from .transport import EmulatorTransport

#: The API base the client uses in emulator mode; requests to it never leave the process.
EMULATOR_API_BASE = "http://wechat-emulator.invalid/_emulator"
#: The web-authorization base in emulator mode: a path on this very site, since it is the
#: visitor's browser, not our server, that goes there.
EMULATOR_OPEN_BASE = "/_emulator/open"

#: Credentials of the emulated account. Not secrets: the emulator exists only on a dev box.
EMULATOR_SETTINGS = {
    "WECHAT_APP_ID": "wx00000000emulator",
    "WECHAT_APP_SECRET": "emulator-app-secret-not-a-secret",
    "WECHAT_API_BASE": EMULATOR_API_BASE,
    "WECHAT_OPEN_BASE": EMULATOR_OPEN_BASE,
    "EMULATOR_ACCOUNT_ID": "gh_0000emulator",
    # The emulated Open Platform's website application (method open_qr).
    "WECHAT_OPEN_APP_ID": "wx0000000website",
    "WECHAT_OPEN_APP_SECRET": "emulator-website-secret-not-a-secret",
}
#: The Token used unless WECHAT_TOKEN is set.
EMULATOR_TOKEN = "emulatortoken"
#: The emulated account's follow QR code (a file, as an account's downloaded one would be),
#: used unless WECHAT_ACCOUNT_QR is set.
EMULATOR_ACCOUNT_QR = str(Path(__file__).resolve().parents[2] / "static/emulator-account-qr.svg")

bp = Blueprint("emulator", __name__, url_prefix="/_emulator")
bp.register_blueprint(api.bp)
bp.register_blueprint(phone.bp)
bp.register_blueprint(oauth.bp)


def configure(app: Flask) -> None:
    """Point the app's WeChat settings at the emulator (called only without WECHAT_APP_ID)."""
    app.config.update(EMULATOR_SETTINGS)
    if not app.config["WECHAT_TOKEN"]:
        app.config["WECHAT_TOKEN"] = EMULATOR_TOKEN
    if not app.config["WECHAT_ACCOUNT_QR"]:
        app.config["WECHAT_ACCOUNT_QR"] = EMULATOR_ACCOUNT_QR


__all__ = ["EMULATOR_API_BASE", "EmulatorTransport", "bp", "configure"]
