"""The emulated phone: a page that lists live QR codes and "scans" them, and the calls that
post real-format, signed events to our callback over HTTP, exactly as WeChat's servers would."""

import time

import requests
from flask import Blueprint, Response, current_app, jsonify, render_template, request, url_for

from ..views.errors import APIError
from ..wechat.crypto import WeChatCrypto
from ..wechat.delivery import MODES, new_openid, push, reply_content, scan_event, text_message
from ..wechat.errors import WeChatError
from .state import Ticket, emulator_state

bp = Blueprint("phone", __name__)

#: The cookie that remembers which emulated WeChat user this browser plays.
OPENID_COOKIE = "emulator_openid"


def _phone_openid() -> str:
    """The emulated user's openid: 28 characters starting with ``o``, like WeChat's."""
    openid = request.cookies.get(OPENID_COOKIE, "")
    if len(openid) == 28 and openid.startswith("o"):
        return openid
    return new_openid()


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


@bp.get("/q/<code>")
def scanned_page(code: str) -> Response:
    """What the QR code encodes in emulator mode (``qr_url``): the phone, opened on its ticket.

    Raises:
        APIError: 404, no live ticket has this code (expired, or never issued).
    """
    ticket = emulator_state().ticket_by_code(code)
    if ticket is None:
        raise APIError(404, "unknown_qrcode", "这个二维码已失效或不存在。")
    openid = _phone_openid()
    page = render_template("emulator/phone.html", ticket=ticket.ticket, openid=openid)
    return _with_openid(Response(page), openid)


def qr_url(ticket: Ticket) -> str:
    """The ``url`` of ``ticket``'s QR code, shaped as WeChat's (``http://weixin.qq.com/q/``
    and 22 characters) but on this site, so a real phone scanning the screen opens the
    emulated one: ``<site>/_emulator/q/<code>``, 51 characters on ``http://localhost``.
    The same symbol version (4, 33 modules a side) as WeChat's 44, so the same render cost."""
    return url_for("emulator.phone.scanned_page", code=ticket.code, _external=True)


@bp.get("/api/qrcodes")
def live_qrcodes() -> Response:
    """``{"qrcodes": [{"ticket", "scene_str", "expires_in", "url"}], "openid"}``, newest first."""
    now = time.time()
    qrcodes = [
        {
            "ticket": ticket.ticket,
            "scene_str": ticket.scene_str,
            "expires_in": max(int(ticket.expires_at - now), 0),
            "url": qr_url(ticket),
        }
        for ticket in emulator_state().live_tickets()
    ]
    return jsonify(qrcodes=qrcodes, openid=_phone_openid())


@bp.post("/api/scan")
def scan() -> Response:
    """Scan a QR code: body ``{"ticket": str, "follower": "new" | "returning", "mode"?}``.

    A new follower sends ``subscribe`` with ``EventKey`` ``qrscene_<scene>``; a returning one
    ``SCAN`` with the bare scene. Returns what WeChat would have seen: ``{"event", "openid",
    "status", "reply"}``.
    """
    body = request.get_json(silent=True) or {}
    ticket = emulator_state().get_ticket(str(body.get("ticket", "")))
    if ticket is None:
        raise APIError(404, "unknown_ticket", "这个二维码已失效或不存在。")
    openid = _phone_openid()
    emulator_state().follow(openid, ticket.scene_str)
    event = scan_event(
        current_app.config["EMULATOR_ACCOUNT_ID"],
        openid,
        ticket.scene_str,
        new_follower=body.get("follower") == "new",
        ticket=ticket.ticket,
    )
    delivered = _deliver(event, body.get("mode"))
    return _with_openid(jsonify(event=event["Event"], openid=openid, **delivered), openid)


@bp.post("/api/message")
def message() -> Response:
    """Send a text message as the emulated user: body ``{"content": str, "mode"?}``."""
    body = request.get_json(silent=True) or {}
    content = str(body.get("content", ""))[:600]
    if not content:
        raise APIError(400, "empty_message", "消息不能为空。")
    openid = _phone_openid()
    text = text_message(current_app.config["EMULATOR_ACCOUNT_ID"], openid, content)
    delivered = _deliver(text, body.get("mode"))
    return _with_openid(jsonify(event=None, openid=openid, **delivered), openid)


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


def _deliver(message: dict[str, str | int], mode: str | None) -> dict[str, object]:
    """POST a message to our callback as WeChat would, and read the reply.

    Args:
        message: the message's fields (``scan_event``, ``text_message``).
        mode: ``plaintext``, ``compatible`` or ``safe``; None for the server's own mode.

    Returns:
        ``{"status": int, "reply": str | None, "mode": str}``; status 0 when the callback could
        not be reached.

    Raises:
        APIError: an encrypted mode was asked for but no EncodingAESKey is configured, or our
            callback's address is unknown (``_callback_url``).
    """
    crypto: WeChatCrypto | None = current_app.extensions["wechat_crypto"]
    mode = mode or (current_app.config["WECHAT_ENCRYPT_MODE"] if crypto else "plaintext")
    if mode not in MODES:
        raise APIError(400, "bad_mode", "mode 只能是 plaintext、compatible 或 safe。")
    if mode != "plaintext" and crypto is None:
        raise APIError(400, "no_key", "未配置 WECHAT_ENCODING_AES_KEY，只能发送明文消息。")
    try:
        answer = push(
            _callback_url(),
            message,
            current_app.config["WECHAT_TOKEN"],
            crypto,
            mode,
        )
    except requests.RequestException as exc:
        return {"status": 0, "reply": f"（回调无法访问：{type(exc).__name__}）", "mode": mode}
    return {"status": answer.status_code, "reply": _reply_text(answer, crypto), "mode": mode}


def _callback_url() -> str:
    """Our own callback, where the phone posts: under ``PUBLIC_BASE_URL`` when it is set, else
    at the address this request came in on. Never at a host the request names (``Host``,
    ``X-Forwarded-Host``): a crafted one would collect signed queries to replay against us.

    Raises:
        APIError: no ``PUBLIC_BASE_URL``, and the server does not expose the connection, or it
            is not a TCP one (a unix socket).
    """
    path = url_for("callback.receive")
    base = current_app.config["PUBLIC_BASE_URL"]
    if base:
        return base + path
    environ = request.environ
    # The accepted connection, as werkzeug's development server and gunicorn expose it: its
    # local address is the one we listen on, whatever the headers say.
    connection = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    address = connection.getsockname() if connection is not None else None
    if not isinstance(address, tuple):
        raise APIError(503, "no_callback_url", "无法确定本服务的回调地址，请设置 PUBLIC_BASE_URL。")
    host, port = address[:2]
    # The scheme the server itself served, before ProxyFix applied X-Forwarded-Proto.
    scheme = environ.get("werkzeug.proxy_fix.orig", environ)["wsgi.url_scheme"]
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}{path}"


def _reply_text(answer: requests.Response, crypto: WeChatCrypto | None) -> str | None:
    if answer.status_code != 200:
        return None
    try:
        return reply_content(answer.content, crypto)
    except WeChatError:
        # WeChat shows this to the user when a reply is not valid (or not decryptable) XML.
        return "该公众号暂时无法提供服务，请稍后再试"
