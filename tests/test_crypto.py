"""WeChatCrypto (safe and compatible mode) against WeChat's known answers and its own framing."""

import base64

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from app.wechat.crypto import WeChatCrypto, decode_aes_key
from app.wechat.errors import DecryptionError, InvalidSignatureError
from app.wechat.messages import parse_fields

# WeChat's known answer (WeCom flavour of the same algorithm).
TOKEN = "123456"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
APP_ID = "wx49f0ab532d5d035a"
TIMESTAMP = "1411525903"
NONCE = "461056294"
RANDOM = b"1234567890123456"
REPLY = b"""<xml>
<MsgType><![CDATA[text]]></MsgType>
<Content><![CDATA[test]]></Content>
<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>
<ToUserName><![CDATA[messense]]></ToUserName>
<AgentID>1</AgentID>
<CreateTime>1411525903</CreateTime>
</xml>"""
REPLY_ENCRYPT = (
    "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBq"
    "GsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFh"
    "HZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX0"
    "5UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3"
    "WeK2XeFYFMNMpatF9XiKzHo3"
)
REPLY_SIGNATURE = "407518b7649e86ef23978113f92d27afa9296533"
MESSAGE_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrs"
    "TyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+"
    "BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7"
    "vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dS"
    "hyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
)
MESSAGE_SIGNATURE = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"

#: Another account's key, standing in for the key after a rotation.
NEW_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def make_crypto(key: str = AES_KEY, app_id: str = APP_ID, **kwargs) -> WeChatCrypto:
    return WeChatCrypto(TOKEN, key, app_id, **kwargs)


def seal(plaintext: bytes, key: str = AES_KEY) -> str:
    """Encrypt an arbitrary (possibly mis-framed) plaintext the way WeChat pads and encrypts."""
    raw_key = base64.b64decode(key + "=")
    padder = padding.PKCS7(256).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(raw_key), modes.CBC(raw_key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def flip(encrypt: str, index: int) -> str:
    """The ``Encrypt`` value with one bit of ciphertext byte ``index`` flipped."""
    raw = bytearray(base64.b64decode(encrypt))
    raw[index] ^= 0x80
    return base64.b64encode(bytes(raw)).decode()


def test_envelope_matches_wechats_known_answer():
    crypto = make_crypto(random_bytes=lambda n: RANDOM[:n])

    fields = parse_fields(crypto.envelope(REPLY, timestamp=TIMESTAMP, nonce=NONCE))

    assert fields == {
        "Encrypt": REPLY_ENCRYPT,
        "MsgSignature": REPLY_SIGNATURE,
        "TimeStamp": TIMESTAMP,
        "Nonce": NONCE,
    }


def test_decrypt_matches_wechats_known_answer():
    crypto = make_crypto()

    crypto.check_msg_signature(MESSAGE_SIGNATURE, TIMESTAMP, NONCE, MESSAGE_ENCRYPT)
    message, key_index = crypto.decrypt(MESSAGE_ENCRYPT)

    fields = parse_fields(message)
    assert (fields["Content"], fields["FromUserName"]) == ("test", "messense")
    assert (fields["ToUserName"], fields["MsgType"]) == (APP_ID, "text")
    assert key_index == 0


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"x", id="1-byte"),
        pytest.param(bytes(range(256))[:13], id="fills-one-block"),  # 16+4+13+18 = 51
        pytest.param(bytes(range(256))[:26], id="exactly-two-blocks"),  # 16+4+26+18 = 64
        pytest.param(bytes(range(256)) * 256, id="64KB"),
        pytest.param("<xml><Content><![CDATA[你好，世界]]></Content></xml>".encode(), id="chinese"),
    ],
)
def test_round_trip(message):
    crypto = make_crypto()

    encrypt = crypto.encrypt(message)

    assert len(base64.b64decode(encrypt)) % 32 == 0  # WeChat pads to 32 bytes, not 16
    assert crypto.decrypt(encrypt) == (message, 0)


def test_each_encryption_has_fresh_random_bytes():
    crypto = make_crypto()

    assert crypto.encrypt(REPLY) != crypto.encrypt(REPLY)


def test_envelope_signature_checks_and_decrypts_with_defaults():
    crypto = make_crypto()

    fields = parse_fields(crypto.envelope(REPLY))

    assert fields["TimeStamp"].isdigit() and fields["Nonce"].isdigit()
    crypto.check_msg_signature(
        fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"], fields["Encrypt"]
    )
    assert crypto.decrypt(fields["Encrypt"]) == (REPLY, 0)


def test_wrong_key_is_a_decryption_error():
    encrypt = make_crypto().encrypt(REPLY)

    with pytest.raises(DecryptionError):
        make_crypto(NEW_KEY).decrypt(encrypt)


