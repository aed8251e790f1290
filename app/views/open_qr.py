"""Website application login in the browser: off to WeChat's QR page, and back signed in (or
with a second identity linked to the signed-in person).

``GET /login/open`` starts a sign-in; ``POST /login/open/link`` (from the signed-in view, same
origin) starts a link; WeChat sends the browser back to ``callback``.
"""

from flask import Blueprint, current_app, jsonify, request, session
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ..extensions import login_service
from ..login.methods import OPEN_QR
from ..login.methods.open_qr import LinkRefused, OpenQRLogin
from ..login.methods.wechat_browser import Refusal, WebAuthorizationRefused
from ..login.store import RedeemError
from .api import sign_in
from .context import attempt_context, callback_uri
from .cookies import browser_binding, browser_hash, set_browser_cookie
from .errors import APIError
from .security import require_same_origin
from .wechat_browser import REFUSAL_MESSAGES, refusal_page, send_to_wechat, signed_in_landing

bp = Blueprint("open_qr", __name__, url_prefix="/login/open")

#: Told when a website login comes back with no code: on WeChat's page the visitor cancelled.
CANCELLED = "你在微信里取消了登录，所以没有登录。"


def open_qr_on() -> bool:
    """Tell whether this site offers website-application login (``LOGIN_METHODS``)."""
    return OPEN_QR in login_service().offered()


def _flow() -> OpenQRLogin:
    return current_app.extensions["open_qr"]


@bp.before_request
def only_when_on() -> None:
    """Every route is 404 on a site that does not offer the method."""
    if not open_qr_on():
        raise NotFound()


@bp.get("")
def start() -> Response:
    """Open an attempt for this browser and send it to WeChat's QR page (302).

    ``?oidc_request=`` (from an app's ``/oidc/login``): the sign-in is for that app's
    authorization, which the browser goes on to once back. Limited like QR creation
    (``LOGIN_RATE_LIMIT``); the binding cookie is set if the browser had none.
    """
    return send_to_wechat(_flow(), "open_qr.callback")


@bp.post("/link")
def link() -> Response:
    """From the signed-in view ("绑定网站应用登录"): where to send this browser to prove a
    website identity that is then attached to the signed-in person.

    Same-origin only, as every POST of ``/api``; answered in JSON for the page's script, which
    goes there itself (a form's redirect to WeChat would need ``form-action`` opened to it).

    Returns:
        200 ``{"redirect": str}``; 401 when nobody is signed in.
    """
    require_same_origin()
    user_id = session.get("user_id")
    if not user_id or login_service().user_by_id(user_id) is None:
        raise APIError(401, "not_signed_in", "请先登录，再绑定其他登录方式。")
    owner, new_secret = browser_binding()
    start = _flow().start(owner, attempt_context(), callback_uri("open_qr.callback"), user_id)
    response = jsonify(redirect=start)
    if new_secret is not None:
        set_browser_cookie(response, new_secret)
    return response


@bp.get("/callback")
def callback() -> Response | tuple[str, int]:
    """WeChat's way back, ``?code=CODE&state=STATE`` (no ``code`` when the visitor cancelled).

    Returns:
        302, signed in, to ``signed_in_landing`` (or linked, to ``/``); or 400 with a page
        saying why not, and the ways back.
    """
    try:
        finished = _flow().finish(
            request.args.get("code", ""), request.args.get("state", ""), browser_hash() or ""
        )
    except WebAuthorizationRefused as refused:
        cancelled = refused.reason is Refusal.DENIED
        message = CANCELLED if cancelled else REFUSAL_MESSAGES[refused.reason]
        return refusal_page(message, refused.oidc_request)
    except LinkRefused as refused:
        return refusal_page(refused.reason)
    try:
        if finished.code:
            sign_in(finished.code)
    except RedeemError:
        return refusal_page(REFUSAL_MESSAGES[Refusal.ATTEMPT_GONE], finished.oidc_request)
    return signed_in_landing(finished)
