"""The JSON API: start a login, redeem its code, who am I, log out."""

import time

from flask import Blueprint, Flask, Response, current_app, jsonify, request, session, url_for
from flask_limiter import Limiter

from ..extensions import client_network, login_service
from ..login.qrimage import qr_data_uri
from ..login.store import RedeemError
from ..login.users import IdentityError, User
from .context import app_authorization, attempt_context
from .cookies import browser_binding, browser_hash, set_browser_cookie
from .errors import APIError
from .pages import account_qr_url
from .security import require_same_origin

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def same_origin_only() -> None:
    """Every POST comes from our own pages (CSRF, and a cross-site reset of the binding cookie).

    Browsers send no ``Origin`` on same-origin GETs, and ``/api/me`` changes nothing.
    """
    if request.method != "GET":
        require_same_origin()


@bp.post("/login/qrcode")
def create_login_qrcode() -> Response:
    """Start a login attempt bound to this browser (or give back its live one).

    Body (optional): ``{"oidc_request": str}``, when the sign-in is for an app's authorization;
    ``{"link": true}`` from a signed-in page, for "绑定公众号登录": the scanner then links their
    WeChat to the signed-in person (after confirming in WeChat) instead of signing in.

    Returns:
        200 ``{"scene": str, "qrcode": str | None, "image": str, "expires_in": int (seconds),
        "ws": str}``, and with the ``message`` method on, ``"message_code"`` (the code as
        shown and typed, ``"ABCDEFG"``: the page groups it for reading without a space) and
        ``"account_qr"`` (the URL of the account's follow QR code). With ``scan`` off,
        ``qrcode`` is None and ``image`` is the account's QR: the one to scan then. The
        binding cookie is set if the browser had none. 502 when WeChat fails and 429 over
        ``LOGIN_RATE_LIMIT``, each with a message for the page; 401 for a link without a
        signed-in session.
    """
    owner, new_secret = browser_binding()
    body = request.get_json(silent=True)
    _, client = app_authorization(body.get("oidc_request") if isinstance(body, dict) else None)
    context = attempt_context(client=client, link_to=_person_to_link_to())
    attempt, qrcode = login_service().start_attempt(owner, context)
    scheme = "wss" if request.is_secure else "ws"
    answer = {
        "scene": attempt.scene,
        "qrcode": qrcode.url if qrcode else None,
        "image": qr_data_uri(qrcode.url) if qrcode else account_qr_url(),
        "expires_in": qrcode.expire_seconds if qrcode else attempt.expires_in(time.time()),
        "ws": url_for("ws.login_socket", scene=attempt.scene, _external=True, _scheme=scheme),
    }
    if attempt.message_code:
        answer.update(message_code=attempt.message_code, account_qr=account_qr_url())
    response = jsonify(answer)
    if new_secret is not None:
        set_browser_cookie(response, new_secret)
    return response


def _person_to_link_to() -> str:
    """The signed-in person a link attempt is for (the body's ``link``), or "" for a sign-in.

    Raises:
        APIError: 401, a link asked for with no signed-in session.
    """
    body = request.get_json(silent=True)
    if not (isinstance(body, dict) and body.get("link") is True):
        return ""
    user_id = session.get("user_id")
    if not user_id:
        raise APIError(401, "not_signed_in", "请先登录，再绑定公众号登录。")
    return user_id


def limit_qrcode_creation(
    app: Flask,
    limiter: Limiter,
    rate: str,
    endpoint: str = "api.create_login_qrcode",
    message: str = "获取二维码太频繁了，请稍等片刻再试。",
) -> None:
    """Limit the starts of login attempts per client IP and per browser, each to ``rate``
    (``LOGIN_RATE_LIMIT``): QR creation, or ``endpoint``'s (another method's start).

    Applied while the app is built, since the limiter belongs to the app.
    """
    view = app.view_functions[endpoint]
    # Per IPv4 address or IPv6 /64: a subscriber's 2**64 addresses cost nothing to spread over.
    view = limiter.limit(rate, key_func=lambda: "ip:" + client_network(), error_message=message)(
        view
    )
    # A browser without a binding cookie yet is counted by its address.
    view = limiter.limit(
        rate,
        key_func=lambda: "browser:" + (browser_hash() or client_network()),
        error_message=message,
    )(view)
    app.view_functions[endpoint] = view


