"""The login page, the site's icon, and the account's follow QR code."""

import re

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from ..extensions import login_service
from ..login.methods import OPEN_QR
from ..login.useragent import in_wechat, on_mobile
from .context import sends_this_browser

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str | Response:
    """The page that shows the QR code, waits, and shows who is signed in.

    Inside WeChat's browser, with in-WeChat login on, a visitor not signed in is sent to it
    (302) instead (``context.sends_this_browser``).
    """
    if sends_this_browser() and not _signed_in():
        return redirect(url_for("wechat_browser.start"))
    return login_page()


def login_page(**context: str) -> str:
    """The QR page (``index.html``) as every sign-in shows it, with ``context`` added (an app's
    ``/oidc/login`` names the app and where to go on to)."""
    user_agent = request.headers.get("User-Agent", "")
    return render_template(
        "index.html",
        emulator="emulator" in current_app.blueprints,
        # On a phone the QR code is shown to be saved or long-pressed, not scanned.
        on_phone=on_mobile(user_agent) or in_wechat(user_agent),
        open_qr=OPEN_QR in login_service().offered(),
        **context,
    )


def _signed_in() -> bool:
    user_id, openid = session.get("user_id"), session.get("openid")
    if user_id:
        return login_service().user_by_id(user_id) is not None
    return bool(openid) and login_service().user(openid) is not None


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Send browsers that ask for the conventional icon (on a page that names none, such as a
    JSON answer opened in a tab) to ``static/favicon.svg``, which every page names."""
    return redirect(url_for("static", filename="favicon.svg"), 301)


def account_qr_url() -> str | None:
    """Where a page finds the account's follow QR code (``WECHAT_ACCOUNT_QR``): its URL, or
    ``/account-qr`` for a file we serve; None when unset."""
    account_qr = current_app.config["WECHAT_ACCOUNT_QR"]
    if not account_qr:
        return None
    return account_qr if re.match(r"https?://", account_qr) else url_for("pages.account_qr")


@bp.get("/account-qr")
def account_qr() -> Response:
    """The account's follow QR code, when ``WECHAT_ACCOUNT_QR`` names a file: 404 otherwise."""
    path = current_app.config["WECHAT_ACCOUNT_QR"]
    if not path or re.match(r"https?://", path):
        abort(404)
    # An hour: the image changes only when the setting does.
    return send_file(path, max_age=3600)
