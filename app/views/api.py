"""The JSON API: start a login, redeem its code, who am I, log out."""

from flask import Blueprint, Response, jsonify, request, session, url_for

from ..extensions import login_service
from ..login.qrimage import qr_data_uri
from ..login.store import RedeemError
from .cookies import browser_binding, browser_hash, set_browser_cookie
from .errors import APIError

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.post("/login/qrcode")
def create_login_qrcode() -> Response:
    """Start a login attempt bound to this browser.

    Returns:
        200 ``{"scene": str, "qrcode": str, "image": str, "expires_in": int (seconds),
        "ws": str}``; the binding cookie is set if the browser had none. 502 when WeChat fails,
        with a message for the page.
    """
    owner, new_secret = browser_binding()
    attempt, qrcode = login_service().start_attempt(owner)
    scheme = "wss" if request.is_secure else "ws"
    response = jsonify(
        scene=attempt.scene,
        qrcode=qrcode.url,
        image=qr_data_uri(qrcode.url),
        expires_in=qrcode.expire_seconds,
        ws=url_for("ws.login_socket", scene=attempt.scene, _external=True, _scheme=scheme),
    )
    response.headers["Cache-Control"] = "no-store"
    if new_secret is not None:
        set_browser_cookie(response, new_secret)
    return response


@bp.post("/login/redeem")
def redeem() -> Response:
    """Exchange the one-time code for a session, from the browser that made the attempt.

    Body: ``{"code": str}``.

    Returns:
        200 with the user JSON (see ``User.to_json``) and a fresh session cookie; 400 for a
        missing, unknown, expired, used or foreign code.
    """
    body = request.get_json(silent=True)
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not 0 < len(code) <= 128:
        raise APIError(400, "bad_request", "请求缺少登录码。")
    owner = browser_hash()
    try:
        if owner is None:
            raise RedeemError("no binding cookie")
        user = login_service().redeem(code, owner)
    except RedeemError:
        raise APIError(400, "invalid_code", "登录码无效或已过期，请重新扫码。") from None
    # A fresh session: nothing from before the login carries over.
    session.clear()
    session["openid"] = user.openid
    return jsonify(user.to_json())


@bp.get("/me")
def me() -> Response:
    """The signed-in user: 200 ``User.to_json()``, or 401."""
    openid = session.get("openid")
    user = login_service().users.get(openid) if openid else None
    if user is None:
        raise APIError(401, "not_signed_in", "尚未登录。")
    return jsonify(user.to_json())


@bp.post("/logout")
def logout() -> Response:
    """End the session: 200 ``{"ok": true}``."""
    session.clear()
    return jsonify(ok=True)