def test_previous_key_decrypts_after_a_rotation():
    rotated = make_crypto(NEW_KEY, previous_key=AES_KEY)

    assert rotated.decrypt(make_crypto(AES_KEY).encrypt(REPLY)) == (REPLY, 1)
    assert rotated.decrypt(make_crypto(NEW_KEY).encrypt(REPLY)) == (REPLY, 0)
    assert rotated.decrypt(MESSAGE_ENCRYPT)[1] == 1


def test_reply_under_the_previous_key_is_readable_with_only_that_key():
    rotated = make_crypto(NEW_KEY, previous_key=AES_KEY)

    fields = parse_fields(rotated.envelope(REPLY, key_index=1))

    old_only = make_crypto(AES_KEY)
    old_only.check_msg_signature(
        fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"], fields["Encrypt"]
    )
    assert old_only.decrypt(fields["Encrypt"]) == (REPLY, 0)
    with pytest.raises(DecryptionError):
        make_crypto(NEW_KEY).decrypt(fields["Encrypt"])


def test_message_for_another_app_id_is_a_decryption_error():
    encrypt = make_crypto(app_id="wx0000000000000000").encrypt(REPLY)

    with pytest.raises(DecryptionError):
        make_crypto().decrypt(encrypt)


def test_app_id_is_compared_whole():
    encrypt = make_crypto(app_id=APP_ID + "0").encrypt(REPLY)

    with pytest.raises(DecryptionError):
        make_crypto().decrypt(encrypt)


# MESSAGE_ENCRYPT is 20 blocks of 16 bytes: plaintext blocks 0-1 hold the random bytes and the
# length, 1-18 the XML, 18-19 the AppID and the padding. Flipping a bit of ciphertext block n
# garbles plaintext block n and flips the same bit of plaintext block n + 1.
@pytest.mark.parametrize("block", range(20))
@pytest.mark.parametrize("offset", [0, 15])
def test_any_tampering_is_refused_by_the_signature(block, offset):
    """WeChat's ciphertext carries no MAC: ``msg_signature`` is what catches tampering."""
    crypto = make_crypto()
    tampered = flip(MESSAGE_ENCRYPT, block * 16 + offset)

    with pytest.raises(InvalidSignatureError):
        crypto.check_msg_signature(MESSAGE_SIGNATURE, TIMESTAMP, NONCE, tampered)
    try:
        message, _ = crypto.decrypt(tampered)
    except DecryptionError:  # the only exception allowed
        return
    assert message != crypto.decrypt(MESSAGE_ENCRYPT)[0]


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(0, id="length-via-block-0"),
        pytest.param(3, id="length-low-byte-via-block-0"),
        pytest.param(16, id="block-1-random-and-length"),
        pytest.param(31, id="block-1-end"),
        pytest.param(18 * 16, id="block-18-app-id"),
        pytest.param(19 * 16, id="last-block"),
        pytest.param(19 * 16 + 15, id="last-byte"),
    ],
)
def test_tampered_frame_is_a_decryption_error(index):
    with pytest.raises(DecryptionError):
        make_crypto().decrypt(flip(MESSAGE_ENCRYPT, index))


def test_message_encrypt_has_the_blocks_the_tampering_tests_assume():
    assert len(base64.b64decode(MESSAGE_ENCRYPT)) == 20 * 16


RAW = base64.b64decode(MESSAGE_ENCRYPT)


@pytest.mark.parametrize(
    "encrypt",
    [
        pytest.param("", id="empty"),
        pytest.param(base64.b64encode(RAW[:16]).decode(), id="one-block"),
        pytest.param(base64.b64encode(RAW[:-16]).decode(), id="truncated-by-16"),
        pytest.param(base64.b64encode(RAW[:-32]).decode(), id="truncated-by-32"),
        pytest.param(base64.b64encode(RAW[32:]).decode(), id="head-cut"),
        pytest.param(base64.b64encode(RAW[:-1]).decode(), id="not-whole-blocks"),
        pytest.param(base64.b64encode(RAW + b"\0").decode(), id="one-byte-more"),
        pytest.param("not base64!", id="not-base64"),
        pytest.param("加密的消息", id="chinese"),
        pytest.param(MESSAGE_ENCRYPT[:40] + " " + MESSAGE_ENCRYPT[40:], id="space"),
        pytest.param(MESSAGE_ENCRYPT[:-2], id="padding-cut"),
        pytest.param(MESSAGE_ENCRYPT + "==", id="extra-padding"),
    ],
)
def test_malformed_encrypt_is_a_decryption_error(encrypt):
    with pytest.raises(DecryptionError):
        make_crypto().decrypt(encrypt)


