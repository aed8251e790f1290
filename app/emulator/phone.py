"""The emulated phone: a page that lists live QR codes and "scans" them, and the calls that
post real-format, signed events to our callback over HTTP, exactly as WeChat's servers would."""

import secrets
import time

import requests
from flask import Blueprint, Response, current_app, jsonify, render_template, request, url_for

from ..views.errors import APIError
from ..wechat.errors import MalformedMessageError
from ..wechat.messages import SUBSCRIBE_SCENE_PREFIX, parse_message, to_xml
from ..wechat.signature import sign
from .state import emulator_state

bp = Blueprint("phone", __name__)

#: The cookie that remembers which emulated WeChat user this browser plays.
OPENID_COOKIE = "emulator_openid"

#: WeChat waits this long for our callback's answer, in seconds.
WECHAT_REPLY_TIMEOUT = 5


def _phone_openid() -> str:
    """The emulated user's openid: 28 characters starting with ``o``, like WeChat's."""
    openid = request.cookies.get(OPENID_COOKIE, "")
    if len(openid) == 28 and openid.startswith("o"):
        return openid
    return "o" + secrets.token_urlsafe(20)[:27]


def _with_openid(response: Response, openid: str) -> Response:
    response.set_cookie(OPENID_COOKIE, openid, max_age=365 * 86400, httponly=True, samesite="Lax")
    return response


@bp.get("/phone")
def phone_page() -> Response:
    """The phone: every live QR code, with buttons to scan it."""
    openid = _phone_openid()
    return _with_openid(
        Response(render_template("emulator/phone.html", ticket=None, openid=openid)), openid
    )


@bp.get("/scan")
def scan_page() -> Response:
    """What the QR code encodes in emulator mode: the phone, opened on one ticket."""
    openid = _phone_openid()
    page = render_template("emulator/phone.html", ticket=request.args.get("ticket"), openid=openid)
    return _with_openid(Response(page), openid)


@bp.get("/api/qrcodes")
def live_qrcodes() -> Response:
    """``{"qrcodes": [{"ticket", "scene_str", "expires_in", "url"}], "openid"}``, newest first."""
    now = time.time()
    qrcodes = [
        {
            "ticket": ticket.ticket,
            "scene_str": ticket.scene_str,
            "expires_in": max(int(ticket.expires_at - now), 0),
            "url": url_for(".scan_page", ticket=ticket.ticket, _external=True),
        }
        for ticket in emulator_state().live_tickets()
    ]
    return jsonify(qrcodes=qrcodes, openid=_phone_openid())


@bp.post("/api/scan")
def scan() -> Response:
    """Scan a QR code: body ``{"ticket": str, "follower": "new" | "returning"}``.

    A new follower sends ``subscribe`` with ``EventKey`` ``qrscene_<scene>``; a returning one
    ``SCAN`` with the bare scene. Returns what WeChat would have seen: ``{"event", "openid",
    "status", "reply"}``.
    """
    body = request.get_json(silent=True) or {}
    ticket = emulator_state().get_ticket(str(body.get("ticket", "")))
    if ticket is None:
        raise APIError(404, "unknown_ticket", "这个二维码已失效或不存在。")
    openid = _phone_openid()
    new_follower = body.get("follower") == "new"
    event, event_key = (
        ("subscribe", SUBSCRIBE_SCENE_PREFIX + ticket.scene_str)
        if new_follower
        else ("SCAN", ticket.scene_str)
    )
    emulator_state().follow(openid, ticket.scene_str)
    fields = {"MsgType": "event", "Event": event, "EventKey": event_key, "Ticket": ticket.ticket}
    return _with_openid(jsonify(event=event, openid=openid, **_deliver(openid, fields)), openid)


@bp.post("/api/message")
def message() -> Response:
    """Send a text message as the emulated user: body ``{"content": str}``."""
    body = request.get_json(silent=True) or {}
    content = str(body.get("content", ""))[:600]
    if not content:
        raise APIError(400, "empty_message", "消息不能为空。")
    openid = _phone_openid()
    fields = {"MsgType": "text", "Content": content, "MsgId": secrets.randbits(63)}
    return _with_openid(jsonify(event=None, openid=openid, **_deliver(openid, fields)), openid)


@bp.post("/api/faults")
def inject_fault() -> Response:
    """Make the next calls of an API fail.

    Body: ``{"api": "qrcode/create", "errcode": 45009, "count": 1}``.
    """
    body = request.get_json(silent=True) or {}
    try:
        api, errcode, count = str(body["api"]), int(body["errcode"]), int(body.get("count", 1))
    except (KeyError, TypeError, ValueError):
        raise APIError(400, "bad_request", "需要 api 和 errcode。") from None
    emulator_state().inject_fault(api, errcode, max(1, min(count, 100)))
    return jsonify(ok=True)


def _deliver(openid: str, fields: dict[str, str | int]) -> dict[str, object]:
    """POST a message from ``openid`` to our callback, signed, and read the passive reply.

    Returns:
        ``{"status": int, "reply": str | None}``; status 0 when the callback could not be reached.
    """
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    xml = to_xml(
        {
            "ToUserName": current_app.config["EMULATOR_ACCOUNT_ID"],
            "FromUserName": openid,
            "CreateTime": int(timestamp),
            **fields,
        }
    )
    query = {
        "signature": sign(current_app.config["WECHAT_TOKEN"], timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "openid": openid,
    }
    try:
        answer = requests.post(
            url_for("callback.receive", _external=True),
            params=query,
            data=xml,
            headers={"Content-Type": "text/xml"},
            timeout=WECHAT_REPLY_TIMEOUT,
        )
    except requests.RequestException as exc:
        return {"status": 0, "reply": f"（回调无法访问：{type(exc).__name__}）"}
    return {"status": answer.status_code, "reply": _reply_text(answer)}


def _reply_text(answer: requests.Response) -> str | None:
    if answer.status_code != 200 or answer.content.strip() in (b"", b"success"):
        return None
    try:
        return parse_message(answer.content).fields.get("Content")
    except MalformedMessageError:
        # WeChat shows this to the user when a reply is not valid XML.
        return "该公众号暂时无法提供服务，请稍后再试"
