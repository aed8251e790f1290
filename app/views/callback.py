"""The WeChat callback: URL verification (GET) and pushed messages and events (POST).

Plaintext, compatible and safe mode (``WECHAT_ENCODING_AES_KEY``, ``WECHAT_ENCRYPT_MODE``).
Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Access_Overview.html
"""

import logging
import time
from typing import NoReturn

import redis
from flask import Blueprint, Response, abort, current_app, g, request

from ..extensions import login_service
from ..metrics import SIGNATURE_FAILURES
from ..wechat.crypto import WeChatCrypto
from ..wechat.errors import (
    DecryptionError,
    InvalidSignatureError,
    MalformedMessageError,
    StaleSignatureError,
)
from ..wechat.forwarding import Forwarder
from ..wechat.messages import (
    MAX_MESSAGE_BYTES,
    Message,
    parse_fields,
    parse_message,
    text_reply,
)
from ..wechat.replay import SignatureLedger
from ..wechat.signature import check_signature

log = logging.getLogger(__name__)

bp = Blueprint("callback", __name__, url_prefix="/wechat")

#: Told to the scanner when our own side fails: they lose nothing by scanning again.
BUSY_REPLY = "登录服务暂时繁忙，请稍后在网页上刷新二维码重新扫码。"

#: How long a callback keeps retrying while Redis is unreachable before answering 503, in s.
STORAGE_RETRY_SECONDS = 2.0


@bp.before_request
def require_signature() -> None:
    """Answer 403 unless ``signature`` matches our Token (checked in constant time), its
    ``timestamp`` is fresh, and it is used for the first time, GET or POST alike: in plaintext
    mode the signature does not cover the body, so a captured query must open nothing."""
    args = request.args
    signature, timestamp = args.get("signature", ""), args.get("timestamp", "")
    if not check_signature(
        current_app.config["WECHAT_TOKEN"], signature, timestamp, args.get("nonce", "")
    ):
        _refuse("bad signature")
    ledger: SignatureLedger = current_app.extensions["wechat_signatures"]
    try:
        ledger.spend(signature, timestamp, verification=request.method == "GET")
    except StaleSignatureError as exc:
        _refuse(str(exc))
    except redis.RedisError as exc:
        # Let it through rather than lose WeChat's message: without Redis no login can be
        # confirmed either (a scan is answered 503 and retried by WeChat), a verification GET
        # only echoes, and a message for no one is acknowledged. Only forwarding would act on
        # an unchecked query, so ``_pass_on`` refuses to (a replay would reach the upstream
        # signed afresh by us).
        g.replay_unchecked = True
        log.error("replay check skipped, Redis unavailable: %s", exc)


def _refuse(reason: str) -> NoReturn:
    """Answer 403 to a callback that is not provably WeChat's, and count it."""
    SIGNATURE_FAILURES.inc()
    log.warning("callback refused from %s: %s", request.remote_addr, reason)
    abort(403, reason)


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
    if len(body) > MAX_MESSAGE_BYTES:
        abort(413, "message too large")
    crypto: WeChatCrypto | None = current_app.extensions["wechat_crypto"]
    encrypted = request.args.get("encrypt_type", "raw") == "aes"
    if encrypted and crypto is None:
        abort(400, "encrypted message, but no EncodingAESKey is configured")
    if not encrypted and crypto is not None and current_app.config["WECHAT_ENCRYPT_MODE"] == "safe":
        log.warning("callback refused: plaintext message in safe mode")
        abort(400, "plaintext messages are refused in safe mode")
    key_index, raw_body = None, body
    try:
        if encrypted:
            body, key_index = _decrypt(crypto, body)
        message = parse_message(body)
    except InvalidSignatureError:
        _refuse("bad msg_signature")
    except (MalformedMessageError, DecryptionError) as exc:
        log.warning("callback refused: %s", exc)
        abort(400, "malformed message")
    try:
        content = _handle(message)
    except redis.RedisError:
        # Not acknowledged, so WeChat delivers it again: a scan we could not record is retried,
        # never lost, and never answered "登录成功".
        abort(503, "storage unavailable")
    except Exception:
        log.exception("callback handling failed; the scanner is asked to try again")
        content = BUSY_REPLY
    if content is None:
        return _pass_on(raw_body)
    if not content:
        return Response("success", mimetype="text/plain")
    reply = text_reply(message.FromUserName, message.ToUserName, content, int(time.time()))
    if key_index is not None:
        reply = crypto.envelope(reply, key_index)  # answer with the key the message came with
    return Response(reply, mimetype="application/xml")


def _pass_on(body: bytes) -> Response:
    """Hand a message that is not about logging in to ``WECHAT_FORWARD_URL`` and relay its
    reply, or acknowledge it with ``success`` when there is none."""
    forwarder: Forwarder | None = current_app.extensions["wechat_forwarder"]
    if forwarder and g.get("replay_unchecked"):
        # Not acknowledged: WeChat delivers it again, to be forwarded once Redis can tell a
        # replay from a first delivery.
        abort(503, "storage unavailable")
    reply = forwarder.forward(body, request.args) if forwarder else None
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


def _decrypt(crypto: WeChatCrypto, body: bytes) -> tuple[bytes, int]:
    """Check ``msg_signature`` over the envelope's ``Encrypt`` and decrypt it.

    Returns:
        ``(message XML, index of the key that worked)``.

    Raises:
        MalformedMessageError, InvalidSignatureError, DecryptionError.
    """
    encrypt = parse_fields(body).get("Encrypt", "")
    if not encrypt:
        raise MalformedMessageError("encrypted message without Encrypt")
    args = request.args
    crypto.check_msg_signature(
        args.get("msg_signature", ""), args.get("timestamp", ""), args.get("nonce", ""), encrypt
    )
    return crypto.decrypt(encrypt)