@bp.post("/login/redeem")
def redeem() -> Response:
    """Exchange the one-time code for a session, from the browser that made the attempt.

    Body: ``{"code": str}``.

    Returns:
        200 with the user JSON (see ``User.to_json``) and a new session cookie; 400 for a
        missing, unknown, expired, used, revoked or foreign code.
    """
    body = request.get_json(silent=True)
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not 0 < len(code) <= 128:
        raise APIError(400, "bad_request", "请求缺少登录码。")
    try:
        user = sign_in(code)
    except RedeemError:
        raise APIError(400, "invalid_code", "登录码无效或已过期，请重新扫码。") from None
    return jsonify(user.to_json())


def sign_in(code: str) -> User:
    """Redeem a one-time login code from this browser and start its session (a fresh id):
    what every method's browser does last.

    Args:
        code: the attempt's one-time code.

    Returns:
        Who signed in; the session now holds them.

    Raises:
        RedeemError: the code is bad, used, expired, another browser's, or its login was ended.
    """
    sessions = current_app.session_interface
    session_id = sessions.new_session_id()
    # A browser without a valid binding value is counted as foreign to the code.
    user, scene, openid = login_service().redeem_login(code, browser_hash() or "", session_id)
    sessions.start(
        session,
        session_id,
        # auth_time: when this person proved themselves, for OpenID Connect (max_age, prompt).
        # openid: the identity that proved it (its sign-in record, "0" in WeChat, sign-out).
        {
            "openid": openid,
            "scene": scene,
            "user_id": user.id,
            "auth_time": time.time(),
            "method": login_service().method_of(scene),
        },
    )
    return user


@bp.get("/me")
def me() -> Response:
    """The signed-in person: 200 ``User.to_json()`` (their identities, nickname and avatar URL
    included), or 401."""
    return jsonify(_signed_in_user().to_json())


def _signed_in_user() -> User:
    """The session's person, by id (a session from before ids: by its openid).

    Raises:
        APIError: 401, nobody signed in.
    """
    user_id, openid = session.get("user_id"), session.get("openid")
    if user_id:
        user = login_service().user_by_id(user_id)
    else:
        user = login_service().user(openid) if openid else None
    if user is None:
        raise APIError(401, "not_signed_in", "尚未登录。")
    return user


@bp.post("/me/identities/unlink")
def unlink_identity() -> Response:
    """Detach one of the signed-in person's identities while another remains.

    Body: ``{"openid": str}``.

    Returns:
        200 with the person's JSON; 400 ``cannot_unlink`` for their last identity or one that
        shares their unionid, 404 for an identity not theirs, 401 when nobody is signed in.
    """
    user = _signed_in_user()
    body = request.get_json(silent=True)
    openid = body.get("openid") if isinstance(body, dict) else None
    if not isinstance(openid, str) or not openid or user.id is None:
        raise APIError(400, "bad_request", "请求缺少要解绑的身份。")
    try:
        user = login_service().unlink_identity(user.id, openid)
    except IdentityError as exc:
        raise APIError(400, "cannot_unlink", exc.reason) from None
    except LookupError:
        raise APIError(404, "not_found", "当前账号没有这个身份。") from None
    return jsonify(user.to_json())


@bp.post("/logout")
def logout() -> Response:
    """End the session for good, in every worker: 200 ``{"ok": true}``."""
    openid = session.get("openid")
    if openid:
        login_service().sign_out(openid, session.get("scene"), session.sid)
    session.clear()
    return jsonify(ok=True)
