"""The emulated WeChat API: the endpoints we call, with WeChat's JSON and errcodes.

Like WeChat, every answer is HTTP 200; failures are ``{"errcode": N, "errmsg": str}``.
"""

import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..wechat.client import MAX_USERS_INFO
from .phone import qr_url
from .state import TOKEN_SECONDS, emulator_state

bp = Blueprint("api", __name__, url_prefix="/cgi-bin")

#: WeChat's errmsg for each errcode the emulator produces.
ERRMSGS = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40013: "invalid appid",
    40125: "invalid appsecret",
    40029: "invalid code",
    40163: "code been used",
    41001: "access_token missing",
    40097: "invalid args",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit",
    48001: "api unauthorized",
}

#: Longest life of a temporary QR code, in seconds (30 days); and WeChat's default.
MAX_EXPIRE_SECONDS = 2592000
DEFAULT_EXPIRE_SECONDS = 60


def _error(errcode: int) -> Response:
    errmsg = ERRMSGS.get(errcode, "error")
    if errcode == 40164:  # WeChat names the caller's address: the one to whitelist
        ip = request.remote_addr
        errmsg = f"invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist rid: {secrets.token_hex(12)}"
    return jsonify(errcode=errcode, errmsg=errmsg)


def _credentials_error(appid: str | None, secret: str | None) -> int | None:
    if appid != current_app.config["WECHAT_APP_ID"]:
        return 40013
    if not hmac.compare_digest(secret or "", current_app.config["WECHAT_APP_SECRET"]):
        return 40125
    return None


def _refusal(api: str, needs_token: bool) -> int | None:
    """The errcode this call must fail with (injected, or a bad token), if any."""
    fault = emulator_state().take_fault(api)
    if fault is not None:
        return fault
    if needs_token:
        token = request.args.get("access_token", "")
        if not token:
            return 41001
        if not emulator_state().token_valid(token):
            return 40001
    return None


@bp.get("/token")
def token() -> Response:
    """``GET cgi-bin/token?grant_type=client_credential&appid=&secret=``."""
    return _issue_token("token", request.args)


@bp.post("/stable_token")
def stable_token() -> Response:
    """``POST cgi-bin/stable_token`` with JSON ``{grant_type, appid, secret, force_refresh}``."""
    body = request.get_json(silent=True)
    return _issue_token("stable_token", body if isinstance(body, dict) else {})


def _issue_token(api: str, params: Mapping[str, Any]) -> Response:
    errcode = (
        _refusal(api, needs_token=False)
        or _credentials_error(params.get("appid"), params.get("secret"))
        or (None if params.get("grant_type") == "client_credential" else 40097)
    )
    if errcode:
        return _error(errcode)
    return jsonify(access_token=emulator_state().issue_token(), expires_in=TOKEN_SECONDS)


@bp.post("/qrcode/create")
def qrcode_create() -> Response:
    """``POST cgi-bin/qrcode/create?access_token=`` for temporary ``QR_SCENE``/``QR_STR_SCENE``.

    The ``url`` returned is the emulator's page for the ticket (``phone.qr_url``), so the QR
    shown in the page opens the emulated phone when scanned.
    """
    errcode = _refusal("qrcode/create", needs_token=True)
    if errcode:
        return _error(errcode)
    body: dict[str, Any] = request.get_json(silent=True) or {}
    action = body.get("action_name")
    scene = (body.get("action_info") or {}).get("scene")
    if action in ("QR_SCENE", "QR_STR_SCENE") and not isinstance(scene, dict):
        # WeChat silently uses scene 0 when the "scene" wrapper is missing: so do we.
        scene_str = "0"
    elif action == "QR_STR_SCENE":
        scene_str = str(scene.get("scene_str", ""))
        if not 1 <= len(scene_str) <= 64:
            return _error(40097)
    elif action == "QR_SCENE":
        scene_str = str(scene.get("scene_id", 0))
    else:
        return _error(40097)
    expire_seconds = body.get("expire_seconds", DEFAULT_EXPIRE_SECONDS)
    if not isinstance(expire_seconds, int) or not 0 < expire_seconds <= MAX_EXPIRE_SECONDS:
        return _error(40097)
    ticket = emulator_state().create_ticket(scene_str, expire_seconds)
    return jsonify(
        ticket=ticket.ticket,
        expire_seconds=expire_seconds,
        url=qr_url(ticket),
    )


@bp.get("/user/info")
def user_info() -> Response:
    """``GET cgi-bin/user/info?access_token=&openid=&lang=``.

    Followers come back as WeChat sends them since 2021-12-27: empty nickname and avatar, and a
    ``unionid`` (the emulated account is bound to an Open Platform account).
    """
    errcode = _refusal("user/info", needs_token=True)
    if errcode:
        return _error(errcode)
    openid = request.args.get("openid", "")
    if not openid:
        return _error(40003)
    return jsonify(_user_info(openid))


@bp.post("/user/info/batchget")
def users_info() -> Response:
    """``POST cgi-bin/user/info/batchget?access_token=`` with ``{"user_list": [{"openid",
    "lang"}]}``: up to 100 users, each as ``user/info`` answers."""
    errcode = _refusal("user/info/batchget", needs_token=True)
    if errcode:
        return _error(errcode)
    users = (request.get_json(silent=True) or {}).get("user_list")
    if not isinstance(users, list) or not 0 < len(users) <= MAX_USERS_INFO:
        return _error(40003)
    openids = [user.get("openid", "") if isinstance(user, dict) else "" for user in users]
    if not all(openids):
        return _error(40003)
    return jsonify(user_info_list=[_user_info(openid) for openid in openids])


def _user_info(openid: str) -> dict[str, Any]:
    follower = emulator_state().follower(openid)
    if follower is None:
        return {"subscribe": 0, "openid": openid}
    return {
        "subscribe": 1,
        "openid": openid,
        "nickname": "",
        "headimgurl": "",
        "language": "zh_CN",
        "subscribe_time": int(follower.get("subscribe_time", time.time())),
        "unionid": "u" + openid[1:],
        "remark": "",
        "groupid": 0,
        "tagid_list": [],
        "subscribe_scene": "ADD_SCENE_QR_CODE",
        "qr_scene": 0,
        "qr_scene_str": follower.get("qr_scene_str", ""),
    }
