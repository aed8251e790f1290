"""The WeChat callback: URL verification, signatures, replays, malformed input, scans and their
replies, and safe and compatible mode."""

import base64
import time
import xml.etree.ElementTree as ElementTree

import pytest
import redis

from app.wechat.crypto import WeChatCrypto
from app.wechat.errors import DecryptionError
from app.wechat.messages import MAX_MESSAGE_BYTES
from app.wechat.signature import sign
from tests.conftest import TOKEN, fixture_xml, signed_query

SCANNER = "oScanner0000000000000000001"
OTHER_SCANNER = "oScanner0000000000000000002"
ACCOUNT = "gh_0000emulator"
#: Nothing listens on port 1: every Redis call fails at once.
REDIS_DOWN = {"REDIS_URL": "redis://127.0.0.1:1/0"}


def start_attempt(client) -> str:
    """Make a live login attempt as a browser would; its scene."""
    response = client.post("/api/login/qrcode")
    assert response.status_code == 200
    return response.get_json()["scene"]


def post_callback(client, body: bytes, query: dict[str, str] | None = None):
    return client.post(
        "/wechat/callback",
        query_string=signed_query() if query is None else query,
        data=body,
        content_type="text/xml",
    )


def reply_fields(response) -> dict[str, str]:
    """The passive reply's fields, after checking it is reply XML."""
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    root = ElementTree.fromstring(response.data)
    assert root.tag == "xml"
    return {child.tag: child.text or "" for child in root}


