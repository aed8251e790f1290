"""WeChat's callback protocol, free of Flask: URL verification, the signature with its
freshness and replay window, plaintext, compatible and safe mode, decryption, and the reply
envelope. A web framework hands it the query and the body; it hands back the message, or a
``CallbackRefused`` saying which HTTP status to answer.

Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Access_Overview.html
and, for safe mode,
https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Message_encryption_and_decryption_instructions.html
"""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from .crypto import WeChatCrypto
from .errors import (
    CallbackRefused,
    DecryptionError,
    InvalidSignatureError,
    MalformedMessageError,
    StaleSignatureError,
)
from .messages import MAX_MESSAGE_BYTES, Message, parse_fields, parse_message, text_reply
from .replay import SignatureLedger
from .signature import check_signature

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """A verified callback message.

    Attributes:
        message: the parsed (decrypted) message.
        raw_body: the body as it came (still encrypted in safe mode), for forwarding.
        key_index: which EncodingAESKey decrypted it (the reply uses the same); None for
            plaintext.
        replay_checked: False when Redis could not record the signature: the message may be a
            replay, so nothing that acts on its own (forwarding) may take it.
    """

    message: Message
    raw_body: bytes
    key_index: int | None
    replay_checked: bool


class CallbackProtocol:
    """Verifies and opens WeChat's callbacks, and seals the replies.

    Args:
        token: ``WECHAT_TOKEN``.
        crypto: the message crypto (an EncodingAESKey is set), else None (plaintext).
        safe_only: refuse plaintext messages (``WECHAT_ENCRYPT_MODE=safe``).
        ledger: records each signature once.
        clock: returns the time in epoch seconds (reply ``CreateTime``).
    """

    def __init__(
        self,
        *,
        token: str,
        crypto: WeChatCrypto | None,
        safe_only: bool,
        ledger: SignatureLedger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = token
        self._crypto = crypto
        self._safe_only = safe_only
        self._ledger = ledger
        self._clock = clock

    def check(self, query: Mapping[str, str], *, verification: bool) -> bool:
        """Check the signed query of any callback, GET or POST: its ``signature`` (constant
        time), its freshness, and that it is used for the first time (in plaintext mode the
        signature does not cover the body: a captured query must open nothing).

        Args:
            query: the request's query arguments.
            verification: True for WeChat's URL verification (a GET).

        Returns:
            True if the signature was recorded as used; False if Redis could not be reached
            (the callback is let through, not lost: see ``Incoming.replay_checked``).

        Raises:
            CallbackRefused: 403, with the reason.
        """
        signature, timestamp = query.get("signature", ""), query.get("timestamp", "")
        if not check_signature(self._token, signature, timestamp, query.get("nonce", "")):
            raise CallbackRefused(403, "bad signature")
        try:
            self._ledger.spend(signature, timestamp, verification=verification)
        except StaleSignatureError as exc:
            raise CallbackRefused(403, str(exc)) from None
        except redis.RedisError as exc:
            log.error("replay check skipped, Redis unavailable: %s", exc)
            return False
        return True

    def open(self, query: Mapping[str, str], body: bytes, *, replay_checked: bool) -> Incoming:
        """Open a checked POST: its mode, its ``msg_signature`` and decryption, its XML.

        Args:
            query: the request's query arguments (already passed ``check``).
            body: the request body, read up to one byte past ``MAX_MESSAGE_BYTES``.
            replay_checked: what ``check`` returned.

        Raises:
            CallbackRefused: 413 too large; 400 encrypted without a key, plaintext in safe
                mode, not a WeChat message, or not decrypting; 403 bad ``msg_signature``.
        """
        if len(body) > MAX_MESSAGE_BYTES:
            raise CallbackRefused(413, "message too large")
        encrypted = query.get("encrypt_type", "raw") == "aes"
        if encrypted and self._crypto is None:
            raise CallbackRefused(400, "encrypted message, but no EncodingAESKey is configured")
        if not encrypted and self._crypto is not None and self._safe_only:
            raise CallbackRefused(400, "plaintext messages are refused in safe mode")
        key_index, plain = None, body
        try:
            if encrypted:
                plain, key_index = self._decrypt(query, body)
            message = parse_message(plain)
        except InvalidSignatureError:
            raise CallbackRefused(403, "bad msg_signature") from None
        except (MalformedMessageError, DecryptionError) as exc:
            raise CallbackRefused(400, f"malformed message: {exc}") from None
        return Incoming(message, body, key_index, replay_checked)

    def reply(self, incoming: Incoming, content: str) -> bytes:
        """A passive text reply to ``incoming``, encrypted with the key it came with."""
        message = incoming.message
        reply = text_reply(message.FromUserName, message.ToUserName, content, int(self._clock()))
        if incoming.key_index is None or self._crypto is None:
            return reply
        return self._crypto.envelope(reply, incoming.key_index)

    def _decrypt(self, query: Mapping[str, str], body: bytes) -> tuple[bytes, int]:
        encrypt = parse_fields(body).get("Encrypt", "")
        if not encrypt:
            raise MalformedMessageError("encrypted message without Encrypt")
        self._crypto.check_msg_signature(
            query.get("msg_signature", ""),
            query.get("timestamp", ""),
            query.get("nonce", ""),
            encrypt,
        )
        return self._crypto.decrypt(encrypt)
