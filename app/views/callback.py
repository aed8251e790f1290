"""The WeChat callback: URL verification (GET) and pushed messages and events (POST).

Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Access_Overview.html
"""

import logging
import time

from flask import Blueprint, Response, abort, current_app, request

from ..extensions import login_service
from ..wechat.errors import MalformedMessageError
from ..wechat.messages import MAX_MESSAGE_BYTES, parse_message, text_reply
from ..wechat.signature import check_signature

log = logging.getLogger(__name__)

bp = Blueprint("callback", __name__, url_prefix="/wechat")

#: Told to the scanner when our own side fails: they lose nothing by scanning again.
BUSY_REPLY = "登录服务暂时繁忙，请稍后在网页上刷新二维码重新扫码。"


@bp.before_request
def require_signature() -> None:
    """Answer 403 unless ``signature`` matches our Token (checked in constant time)."""
    args = request.args
    if not check_signature(
        current_app.config["WECHAT_TOKEN"],
        args.get("signature", ""),
        args.get("timestamp", ""),
        args.get("nonce", ""),
    ):
        log.warning("callback refused: bad signature from %s", request.remote_addr)
        abort(403, "invalid signature")


@bp.get("/callback")
def verify() -> Response:
    """WeChat's server verification: echo ``echostr`` exactly, as plain text."""
    return Response(request.args.get("echostr", ""), mimetype="text/plain")


@bp.post("/callback")
def receive() -> Response:
    """Take a message or event; answer quickly with a passive reply or ``success``.

    Returns:
        200 with reply XML or ``success``; 400 for a body that is not a WeChat message; 413
        for one over ``MAX_MESSAGE_BYTES``. Our own failures still get a quick polite reply.
    """
    body = request.stream.read(MAX_MESSAGE_BYTES + 1)
    if len(body) > MAX_MESSAGE_BYTES:
        abort(413, "message too large")
    try:
        message = parse_message(body)
    except MalformedMessageError as exc:
        log.warning("callback refused: %s", exc)
        abort(400, "malformed message")
    try:
        content = login_service().handle_message(message)
    except Exception:
        log.exception("callback handling failed; the scanner is asked to try again")
        content = BUSY_REPLY
    if content is None:
        return Response("success", mimetype="text/plain")
    reply = text_reply(message.FromUserName, message.ToUserName, content, int(time.time()))
    return Response(reply, mimetype="application/xml")
