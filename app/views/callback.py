"""The WeChat callback: URL verification (GET) and pushed messages and events (POST).

A thin adapter from HTTP to ``app.wechat.callback.CallbackProtocol`` (signatures, replay
window, plaintext, compatible and safe mode, the reply envelope) and ``handle_message``.
Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Access_Overview.html
"""

import logging
import time
from typing import NoReturn

import redis
from flask import Blueprint, Response, abort, current_app, g, request

from ..extensions import login_service
from ..metrics import SIGNATURE_FAILURES
from ..wechat.callback import CallbackProtocol, Incoming
from ..wechat.errors import CallbackRefused
from ..wechat.forwarding import Forwarder
from ..wechat.messages import MAX_MESSAGE_BYTES, Message

log = logging.getLogger(__name__)

bp = Blueprint("callback", __name__, url_prefix="/wechat")

#: Told to the scanner when our own side fails: they lose nothing by scanning again.
BUSY_REPLY = "登录服务暂时繁忙，请稍后在网页上刷新二维码重新扫码。"

#: How long a callback keeps retrying while Redis is unreachable before answering 503, in s.
STORAGE_RETRY_SECONDS = 2.0


@bp.before_request
def require_signature() -> None:
    """Answer 403 unless the signed query is WeChat's, fresh, and used for the first time, GET
    or POST alike (``CallbackProtocol.check``)."""
    try:
        g.replay_checked = _protocol().check(request.args, verification=request.method == "GET")
    except CallbackRefused as refused:
        _refuse(refused)


def _protocol() -> CallbackProtocol:
    return current_app.extensions["wechat_callback"]


def _refuse(refused: CallbackRefused) -> NoReturn:
    """Answer a callback we must not take; a signature failure is counted."""
    if refused.status == 403:
        SIGNATURE_FAILURES.inc()
    log.warning("callback refused from %s: %s", request.remote_addr, refused.reason)
    abort(refused.status, refused.reason)


@bp.get("/callback")
def verify() -> Response:
    """WeChat's server verification: echo ``echostr`` exactly, as plain text."""
    return Response(request.args.get("echostr", ""), mimetype="text/plain")


@bp.post("/callback")
def receive() -> Response:
    """Take a message or event; answer quickly with a passive reply or ``success``.

    Returns:
        200 with reply XML (encrypted when the request was) or ``success``; for a message
        that is not about logging in, the reply of ``WECHAT_FORWARD_URL`` if one is set; 400
        for a body that is not a WeChat message, does not decrypt, or is plaintext in safe
        mode; 403 for a bad ``msg_signature``; 413 for one over ``MAX_MESSAGE_BYTES``. Our own
        failures still get a quick polite reply.
    """
    body = request.stream.read(MAX_MESSAGE_BYTES + 1)
    try:
        incoming = _protocol().open(request.args, body, replay_checked=g.replay_checked)
    except CallbackRefused as refused:
        _refuse(refused)
    try:
        content = _handle(incoming.message)
    except redis.RedisError:
        # Not acknowledged, so WeChat delivers it again: a scan we could not record is retried,
        # never lost, and never answered "登录成功".
        abort(503, "storage unavailable")
    except Exception:
        log.exception("callback handling failed; the scanner is asked to try again")
        content = BUSY_REPLY
    if content is None:
        return _pass_on(incoming)
    if not content:
        return Response("success", mimetype="text/plain")
    return Response(_protocol().reply(incoming, content), mimetype="application/xml")


def _pass_on(incoming: Incoming) -> Response:
    """Hand a message that is not about logging in to ``WECHAT_FORWARD_URL`` and relay its
    reply, or acknowledge it with ``success`` when there is none."""
    forwarder: Forwarder | None = current_app.extensions["wechat_forwarder"]
    if forwarder and not incoming.replay_checked:
        # Not acknowledged: WeChat delivers it again, to be forwarded once Redis can tell a
        # replay from a first delivery (a replay would reach the upstream signed afresh by us).
        abort(503, "storage unavailable")
    reply = forwarder.forward(incoming.raw_body, request.args) if forwarder else None
    if reply is None:
        return Response("success", mimetype="text/plain")
    return Response(reply, mimetype="application/xml")


def _handle(message: Message) -> str | None:
    """``handle_message``, retried for a moment while Redis is unreachable (a failover or a
    restart), within WeChat's 5 s.

    Raises:
        redis.RedisError: Redis stayed unreachable for ``STORAGE_RETRY_SECONDS``.
    """
    deadline = time.monotonic() + STORAGE_RETRY_SECONDS
    while True:
        try:
            return login_service().handle_message(message)
        except redis.RedisError as exc:
            if time.monotonic() >= deadline:
                log.error("callback not acknowledged, Redis unavailable: %s", exc)
                raise
            time.sleep(0.25)
