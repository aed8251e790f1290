"""Message encryption of safe and compatible mode: AES-256-CBC with WeChat's framing.

The AES primitive comes from ``cryptography``; the framing is WeChat's: the plaintext is
16 random bytes, the message length (4 bytes, big-endian), the message XML and the AppID,
padded with PKCS#7 to a 32-byte block; the IV is the key's first 16 bytes. ``msg_signature``
is the ``sign()`` of the Token, timestamp, nonce and the ``Encrypt`` value.

Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Message_encryption_and_decryption_instructions.html
"""

import base64
import binascii
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import DecryptionError, InvalidSignatureError
from .messages import to_xml
from .signature import sign

#: WeChat pads to 32-byte blocks, not AES's 16.
_PAD_BITS = 256


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """Turn an ``EncodingAESKey`` (43 letters or digits) into the 32-byte AES key.

    Raises:
        ValueError: not 43 letters or digits.
    """
    if not re.fullmatch(r"[A-Za-z0-9]{43}", encoding_aes_key):
        raise ValueError("an EncodingAESKey is 43 letters or digits")
    return base64.b64decode(encoding_aes_key + "=")


class WeChatCrypto:
    """Encrypts and decrypts callback messages for one account.

    Args:
        token: the Token (signs ``msg_signature``).
        encoding_aes_key: the current ``EncodingAESKey``.
        app_id: our AppID: a decrypted message must end with it.
        previous_key: the ``EncodingAESKey`` before the last rotation, tried second.
        random_bytes: returns n random bytes (tests fix it for WeChat's known answer).

    Raises:
        ValueError: a key is not 43 letters or digits.
    """

    def __init__(
        self,
        token: str,
        encoding_aes_key: str,
        app_id: str,
        *,
        previous_key: str | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._token = token
        self._app_id = app_id.encode()
        self._keys = [decode_aes_key(encoding_aes_key)]
        if previous_key:
            self._keys.append(decode_aes_key(previous_key))
        self._random_bytes = random_bytes

    def __repr__(self) -> str:
        return f"WeChatCrypto(app_id={self._app_id.decode()!r}, keys={len(self._keys)})"

    def check_msg_signature(
        self, msg_signature: str, timestamp: str, nonce: str, encrypt: str
    ) -> None:
        """Check ``msg_signature`` over the ``Encrypt`` value, in constant time.

        Raises:
            InvalidSignatureError: it does not match.
        """
        expected = sign(self._token, timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), msg_signature.encode()):
            raise InvalidSignatureError("msg_signature does not match")

    def decrypt(self, encrypt: str) -> tuple[bytes, int]:
        """Decrypt an ``Encrypt`` value with the current key, else the previous one.

        Returns:
            ``(message XML bytes, index of the key that worked)``: 0 current, 1 previous.

        Raises:
            DecryptionError: no key decrypts it to a well-framed message ending in our AppID.
        """
        try:
            ciphertext = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError):
            raise DecryptionError("Encrypt is not base64") from None
        if not ciphertext or len(ciphertext) % 16:
            raise DecryptionError("ciphertext is not whole AES blocks")
        failure = DecryptionError("no key decrypts the message")
        for index, key in enumerate(self._keys):
            try:
                return self._decrypt_with(key, ciphertext), index
            except DecryptionError as exc:
                failure = exc
        raise failure

    def _decrypt_with(self, key: bytes, ciphertext: bytes) -> bytes:
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(_PAD_BITS).unpadder()
        try:
            plaintext = unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise DecryptionError("bad padding: wrong key or tampered message") from None
        if len(plaintext) < 20:
            raise DecryptionError("message too short")
        length = int.from_bytes(plaintext[16:20], "big")
        message, app_id = plaintext[20 : 20 + length], plaintext[20 + length :]
        if len(message) != length:
            raise DecryptionError("message length does not match")
        if not hmac.compare_digest(app_id, self._app_id):
            raise DecryptionError("message is for another AppID")
        return message

    def encrypt(self, message: bytes, key_index: int = 0) -> str:
        """Encrypt message XML into an ``Encrypt`` value (base64).

        Args:
            message: the XML bytes.
            key_index: which key to use (answer with the key the request came with).
        """
        key = self._keys[key_index]
        plaintext = (
            self._random_bytes(16) + len(message).to_bytes(4, "big") + message + self._app_id
        )
        padder = padding.PKCS7(_PAD_BITS).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
        return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()

    def envelope(
        self,
        message: bytes,
        key_index: int = 0,
        timestamp: str | None = None,
        nonce: str | None = None,
    ) -> bytes:
        """Wrap reply XML in WeChat's encrypted reply envelope.

        Args:
            message: the passive reply XML.
            key_index: the key the request was decrypted with.
            timestamp, nonce: default to now and a fresh random number.

        Returns:
            ``<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`` as UTF-8 bytes.
        """
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**10))
        encrypt = self.encrypt(message, key_index)
        return to_xml(
            {
                "Encrypt": encrypt,
                "MsgSignature": sign(self._token, timestamp, nonce, encrypt),
                "TimeStamp": int(timestamp),
                "Nonce": nonce,
            }
        )
