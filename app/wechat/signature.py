"""Callback signatures: ``sha1`` over the sorted Token, timestamp and nonce.

Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Access_Overview.html
"""

import hashlib
import hmac
import secrets
import time


def sign(token: str, *parts: str) -> str:
    """Compute a WeChat signature.

    Args:
        token: the Token configured on the account page.
        parts: the other signed values: ``timestamp`` and ``nonce`` (and ``Encrypt`` for
            ``msg_signature`` in safe mode).

    Returns:
        The lower-case hex SHA-1 of the sorted values joined without separator.
    """
    return hashlib.sha1("".join(sorted((token, *parts))).encode()).hexdigest()


def check_signature(token: str, signature: str, timestamp: str, nonce: str) -> bool:
    """Tell whether a callback's ``signature`` matches, in constant time.

    Args:
        token: our Token.
        signature, timestamp, nonce: the query arguments WeChat sent (any may be empty).

    Returns:
        True only for a non-empty, exactly matching signature.
    """
    if not (token and signature and timestamp and nonce):
        return False
    expected = sign(token, timestamp, nonce)
    return hmac.compare_digest(expected.encode(), signature.encode())


def signed_query(
    token: str, encrypt: str | None = None, now: float | None = None
) -> dict[str, str]:
    """Sign a callback afresh, as WeChat's servers do: the query to post it with.

    Args:
        token: the Token.
        encrypt: the body's ``Encrypt`` value, for an encrypted message (adds
            ``encrypt_type=aes`` and ``msg_signature``).
        now: the ``timestamp``, epoch seconds (default: the current time).

    Returns:
        ``{"signature", "timestamp", "nonce"}`` (+ ``"encrypt_type", "msg_signature"``).
    """
    timestamp = str(int(time.time() if now is None else now))
    nonce = str(secrets.randbelow(10**10))
    query = {"signature": sign(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
    if encrypt is not None:
        query["encrypt_type"] = "aes"
        query["msg_signature"] = sign(token, timestamp, nonce, encrypt)
    return query
