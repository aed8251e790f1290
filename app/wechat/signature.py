"""Callback signatures: ``sha1`` over the sorted Token, timestamp and nonce.

Doc followed: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Access_Overview.html
"""

import hashlib
import hmac


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
