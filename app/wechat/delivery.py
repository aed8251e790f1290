"""A message as WeChat's servers deliver it to a callback, and the reply read back as WeChat
reads it: the one sender of WeChat's messages, for the emulated phone, ``flask wechat
simulate-scan``, the tests and the benchmark.

``scan_event`` and ``text_message`` build a message's fields, ``push_request`` signs (and
encrypts) them into the query and body WeChat posts, and ``push`` posts them with requests;
callers with another HTTP client (Flask's test client, the benchmark's) post the pair themselves.

Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Message_encryption_and_decryption_instructions.html
"""

import secrets
import time

import requests

from .crypto import WeChatCrypto
from .errors import DecryptionError
from .messages import SUBSCRIBE_SCENE_PREFIX, parse_fields, to_xml
from .signature import signed_query

#: How WeChat can send, by the account's message-encryption mode.
MODES = ("plaintext", "compatible", "safe")

#: WeChat waits this long for a callback's answer, in seconds.
WECHAT_REPLY_SECONDS = 5


def new_openid() -> str:
    """A fresh openid of WeChat's shape: 28 characters starting with ``o``."""
    return "o" + secrets.token_urlsafe(20)[:27]


def scan_event(
    account_id: str,
    openid: str,
    scene_str: str,
    *,
    new_follower: bool = False,
    ticket: str | None = None,
    create_time: int | None = None,
) -> dict[str, str | int]:
    """The event WeChat sends when ``openid`` scans the parametric QR code of ``scene_str``.

    Args:
        account_id: the account's original id (``ToUserName``, ``gh_...``).
        openid: the scanner.
        scene_str: the QR code's scene.
        new_follower: a scan that follows the account: ``subscribe`` with ``EventKey``
            ``qrscene_<scene_str>``; otherwise a follower's ``SCAN`` with the bare scene.
        ticket: the QR code's ``Ticket``, when known.
        create_time: ``CreateTime``, epoch seconds (default now); WeChat's retries resend the
            same one.

    Returns:
        The fields in WeChat's order, for ``push_request``.

    Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_event_pushes.html
    """
    event, event_key = (
        ("subscribe", SUBSCRIBE_SCENE_PREFIX + scene_str) if new_follower else ("SCAN", scene_str)
    )
    message = _envelope(account_id, openid, create_time)
    message.update({"MsgType": "event", "Event": event, "EventKey": event_key})
    if ticket is not None:
        message["Ticket"] = ticket
    return message


def text_message(
    account_id: str,
    openid: str,
    content: str,
    *,
    msg_id: int | None = None,
    create_time: int | None = None,
) -> dict[str, str | int]:
    """A text message from ``openid`` to the account.

    Args:
        account_id: the account's original id (``ToUserName``).
        openid: the sender.
        content: the text.
        msg_id: ``MsgId`` (default a fresh random one: WeChat's retries resend the same).
        create_time: ``CreateTime``, epoch seconds (default now).

    Returns:
        The fields in WeChat's order, for ``push_request``.

    Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_standard_messages.html
    """
    message = _envelope(account_id, openid, create_time)
    message.update(
        {
            "MsgType": "text",
            "Content": content,
            "MsgId": secrets.randbits(63) if msg_id is None else msg_id,
        }
    )
    return message


def _envelope(account_id: str, openid: str, create_time: int | None) -> dict[str, str | int]:
    return {
        "ToUserName": account_id,
        "FromUserName": openid,
        "CreateTime": int(time.time()) if create_time is None else create_time,
    }


def push(
    callback_url: str,
    message: dict[str, str | int],
    token: str,
    crypto: WeChatCrypto | None,
    mode: str,
) -> requests.Response:
    """Post a message to a callback as WeChat's servers do: signed, encrypted as ``mode``
    says (``push_request``), given up on after ``WECHAT_REPLY_SECONDS``.

    Returns:
        The callback's answer; read its text with ``reply_content``.

    Raises:
        ValueError: as ``push_request``.
        requests.RequestException: the callback could not be reached in time.
    """
    query, body = push_request(message, token, crypto, mode)
    return requests.post(
        callback_url,
        params=query,
        data=body,
        headers={"Content-Type": "text/xml"},
        timeout=WECHAT_REPLY_SECONDS,
    )


def push_request(
    message: dict[str, str | int], token: str, crypto: WeChatCrypto | None, mode: str
) -> tuple[dict[str, str], bytes]:
    """Sign (and in an encrypted mode, encrypt) a message for posting to a callback.

    Args:
        message: the message's fields, ``ToUserName`` first, in WeChat's order.
        token: the Token.
        crypto: the account's crypto; required unless ``mode`` is ``plaintext``.
        mode: ``plaintext``, ``compatible`` (the plaintext fields beside ``Encrypt``) or
            ``safe`` (only ``ToUserName`` and ``Encrypt``).

    Returns:
        ``(query, body)``: the query holds ``openid`` too, as WeChat's does.

    Raises:
        ValueError: an unknown mode, or an encrypted one without crypto.
    """
    if mode not in MODES or (mode != "plaintext" and crypto is None):
        raise ValueError(f"cannot send in mode {mode!r}")
    body = to_xml(message)
    if mode == "plaintext":
        query = signed_query(token)
    else:
        encrypt = crypto.encrypt(body)
        query = signed_query(token, encrypt)
        envelope = message if mode == "compatible" else {"ToUserName": message["ToUserName"]}
        body = to_xml({**envelope, "Encrypt": encrypt})
    query["openid"] = str(message["FromUserName"])
    return query, body


def reply_content(reply: bytes, crypto: WeChatCrypto | None) -> str | None:
    """The text a user would see of a callback's passive reply.

    Args:
        reply: the callback's 200 answer body.
        crypto: to open an encrypted reply (its ``MsgSignature`` is checked).

    Returns:
        The reply's ``Content``; None for ``success``, an empty answer, or a reply without text.

    Raises:
        WeChatError: the reply is not WeChat reply XML, or does not check or decrypt (WeChat
            then shows "该公众号暂时无法提供服务，请稍后再试").
    """
    if reply.strip() in (b"", b"success"):
        return None
    fields = parse_fields(reply)
    if "Encrypt" in fields:
        if crypto is None:
            raise DecryptionError("an encrypted reply, and no EncodingAESKey to open it")
        crypto.check_msg_signature(
            fields.get("MsgSignature", ""),
            fields.get("TimeStamp", ""),
            fields.get("Nonce", ""),
            fields["Encrypt"],
        )
        fields = parse_fields(crypto.decrypt(fields["Encrypt"])[0])
    return fields.get("Content")
