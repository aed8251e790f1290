"""Errors raised by the WeChat protocol layer.

The tree::

    WeChatError                     base of everything below
    ├── WeChatAPIError              the API answered a non-zero errcode (.errcode, .errmsg)
    │   └── InvalidCredentialError  40001 / 40014 / 42001: the access_token is stale
    ├── WeChatTransportError        timeout, connection failure, non-JSON or non-2xx answer
    ├── InvalidSignatureError       a callback whose signature does not match our Token
    │   └── StaleSignatureError     it matches, but is not fresh or was used already
    ├── MalformedMessageError       a callback body that is not a well-formed WeChat message
    ├── DecryptionError             an encrypted message no key of ours decrypts to our AppID
    └── CallbackRefused             a callback to answer 400, 403 or 413 (.status, .reason)
"""


class WeChatError(Exception):
    """Base of every error raised by ``app.wechat``."""


class WeChatAPIError(WeChatError):
    """A WeChat API call answered a non-zero ``errcode``.

    Attributes:
        errcode (int): WeChat's error code, e.g. 45009 (daily quota reached).
        errmsg (str): WeChat's message, as sent.
    """

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"WeChat errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class InvalidCredentialError(WeChatAPIError):
    """The access_token was rejected (40001, 40014, 42001): refresh it once and retry once."""

    ERRCODES = frozenset({40001, 40014, 42001})


class WeChatTransportError(WeChatError):
    """WeChat could not be reached, timed out, or answered something that is not its JSON.

    The message names the method and path only: a URL may carry the AppSecret or access_token.
    """


class InvalidSignatureError(WeChatError):
    """A callback's ``signature`` does not match ``sha1(sorted([token, timestamp, nonce]))``."""


class StaleSignatureError(InvalidSignatureError):
    """A callback's ``signature`` matches, but its query is no longer good: the ``timestamp``
    is malformed or too far from now, or the signature was used already (a replay)."""


class MalformedMessageError(WeChatError):
    """A callback body is not a well-formed, DTD-free WeChat XML message of acceptable size."""


class DecryptionError(WeChatError):
    """An ``Encrypt`` value that is not base64, has bad padding (wrong key, tampered) or a
    broken frame, or that was encrypted for another AppID."""


def api_error(errcode: int, errmsg: str) -> WeChatAPIError:
    """Build the typed error for a non-zero ``errcode``.

    Args:
        errcode: the ``errcode`` from WeChat's JSON.
        errmsg: the ``errmsg`` from WeChat's JSON.

    Returns:
        ``InvalidCredentialError`` for stale-token codes, ``WeChatAPIError`` otherwise.
    """
    if errcode in InvalidCredentialError.ERRCODES:
        return InvalidCredentialError(errcode, errmsg)
    return WeChatAPIError(errcode, errmsg)


class CallbackRefused(WeChatError):
    """A callback this server must not take: answer it with ``status`` (400, 403 or 413).

    Attributes:
        status: the HTTP status to answer.
        reason: why, for the log (never a secret).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