def bad_queries() -> list:
    """Callback queries that must be refused, each a ``pytest.param`` named for its flaw."""
    timestamp, nonce = str(int(time.time())), "123456"
    good = {"signature": sign(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
    without = {name: {k: v for k, v in good.items() if k != name} for name in good}
    return [
        pytest.param({}, id="nothing"),
        pytest.param({**good, "signature": sign("othertoken", timestamp, nonce)}, id="other-token"),
        pytest.param({**good, "signature": ""}, id="empty-signature"),
        pytest.param({**good, "signature": good["signature"][:-1]}, id="truncated"),
        pytest.param({**good, "nonce": "654321"}, id="other-nonce"),
        pytest.param(without["signature"], id="no-signature"),
        pytest.param(without["timestamp"], id="no-timestamp"),
        pytest.param(without["nonce"], id="no-nonce"),
    ]


@pytest.mark.parametrize("echostr", ["8374561029abcXYZ", "0123456789", "abc", "1e5", "null"])
def test_verification_echoes_echostr_as_plain_text(client, echostr):
    response = client.get("/wechat/callback", query_string=signed_query(echostr=echostr))

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.data == echostr.encode()


@pytest.mark.parametrize("query", bad_queries())
def test_verification_with_bad_signature_is_refused(client, query):
    response = client.get("/wechat/callback", query_string={**query, "echostr": "4815162342"})

    assert response.status_code == 403
    assert b"4815162342" not in response.data


@pytest.mark.parametrize("query", bad_queries())
def test_post_with_bad_signature_is_refused_and_signs_nobody_in(client, redis_client, query):
    scene = start_attempt(client)

    response = post_callback(
        client, fixture_xml("scan", openid=SCANNER, scene=scene), {**query, "openid": SCANNER}
    )

    assert response.status_code == 403
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "waiting"
    assert not redis_client.exists(f"user:{SCANNER}")


@pytest.mark.parametrize(
    "body",
    [
        fixture_xml("malformed"),
        fixture_xml("xxe"),
        fixture_xml("entity_expansion"),
        b"",
        b"not xml at all",
        b'{"MsgType": "event"}',
        b"<html><body>hello</body></html>",
        b"<xml><MsgType><![CDATA[text]]></MsgType></xml>",
        fixture_xml("text").replace(b"<CreateTime>", b"<CreateTime>x"),
    ],
    ids=[
        "malformed",
        "xxe",
        "entity-expansion",
        "empty",
        "text",
        "json",
        "html",
        "missing-fields",
        "non-numeric-createtime",
    ],
)
def test_malformed_body_is_a_bad_request(client, body):
    response = post_callback(client, body)

    assert response.status_code == 400
    assert b"root:" not in response.data  # nothing of /etc/passwd, whatever happens


def test_oversize_body_is_refused(client):
    body = fixture_xml("text").replace(
        b"</xml>", b"<Pad>" + b"a" * MAX_MESSAGE_BYTES + b"</Pad></xml>"
    )

    response = post_callback(client, body)

    assert response.status_code == 413


@pytest.mark.parametrize("fixture", ["subscribe_qrscene", "scan"])
def test_scan_of_a_live_attempt_signs_the_scanner_in(client, redis_client, fixture):
    scene = start_attempt(client)

    response = post_callback(client, fixture_xml(fixture, openid=SCANNER, scene=scene))

    reply = reply_fields(response)
    assert reply["ToUserName"] == SCANNER
    assert reply["FromUserName"] == ACCOUNT
    assert reply["MsgType"] == "text"
    assert "登录成功" in reply["Content"]
    attempt = redis_client.hgetall(f"login:attempt:{scene}")
    assert attempt["status"] == "confirmed"
    assert attempt["openid"] == SCANNER
    assert redis_client.hget(f"user:{SCANNER}", "login_count") == "1"


@pytest.mark.parametrize("fixture", ["subscribe_qrscene", "scan"])
def test_retried_scan_gets_the_same_reply_and_counts_once(client, redis_client, fixture):
    scene = start_attempt(client)
    body = fixture_xml(fixture, openid=SCANNER, scene=scene)

    first = reply_fields(post_callback(client, body))
    code = redis_client.hget(f"login:attempt:{scene}", "code")
    retried = reply_fields(post_callback(client, body))

    assert retried["Content"] == first["Content"]
    assert retried["ToUserName"] == SCANNER
    assert redis_client.hget(f"user:{SCANNER}", "login_count") == "1"
    assert redis_client.hget(f"login:attempt:{scene}", "code") == code


def expire(redis_client, scene: str) -> None:
    """Put the attempt's QR life in the past while Redis still holds it (the clock decides)."""
    redis_client.hset(f"login:attempt:{scene}", "expires_at", repr(time.time() - 1))


@pytest.mark.parametrize("fixture", ["subscribe_qrscene", "scan"])
@pytest.mark.parametrize("expired", [False, True], ids=["unknown", "expired"])
def test_scan_of_unknown_or_expired_scene_asks_to_refresh(client, redis_client, fixture, expired):
    if expired:
        scene = start_attempt(client)
        expire(redis_client, scene)
    else:
        scene = "1700000000000-000000000000000000000000"

    reply = reply_fields(post_callback(client, fixture_xml(fixture, openid=SCANNER, scene=scene)))

    assert reply["ToUserName"] == SCANNER
    assert "刷新" in reply["Content"]
    assert "登录成功" not in reply["Content"]
    assert redis_client.hget(f"login:attempt:{scene}", "status") in (None, "waiting")
    assert not redis_client.exists(f"user:{SCANNER}")


def test_second_scanner_of_a_confirmed_scene_is_told_it_was_used(client, redis_client):
    scene = start_attempt(client)
    reply_fields(post_callback(client, fixture_xml("scan", openid=SCANNER, scene=scene)))
    first = redis_client.hgetall(f"login:attempt:{scene}")

    body = fixture_xml("subscribe_qrscene", openid=OTHER_SCANNER, scene=scene)
    reply = reply_fields(post_callback(client, body))

    assert reply["ToUserName"] == OTHER_SCANNER
    assert "已被" in reply["Content"]
    assert "登录成功" not in reply["Content"]
    assert redis_client.hgetall(f"login:attempt:{scene}") == first
    assert first["openid"] == SCANNER
    assert not redis_client.exists(f"user:{OTHER_SCANNER}")


@pytest.mark.parametrize("fixture", ["subscribe_plain", "unsubscribe", "text"])
def test_messages_that_are_not_scans_are_acknowledged(client, redis_client, fixture):
    scene = start_attempt(client)

    response = post_callback(client, fixture_xml(fixture, openid=SCANNER, scene=scene))

    assert response.status_code == 200
    assert response.data == b"success"
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "waiting"


@pytest.mark.parametrize("app_overrides", [REDIS_DOWN], ids=["redis-down"])
@pytest.mark.parametrize("fixture", ["subscribe_qrscene", "scan"])
def test_scan_while_redis_is_down_is_not_acknowledged_so_wechat_retries(app, client, fixture):
    with pytest.raises(redis.ConnectionError):
        app.extensions["redis"].ping()
    body = fixture_xml(fixture, openid=SCANNER, scene="1700000000000-000000000000000000000000")

    started = time.monotonic()
    response = post_callback(client, body)
    elapsed = time.monotonic() - started

    # A scan that could not be recorded is neither lost nor answered "登录成功": WeChat retries
    # a non-200 answer. It comes well within WeChat's 5 s, after a brief retry.
    assert response.status_code == 503
    assert "登录成功".encode() not in response.data
    assert 1.5 <= elapsed < 4


@pytest.mark.parametrize("app_overrides", [REDIS_DOWN], ids=["redis-down"])
@pytest.mark.parametrize("fixture", ["subscribe_plain", "text"])
def test_non_scan_while_redis_is_down_is_acknowledged(app, client, fixture):
    with pytest.raises(redis.ConnectionError):
        app.extensions["redis"].ping()
    response = post_callback(client, fixture_xml(fixture, openid=SCANNER))

    assert response.status_code == 200
    assert response.data == b"success"


# Replays: a signed query is good for one request, GET or POST, inside a five-minute window.


def browser(app):
    """Another browser: its own cookies, our page's Origin."""
    other = app.test_client()
    other.environ_base["HTTP_ORIGIN"] = "http://localhost"
    return other


def query_at(timestamp: str, nonce: str = "4815162342") -> dict[str, str]:
    """A correctly signed callback query with the given ``timestamp``."""
    return {"signature": sign(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}


@pytest.mark.parametrize("replayed", ["same-scan", "scan-of-another-qr"])
def test_a_signed_query_is_accepted_once(app, client, redis_client, replayed):
    scene = start_attempt(client)
    query = signed_query(openid=SCANNER)
    reply_fields(post_callback(client, fixture_xml("scan", openid=SCANNER, scene=scene), query))
    other_scene = start_attempt(browser(app))
    keys = [f"login:attempt:{scene}", f"login:attempt:{other_scene}", f"user:{SCANNER}"]
    before = [redis_client.hgetall(key) for key in keys]

    if replayed == "same-scan":
        body = fixture_xml("scan", openid=SCANNER, scene=scene)
    else:
        body = fixture_xml("scan", openid=OTHER_SCANNER, scene=other_scene)
    response = post_callback(client, body, query)

    assert response.status_code == 403
    assert [redis_client.hgetall(key) for key in keys] == before
    assert before[1]["status"] == "waiting"
    assert not redis_client.exists(f"user:{OTHER_SCANNER}")


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-301, False), (301, False), (-86400, False), (-290, True), (290, True)],
    ids=["301s-old", "301s-ahead", "a-day-old", "290s-old", "290s-ahead"],
)
def test_post_timestamp_must_be_within_five_minutes(client, redis_client, offset, accepted):
    scene = start_attempt(client)
    # Rounded, not truncated: 301 s stays more than 300 s away while the request is made.
    query = query_at(str(round(time.time()) + offset))

    response = post_callback(client, fixture_xml("scan", openid=SCANNER, scene=scene), query)

    assert response.status_code == (200 if accepted else 403)
    status = redis_client.hget(f"login:attempt:{scene}", "status")
    assert status == ("confirmed" if accepted else "waiting")


