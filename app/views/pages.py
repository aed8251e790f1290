"""The login page, and the site's icon."""

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from ..extensions import login_service
from ..login.useragent import in_wechat, on_mobile
from .wechat_browser import wechat_browser_on

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str | Response:
    """The page that shows the QR code, waits, and shows who is signed in.

    Inside WeChat's browser, with in-WeChat login on, a visitor not signed in is sent to it
    (302) instead: nobody can scan their own screen. ``?qr=1`` shows the QR code anyway (in
    WeChat, a long press on it is recognised).
    """
    user_agent = request.headers.get("User-Agent", "")
    if (
        in_wechat(user_agent)
        and not request.args.get("qr")
        and wechat_browser_on()
        and not _signed_in()
    ):
        return redirect(url_for("wechat_browser.start"))
    return render_template(
        "index.html",
        emulator="emulator" in current_app.blueprints,
        # On a phone the QR code is shown to be saved or long-pressed, not scanned.
        on_phone=on_mobile(user_agent) or in_wechat(user_agent),
    )


def _signed_in() -> bool:
    openid = session.get("openid")
    return bool(openid) and login_service().user(openid) is not None


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Send browsers that ask for the conventional icon (on a page that names none, such as a
    JSON answer opened in a tab) to ``static/favicon.svg``, which every page names."""
    return redirect(url_for("static", filename="favicon.svg"), 301)
