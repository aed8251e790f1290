"""Callback signatures: the known answer and what check_signature accepts."""

import pytest

from app.wechat.signature import check_signature, sign

TOKEN = "AAAAA"
TIMESTAMP = "1714036504"
NONCE = "1514711492"
#: From WeChat's documentation (wechat-protocol.md, section 3).
KNOWN_SIGNATURE = "f464b24fc39322e44b38aa78f5edd27bd1441696"


def test_sign_gives_the_known_answer():
    assert sign(TOKEN, TIMESTAMP, NONCE) == KNOWN_SIGNATURE


def test_sign_does_not_depend_on_argument_order():
    assert sign(NONCE, TOKEN, TIMESTAMP) == KNOWN_SIGNATURE


@pytest.mark.parametrize(
    ("token", "signature", "timestamp", "nonce", "expected"),
    [
        pytest.param(TOKEN, KNOWN_SIGNATURE, TIMESTAMP, NONCE, True, id="known-answer"),
        pytest.param("BBBBB", KNOWN_SIGNATURE, TIMESTAMP, NONCE, False, id="wrong-token"),
        pytest.param(TOKEN, KNOWN_SIGNATURE[:-1] + "7", TIMESTAMP, NONCE, False, id="tampered"),
        pytest.param(TOKEN, KNOWN_SIGNATURE[:-1], TIMESTAMP, NONCE, False, id="truncated"),
        pytest.param(TOKEN, KNOWN_SIGNATURE, "1714036505", NONCE, False, id="other-timestamp"),
        pytest.param(TOKEN, KNOWN_SIGNATURE, TIMESTAMP, "1514711493", False, id="other-nonce"),
        pytest.param(TOKEN, KNOWN_SIGNATURE.upper(), TIMESTAMP, NONCE, False, id="upper-case-hex"),
        pytest.param(TOKEN, "", TIMESTAMP, NONCE, False, id="empty-signature"),
        # Each empty part comes with the signature that really matches it, so only the
        # emptiness check can refuse it.
        pytest.param("", sign("", TIMESTAMP, NONCE), TIMESTAMP, NONCE, False, id="empty-token"),
        pytest.param(TOKEN, sign(TOKEN, "", NONCE), "", NONCE, False, id="empty-timestamp"),
        pytest.param(TOKEN, sign(TOKEN, TIMESTAMP, ""), TIMESTAMP, "", False, id="empty-nonce"),
        pytest.param(TOKEN, "é" * 40, TIMESTAMP, NONCE, False, id="non-ascii-signature"),
        pytest.param(TOKEN, "签名" * 20, TIMESTAMP, NONCE, False, id="cjk-signature"),
    ],
)
def test_check_signature(token, signature, timestamp, nonce, expected):
    assert check_signature(token, signature, timestamp, nonce) is expected