@pytest.mark.parametrize(
    "timestamp",
    [
        lambda now: "abc",
        lambda now: f"{now}.0",
        lambda now: f"+{now}",
        lambda now: f" {now}",
        lambda now: f"{now}\n",
        lambda now: str(now).translate(str.maketrans("0123456789", "０１２３４５６７８９")),
        # Found by the property tests: too large for a float (a 500), and for int() (a 500).
        lambda now: "1" * 310,
        lambda now: "9" * 5000,
    ],
    ids=[
        "letters",
        "decimal",
        "plus-sign",
        "leading-space",
        "trailing-newline",
        "full-width",
        "too-big-for-a-float",
        "too-long-for-int",
    ],
)
def test_post_with_a_malformed_timestamp_is_refused(client, redis_client, timestamp):
    # int() reads most of these; only plain ASCII digits are a WeChat timestamp.
    scene = start_attempt(client)
    query = query_at(timestamp(int(time.time())))

    response = post_callback(client, fixture_xml("scan", openid=SCANNER, scene=scene), query)

    assert response.status_code == 403
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "waiting"


@pytest.mark.parametrize("first", ["GET", "POST"])
@pytest.mark.parametrize("then", ["GET", "POST"])
def test_a_signed_query_is_accepted_once_whatever_the_method(client, first, then):
    # A verification GET's query could be posted with a forged scan, so GET spends it too.
    query = signed_query(echostr="8374561029")

    answers = [
        client.open("/wechat/callback", method=method, query_string=query, data=fixture_xml("text"))
        for method in (first, then)
    ]

    assert [answer.status_code for answer in answers] == [200, 403]