def frame(length: int, body: bytes = b"<xml", app_id: str = APP_ID) -> bytes:
    """A plaintext in WeChat's layout, with whatever length field the test wants."""
    return RANDOM + length.to_bytes(4, "big") + body + app_id.encode()


@pytest.mark.parametrize(
    ("plaintext", "decrypts"),
    [
        pytest.param(frame(4), True, id="well-framed"),
        pytest.param(frame(5), False, id="length-one-more"),
        pytest.param(frame(3), False, id="length-one-less"),
        pytest.param(frame(2**32 - 1), False, id="huge-length"),
        pytest.param(frame(4, app_id=""), False, id="no-app-id"),
        pytest.param(frame(4, app_id=APP_ID[:-1]), False, id="app-id-cut"),
        pytest.param(RANDOM + b"\0\0", False, id="no-length"),
        pytest.param(b"", False, id="nothing"),
    ],
)
def test_frame_is_checked(plaintext, decrypts):
    crypto = make_crypto()
    encrypt = seal(plaintext)

    if decrypts:
        assert crypto.decrypt(encrypt) == (b"<xml", 0)
    else:
        with pytest.raises(DecryptionError):
            crypto.decrypt(encrypt)


@pytest.mark.parametrize(
    ("msg_signature", "timestamp", "nonce", "encrypt"),
    [
        pytest.param(MESSAGE_SIGNATURE[:-1] + "e", TIMESTAMP, NONCE, MESSAGE_ENCRYPT, id="sig"),
        pytest.param(MESSAGE_SIGNATURE.upper(), TIMESTAMP, NONCE, MESSAGE_ENCRYPT, id="upper"),
        pytest.param("", TIMESTAMP, NONCE, MESSAGE_ENCRYPT, id="empty"),
        pytest.param("签名", TIMESTAMP, NONCE, MESSAGE_ENCRYPT, id="non-ascii"),
        pytest.param(MESSAGE_SIGNATURE, "1411525904", NONCE, MESSAGE_ENCRYPT, id="timestamp"),
        pytest.param(MESSAGE_SIGNATURE, TIMESTAMP, "461056295", MESSAGE_ENCRYPT, id="nonce"),
        pytest.param(MESSAGE_SIGNATURE, TIMESTAMP, NONCE, REPLY_ENCRYPT, id="other-encrypt"),
        pytest.param(REPLY_SIGNATURE, TIMESTAMP, NONCE, MESSAGE_ENCRYPT, id="other-signature"),
    ],
)
def test_bad_msg_signature_is_refused(msg_signature, timestamp, nonce, encrypt):
    with pytest.raises(InvalidSignatureError):
        make_crypto().check_msg_signature(msg_signature, timestamp, nonce, encrypt)


def test_msg_signature_needs_our_token():
    crypto = WeChatCrypto("654321", AES_KEY, APP_ID)

    with pytest.raises(InvalidSignatureError):
        crypto.check_msg_signature(MESSAGE_SIGNATURE, TIMESTAMP, NONCE, MESSAGE_ENCRYPT)


def test_decode_aes_key():
    assert len(decode_aes_key(AES_KEY)) == 32
    assert decode_aes_key(AES_KEY) != decode_aes_key(NEW_KEY)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(AES_KEY[:42], id="42-chars"),
        pytest.param(AES_KEY + "A", id="44-chars"),
        pytest.param(AES_KEY + "=", id="with-padding"),
        pytest.param("", id="empty"),
        pytest.param(AES_KEY[:42] + "+", id="plus"),
        pytest.param(AES_KEY[:42] + "/", id="slash"),
        pytest.param(AES_KEY[:42] + "-", id="dash"),
        pytest.param(AES_KEY[:42] + "\n", id="newline"),
        pytest.param(AES_KEY[:42] + "é", id="non-ascii-letter"),
        pytest.param(AES_KEY[:42] + "１", id="full-width-digit"),
    ],
)
def test_decode_aes_key_refuses_anything_but_43_letters_or_digits(key):
    with pytest.raises(ValueError):
        decode_aes_key(key)
    with pytest.raises(ValueError):
        WeChatCrypto(TOKEN, key, APP_ID)


def test_a_bad_previous_key_is_refused_at_start():
    with pytest.raises(ValueError):
        WeChatCrypto(TOKEN, NEW_KEY, APP_ID, previous_key=AES_KEY[:42])


def test_repr_never_shows_the_keys_or_the_token():
    crypto = make_crypto(NEW_KEY, previous_key=AES_KEY)

    assert AES_KEY not in repr(crypto)
    assert NEW_KEY not in repr(crypto)
    assert TOKEN not in repr(crypto)
