"""The WeChat callback: URL verification, signatures, malformed input, scans and their replies."""

import time
import xml.etree.ElementTree as ElementTree

import pytest
import redis

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
def test_scan_while_redis_is_down_still_gets_a_quick_reply(app, client, fixture):
    with pytest.raises(redis.ConnectionError):
        app.extensions["redis"].ping()
    body = fixture_xml(fixture, openid=SCANNER, scene="1700000000000-000000000000000000000000")

    started = time.monotonic()
    response = post_callback(client, body)
    elapsed = time.monotonic() - started

    reply = reply_fields(response)
    assert elapsed < 2  # WeChat gives up after 5 s
    assert reply["ToUserName"] == SCANNER
    assert reply["FromUserName"] == ACCOUNT
    assert "刷新" in reply["Content"]


@pytest.mark.parametrize("app_overrides", [REDIS_DOWN], ids=["redis-down"])
@pytest.mark.parametrize("fixture", ["subscribe_plain", "text"])
def test_non_scan_while_redis_is_down_is_acknowledged(app, client, fixture):
    with pytest.raises(redis.ConnectionError):
        app.extensions["redis"].ping()
    response = post_callback(client, fixture_xml(fixture, openid=SCANNER))

    assert response.status_code == 200
    assert response.data == b"success"
