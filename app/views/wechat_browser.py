"""In-WeChat login in the browser: off to WeChat's web authorization, and back signed in.

``/`` (and an app's ``/oidc/login``) sends a visitor inside WeChat to ``start``; WeChat sends
them back to ``callback``.
"""

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ..login.methods.open_qr import OpenQRLogin
from ..login.methods.wechat_browser import (
    Finished,
    Refusal,
    WebAuthorizationRefused,
    WeChatBrowserLogin,
)
from ..login.store import RedeemError
from .api import sign_in
from .context import app_authorization, attempt_context, callback_uri, wechat_browser_on
from .cookies import browser_binding, browser_hash, set_browser_cookie

bp = Blueprint("wechat_browser", __name__, url_prefix="/login/wechat")

#: What the visitor reads when a web authorization signs nobody in.
REFUSAL_MESSAGES = {
    Refusal.BAD_STATE: "这次登录请求已失效，或不是在这个浏览器里发起的。请重新登录。",
    Refusal.DENIED: "你没有同意授权，所以没有登录。",
    Refusal.INVALID_CODE: "微信授权码无效或已过期（errcode 40029）。请重新登录。",
    Refusal.CODE_USED: "微信授权码已被使用过（errcode 40163）。请重新登录。",
    Refusal.SNAPSHOT: (
        "朋友圈里打开的是页面快照，无法登录。请点击页面底部的「使用完整服务」后重新登录。"
    ),
    Refusal.ATTEMPT_GONE: "这次登录已过期。请重新登录。",
    Refusal.BAD_SECRET: (
        "网站的微信登录配置有误（errcode 40125），暂时无法登录。请改用其他方式登录。"
    ),
}


def _flow() -> WeChatBrowserLogin:
    return current_app.extensions["wechat_browser"]


@bp.before_request
def only_when_on() -> None:
    """Both routes are 404 on a site that does not offer the method."""
    if not wechat_browser_on():
        raise NotFound()


@bp.get("")
def start() -> Response:
    """Open an attempt for this browser and send it to WeChat's web authorization (302).

    ``?oidc_request=`` (from an app's ``/oidc/login``): the sign-in is for that app's
    authorization, which the browser goes on to once back. Limited like QR creation
    (``LOGIN_RATE_LIMIT``); the binding cookie is set if the browser had none.
    """
    return send_to_wechat(_flow(), "wechat_browser.callback")


def send_to_wechat(flow: WeChatBrowserLogin | OpenQRLogin, callback: str) -> Response:
    """Open an attempt for this browser with ``flow`` and send the browser to WeChat's page
    (302), WeChat to send it back to the endpoint ``callback``; for the app's authorization
    the request's ``?oidc_request=`` names, if the OpenID provider holds it. The binding
    cookie is set if the browser had none."""
    owner, new_secret = browser_binding()
    oidc_request, client = app_authorization(request.args.get("oidc_request"))
    start = flow.start(
        owner, attempt_context(client=client), callback_uri(callback), oidc_request=oidc_request
    )
    response = redirect(start)
    if new_secret is not None:
        set_browser_cookie(response, new_secret)
    return response


@bp.get("/callback")
def callback() -> Response | tuple[str, int]:
    """WeChat's way back, ``?code=CODE&state=STATE`` (no ``code`` when the visitor refused).

    Returns:
        302, signed in, to ``signed_in_landing``; or 400 with a page saying why not, and the
        ways back.
    """
    try:
        finished = _flow().finish(
            request.args.get("code", ""), request.args.get("state", ""), browser_hash() or ""
        )
    except WebAuthorizationRefused as refused:
        return refusal_page(REFUSAL_MESSAGES[refused.reason], refused.oidc_request)
    try:
        sign_in(finished.code)
    except RedeemError:  # the scanner's "0" in WeChat ended it in between
        return refusal_page(REFUSAL_MESSAGES[Refusal.ATTEMPT_GONE], finished.oidc_request)
    return signed_in_landing(finished)


def signed_in_landing(finished: Finished) -> Response:
    """Where a browser back from WeChat's pages goes once signed in (302): on to the app's
    authorization it signed in for, while the OpenID provider still holds it; else ``/``."""
    url = current_app.extensions["oidc"].continue_url(finished.oidc_request)
    return redirect(url or url_for("pages.index"))


def refusal_page(message: str, oidc_request: str = "") -> tuple[str, int]:
    """The page a browser back from WeChat lands on when nobody was signed in: ``message``, and
    the ways back (400); every method that goes through WeChat's pages ends here.

    The ways back (start again; the QR code instead) lead to the sign-in of the app whose
    authorization ``oidc_request`` names, while the OpenID provider holds it; else to ``/``.
    """
    held = current_app.extensions["oidc"].continue_url(oidc_request) is not None
    endpoint, args = ("oidc.login", {"request": oidc_request}) if held else ("pages.index", {})
    return render_template(
        "wechat_browser_error.html",
        message=message,
        again=url_for(endpoint, **args),
        with_qrcode=url_for(endpoint, **args, qr=1),
    ), 400