@pytest.mark.parametrize("offset", [-301, 301], ids=["301s-old", "301s-ahead"])
def test_verification_with_a_stale_timestamp_is_refused(client, offset):
    query = {**query_at(str(round(time.time()) + offset)), "echostr": "8374561029"}

    response = client.get("/wechat/callback", query_string=query)

    assert response.status_code == 403
    assert b"8374561029" not in response.data


# Safe and compatible mode.

KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PREVIOUS_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
#: Not ours: WeChat's published example key.
OTHER_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
SAFE = {"WECHAT_ENCODING_AES_KEY": KEY}
COMPATIBLE = {**SAFE, "WECHAT_ENCRYPT_MODE": "compatible"}
ROTATED = {**SAFE, "WECHAT_ENCODING_AES_KEY_PREVIOUS": PREVIOUS_KEY}


def crypto_for(app, key: str = KEY) -> WeChatCrypto:
    """What WeChat encrypts with: one key and the account's AppID."""
    return WeChatCrypto(TOKEN, key, app.config["WECHAT_APP_ID"])


def encrypted_query(encrypt: str, **extra: str) -> dict[str, str]:
    """The query of an encrypted callback: ``signature`` and ``msg_signature`` both good."""
    query = signed_query(openid=SCANNER, encrypt_type="aes", **extra)
    query.setdefault("msg_signature", sign(TOKEN, query["timestamp"], query["nonce"], encrypt))
    return query


def envelope(encrypt: str, plaintext: bytes | None = None) -> bytes:
    """The encrypted body: safe mode sends the account id and ``Encrypt`` only; compatible
    mode puts ``Encrypt`` beside the plaintext fields."""
    element = f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>".encode()
    if plaintext is not None:
        return plaintext.replace(b"</xml>", element + b"</xml>")
    return f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>".encode() + element + b"</xml>"


def post_encrypted(client, message: bytes, crypto: WeChatCrypto, compatible: bool = False):
    encrypt = crypto.encrypt(message)
    body = envelope(encrypt, message if compatible else None)
    return post_callback(client, body, encrypted_query(encrypt))


