"""A message as WeChat's servers deliver it to a callback, and the reply read back as WeChat
reads it: for the emulated phone and ``flask wechat simulate-scan``.

Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Message_encryption_and_decryption_instructions.html
"""

import requests

from .crypto import WeChatCrypto
from .errors import DecryptionError
from .messages import parse_fields, to_xml
from .signature import signed_query

#: How WeChat can send, by the account's message-encryption mode.
MODES = ("plaintext", "compatible", "safe")

#: WeChat waits this long for a callback's answer, in seconds.
WECHAT_REPLY_SECONDS = 5


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