def decrypted_reply(response, crypto: WeChatCrypto) -> dict[str, str]:
    """The encrypted reply envelope, checked and opened: the passive reply's fields."""
    fields = reply_fields(response)
    assert set(fields) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert abs(int(fields["TimeStamp"]) - time.time()) < 60
    crypto.check_msg_signature(
        fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"], fields["Encrypt"]
    )
    message, _ = crypto.decrypt(fields["Encrypt"])
    return {child.tag: child.text or "" for child in ElementTree.fromstring(message)}


def assert_nobody_signed_in(redis_client, scene: str) -> None:
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "waiting"
    assert not redis_client.exists(f"user:{SCANNER}")


@pytest.mark.parametrize("app_overrides", [SAFE], ids=["safe"])
@pytest.mark.parametrize("extra", [{}, {"encrypt_type": "raw"}], ids=["no-type", "raw"])
def test_safe_mode_refuses_plaintext_posts(client, redis_client, extra):
    scene = start_attempt(client)

    response = post_callback(
        client, fixture_xml("scan", openid=SCANNER, scene=scene), signed_query(**extra)
    )

    assert response.status_code == 400
    assert_nobody_signed_in(redis_client, scene)


@pytest.mark.parametrize("app_overrides", [SAFE], ids=["safe"])
def test_safe_mode_answers_verification_in_plaintext(client):
    response = client.get("/wechat/callback", query_string=signed_query(echostr="8374561029"))

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.data == b"8374561029"


@pytest.mark.parametrize("app_overrides", [SAFE], ids=["safe"])
@pytest.mark.parametrize("fixture", ["subscribe_qrscene", "scan"])
def test_encrypted_scan_gets_an_encrypted_reply(app, client, redis_client, fixture):
    scene = start_attempt(client)
    crypto = crypto_for(app)

    response = post_encrypted(client, fixture_xml(fixture, openid=SCANNER, scene=scene), crypto)

    reply = decrypted_reply(response, crypto)
    assert reply["ToUserName"] == SCANNER
    assert reply["FromUserName"] == ACCOUNT
    assert reply["MsgType"] == "text"
    assert "登录成功" in reply["Content"]
    assert SCANNER.encode() not in response.data  # only inside the ciphertext
    attempt = redis_client.hgetall(f"login:attempt:{scene}")
    assert (attempt["status"], attempt["openid"]) == ("confirmed", SCANNER)


@pytest.mark.parametrize("app_overrides", [SAFE], ids=["safe"])
@pytest.mark.parametrize(
    "msg_signature",
    [
        lambda query, encrypt: sign(TOKEN, query["timestamp"], query["nonce"], encrypt + "A"),
        lambda query, encrypt: sign("othertoken", query["timestamp"], query["nonce"], encrypt),
        lambda query, encrypt: query["signature"],
        lambda query, encrypt: "",
        lambda query, encrypt: None,
    ],
    ids=["over-other-encrypt", "other-token", "plain-signature", "empty", "missing"],
)
def test_bad_msg_signature_is_refused(app, client, redis_client, msg_signature):
    scene = start_attempt(client)
    encrypt = crypto_for(app).encrypt(fixture_xml("scan", openid=SCANNER, scene=scene))
    query = signed_query(openid=SCANNER, encrypt_type="aes")
    signature = msg_signature(query, encrypt)
    if signature is not None:
        query["msg_signature"] = signature

    response = post_callback(client, envelope(encrypt), query)

    assert response.status_code == 403
    assert_nobody_signed_in(redis_client, scene)


def flip_byte(encrypt: str, index: int) -> str:
    raw = bytearray(base64.b64decode(encrypt))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def drop_bytes(encrypt: str, count: int) -> str:
    return base64.b64encode(base64.b64decode(encrypt)[:-count]).decode()


@pytest.mark.parametrize("app_overrides", [SAFE], ids=["safe"])
@pytest.mark.parametrize(
    "make_encrypt",
    [
        lambda app, message: crypto_for(app, OTHER_KEY).encrypt(message),
        lambda app, message: WeChatCrypto(TOKEN, KEY, "wx0000000000000other").encrypt(message),
        lambda app, message: flip_byte(crypto_for(app).encrypt(message), 0),
        lambda app, message: flip_byte(crypto_for(app).encrypt(message), -1),
        lambda app, message: drop_bytes(crypto_for(app).encrypt(message), 16),
        lambda app, message: drop_bytes(crypto_for(app).encrypt(message), 1),
        lambda app, message: crypto_for(app).encrypt(message)[:-3],
        lambda app, message: "not base64 at all!",
        lambda app, message: "",
        lambda app, message: crypto_for(app).encrypt(b"not xml at all"),
    ],
    ids=[
        "wrong-key",
        "wrong-appid",
        "tampered-length",
        "tampered-padding",
        "a-block-short",
        "not-whole-blocks",
        "truncated-base64",
        "not-base64",
        "empty",
        "not-xml-inside",
    ],
)
def test_undecryptable_message_is_a_bad_request(app, client, redis_client, make_encrypt):
    scene = start_attempt(client)
    encrypt = make_encrypt(app, fixture_xml("scan", openid=SCANNER, scene=scene))

    # msg_signature is good: it is the decryption that must refuse.
    response = post_callback(client, envelope(encrypt), encrypted_query(encrypt))

    assert response.status_code == 400
    assert_nobody_signed_in(redis_client, scene)


@pytest.mark.parametrize("app_overrides", [ROTATED], ids=["rotated"])
@pytest.mark.parametrize(
    ("sender_key", "other_key"),
    [(PREVIOUS_KEY, KEY), (KEY, PREVIOUS_KEY)],
    ids=["previous-key", "current-key"],
)
def test_after_a_key_rotation_each_key_is_answered_with_itself(
    app, client, redis_client, sender_key, other_key
):
    scene = start_attempt(client)
    sender = crypto_for(app, sender_key)

    response = post_encrypted(client, fixture_xml("scan", openid=SCANNER, scene=scene), sender)

    assert "登录成功" in decrypted_reply(response, sender)["Content"]
    with pytest.raises(DecryptionError):
        crypto_for(app, other_key).decrypt(reply_fields(response)["Encrypt"])
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "confirmed"


@pytest.mark.parametrize("app_overrides", [COMPATIBLE], ids=["compatible"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
def test_compatible_mode_takes_both_kinds_and_answers_in_kind(app, client, redis_client, encrypted):
    scene = start_attempt(client)
    message = fixture_xml("scan", openid=SCANNER, scene=scene)

    if encrypted:
        crypto = crypto_for(app)
        reply = decrypted_reply(post_encrypted(client, message, crypto, compatible=True), crypto)
    else:
        reply = reply_fields(post_callback(client, message))
        assert "Encrypt" not in reply

    assert reply["ToUserName"] == SCANNER
    assert "登录成功" in reply["Content"]
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "confirmed"


@pytest.mark.parametrize("app_overrides", [COMPATIBLE], ids=["compatible"])
def test_compatible_mode_believes_the_ciphertext_not_the_plaintext_beside_it(
    app, client, redis_client
):
    scene = start_attempt(client)
    decoy = start_attempt(browser(app))
    encrypt = crypto_for(app).encrypt(fixture_xml("scan", openid=SCANNER, scene=scene))
    beside = fixture_xml("scan", openid=OTHER_SCANNER, scene=decoy)

    response = post_callback(client, envelope(encrypt, beside), encrypted_query(encrypt))

    assert decrypted_reply(response, crypto_for(app))["ToUserName"] == SCANNER
    assert redis_client.hget(f"login:attempt:{scene}", "openid") == SCANNER
    assert redis_client.hget(f"login:attempt:{decoy}", "status") == "waiting"


def test_encrypted_message_without_a_key_configured_is_a_bad_request(app, client, redis_client):
    scene = start_attempt(client)
    crypto = crypto_for(app)

    response = post_encrypted(client, fixture_xml("scan", openid=SCANNER, scene=scene), crypto)

    assert response.status_code == 400
    assert_nobody_signed_in(redis_client, scene)
