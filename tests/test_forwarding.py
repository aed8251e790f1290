"""Event forwarding (``WECHAT_FORWARD_URL``): what is not a login scan reaches the account's other
handler, a real HTTP server here, signed afresh with the upstream's own Token
(``WECHAT_FORWARD_TOKEN``), and its reply reaches WeChat within 5 s."""

import time
from dataclasses import dataclass, field

import pytest
import redis
from werkzeug.wrappers import Request, Response

from app.login.service import NOTHING_PENDING_REPLY
from app.wechat.crypto import WeChatCrypto
from app.wechat.messages import parse_fields, text_reply
from app.wechat.signature import check_signature, sign
from tests.conftest import TOKEN, fixture_xml, signed_query
from tests.test_callback import (
    KEY,
    SCANNER,
    crypto_for,
    decrypted_reply,
    encrypted_query,
    envelope,
    post_callback,
    reply_fields,
    start_attempt,
)

#: The upstream's own Token (WECHAT_FORWARD_TOKEN): never the account's, so that nothing it
#: receives opens our callback.
UPSTREAM_TOKEN = "upstreamToken2026"
#: What the upstream bot says to every message.
BOT_SAYS = "欢迎关注！回复「菜单」查看服务。"


@dataclass
class Upstream:
    """The account's existing callback handler: checks WeChat's signatures as a real one would,
    records what it received, and answers as told.

    Attributes:
        answer: ``"reply"`` (a text reply, encrypted when the request was), ``"success"``,
            ``"empty"``, ``"error"`` (an HTML 502 page) or ``"slow"`` (a reply after
            ``delay`` seconds).
        received: ``(query, body)`` of each request, in order.
    """

    answer: str = "reply"
    delay: float = 0.0
    crypto: WeChatCrypto | None = None
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __call__(self, environ, start_response):
        request = Request(environ)
        args, body = dict(request.args), request.get_data()
        self.received.append((args, body))
        if not check_signature(UPSTREAM_TOKEN, args["signature"], args["timestamp"], args["nonce"]):
            return Response("bad signature", 403)(environ, start_response)
        message = body
        if args.get("encrypt_type") == "aes":
            encrypt = parse_fields(body)["Encrypt"]
            self.crypto.check_msg_signature(
                args["msg_signature"], args["timestamp"], args["nonce"], encrypt
            )
            message, _ = self.crypto.decrypt(encrypt)
        if self.answer == "slow":
            time.sleep(self.delay)
        if self.answer in ("success", "empty"):
            return Response("success" if self.answer == "success" else "")(environ, start_response)
        if self.answer == "error":
            page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
            return Response(page, 502, mimetype="text/html")(environ, start_response)
        fields = parse_fields(message)
        reply = text_reply(fields["FromUserName"], fields["ToUserName"], BOT_SAYS, 1700000000)
        if args.get("encrypt_type") == "aes":
            reply = self.crypto.envelope(reply)
        return Response(reply, mimetype="application/xml")(environ, start_response)


@pytest.fixture
def upstream(serve) -> tuple[Upstream, str]:
    """The upstream handler served on a free loopback port, and its callback URL."""
    handler = Upstream()
    return handler, serve(handler) + "/wechat"


@pytest.fixture
def extra_settings() -> dict:
    """Settings a test adds to forwarding to the upstream (parametrize to change)."""
    return {}


@pytest.fixture
def app_overrides(upstream, extra_settings) -> dict:
    return {
        "WECHAT_FORWARD_URL": upstream[1],
        "WECHAT_FORWARD_TOKEN": UPSTREAM_TOKEN,
        "LOGIN_RATE_LIMIT": "off",
        **extra_settings,
    }


def upstream_crypto(app) -> WeChatCrypto:
    """The upstream's crypto in safe mode: the account's EncodingAESKey and AppID, its own Token."""
    return WeChatCrypto(UPSTREAM_TOKEN, KEY, app.config["WECHAT_APP_ID"])


def test_text_message_is_forwarded_signed_afresh_and_its_reply_relayed(client, upstream):
    handler, _ = upstream
    body = fixture_xml("text", openid=SCANNER)
    query = signed_query(openid=SCANNER)

    response = post_callback(client, body, query)

    assert reply_fields(response)["Content"] == BOT_SAYS
    [(args, received)] = handler.received
    assert received == body
    assert args["openid"] == SCANNER
    assert check_signature(UPSTREAM_TOKEN, args["signature"], args["timestamp"], args["nonce"])
    assert not check_signature(TOKEN, args["signature"], args["timestamp"], args["nonce"])
    assert abs(int(args["timestamp"]) - time.time()) < 60
    assert "encrypt_type" not in args and "msg_signature" not in args


@pytest.mark.parametrize(
    ("fixture", "scene"),
    [
        ("subscribe_plain", ""),
        ("unsubscribe", ""),
        # The account's other parametric QR codes (a poster), new and returning followers.
        ("subscribe_qrscene", "poster-2026"),
        ("scan", "42"),
    ],
)
def test_events_that_are_not_login_scans_are_forwarded(client, upstream, fixture, scene):
    handler, _ = upstream

    response = post_callback(client, fixture_xml(fixture, openid=SCANNER, scene=scene))

    assert reply_fields(response)["Content"] == BOT_SAYS
    assert len(handler.received) == 1


@pytest.mark.parametrize("fixture", ["subscribe_qrscene", "scan"])
def test_login_scans_are_ours_and_not_forwarded(client, redis_client, upstream, fixture):
    handler, _ = upstream
    scene = start_attempt(client)

    response = post_callback(client, fixture_xml(fixture, openid=SCANNER, scene=scene))

    assert reply_fields(response)["Content"].startswith("登录成功")
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "confirmed"
    assert handler.received == []


def test_an_expired_login_scene_is_answered_here(client, upstream):
    handler, _ = upstream
    body = fixture_xml("scan", openid=SCANNER, scene="1700000000000-000000000000000000000000")

    response = post_callback(client, body)

    assert "二维码已过期" in reply_fields(response)["Content"]
    assert handler.received == []


def text_message(content: str, msg_id: int) -> bytes:
    body = fixture_xml("text", openid=SCANNER).replace("你好".encode(), content.encode())
    return body.replace(b"24602510516126457", str(msg_id).encode())


@pytest.mark.parametrize("content", ["1", "0"])
def test_a_1_or_0_with_no_login_to_act_on_goes_to_the_upstream(client, upstream, content):
    handler, _ = upstream

    response = post_callback(client, text_message(content, 1))

    assert reply_fields(response)["Content"] == BOT_SAYS
    assert len(handler.received) == 1


@pytest.mark.parametrize("extra_settings", [{"LOGIN_CONFIRM": "always"}])
def test_a_1_confirming_a_login_is_ours(client, redis_client, upstream):
    handler, _ = upstream
    scene = start_attempt(client)
    post_callback(client, fixture_xml("scan", openid=SCANNER, scene=scene))

    response = post_callback(client, text_message("1", 2))

    assert reply_fields(response)["Content"].startswith("登录成功")
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "confirmed"
    assert handler.received == []


def test_a_retried_message_is_passed_on_again(client, upstream):
    # WeChat retries only when our answer did not reach it: the upstream's reply was lost, so
    # it gets the retry, as it would without us (with the same MsgId, to dedupe on).
    handler, _ = upstream
    body = text_message("天气", 3)

    first = post_callback(client, body)
    retry = post_callback(client, body)

    assert reply_fields(first)["Content"] == reply_fields(retry)["Content"] == BOT_SAYS
    assert [received for _, received in handler.received] == [body, body]


@pytest.mark.parametrize("answer", ["success", "empty", "error"])
def test_an_upstream_with_nothing_to_relay_gets_wechat_a_success(client, upstream, answer):
    handler, _ = upstream
    handler.answer = answer

    response = post_callback(client, fixture_xml("text", openid=SCANNER))

    assert response.status_code == 200
    assert response.data == b"success"
    assert len(handler.received) == 1


# Nothing listens on port 1.
@pytest.mark.parametrize("extra_settings", [{"WECHAT_FORWARD_URL": "http://127.0.0.1:1/wechat"}])
def test_an_unreachable_upstream_gets_wechat_a_success(client):
    response = post_callback(client, fixture_xml("text", openid=SCANNER))

    assert response.status_code == 200
    assert response.data == b"success"


def test_a_slow_upstream_gets_wechat_a_success_within_five_seconds(client, upstream):
    # The defaults: WECHAT_FORWARD_TIMEOUT_SECONDS is 4, inside WeChat's 5 s.
    handler, _ = upstream
    handler.answer, handler.delay = "slow", 6.0

    started = time.monotonic()
    response = post_callback(client, fixture_xml("text", openid=SCANNER))
    took = time.monotonic() - started

    assert response.data == b"success"
    assert 3.5 < took < 5.0
    assert len(handler.received) == 1


def test_an_upstream_just_in_time_is_relayed(client, upstream):
    handler, _ = upstream
    handler.answer, handler.delay = "slow", 1.0

    response = post_callback(client, fixture_xml("text", openid=SCANNER))

    assert reply_fields(response)["Content"] == BOT_SAYS


@pytest.mark.parametrize("extra_settings", [{"WECHAT_ENCODING_AES_KEY": KEY}], ids=["safe"])
def test_safe_mode_forwards_the_encrypted_envelope_and_relays_the_encrypted_reply(
    app, client, upstream
):
    handler, _ = upstream
    handler.crypto = upstream_crypto(app)
    crypto = crypto_for(app)
    message = fixture_xml("text", openid=SCANNER)
    encrypt = crypto.encrypt(message)
    body = envelope(encrypt)

    response = post_callback(client, body, encrypted_query(encrypt))

    # The upstream signs its reply with its own Token; WeChat checks it with the account's.
    assert decrypted_reply(response, crypto)["Content"] == BOT_SAYS
    [(args, received)] = handler.received
    assert received == body  # still encrypted: the upstream decrypts it with the same key
    assert args["encrypt_type"] == "aes"
    assert args["msg_signature"] == sign(UPSTREAM_TOKEN, args["timestamp"], args["nonce"], encrypt)


@pytest.mark.parametrize(
    "extra_settings", [{}, {"WECHAT_ENCODING_AES_KEY": KEY}], ids=["plaintext", "safe"]
)
def test_nothing_the_upstream_receives_opens_our_callback(app, client, redis_client, upstream):
    # The upstream, its logs or anyone it leaks to holds the forwarded queries: posted back to
    # us with a scan of a live login, they must sign nobody in.
    handler, _ = upstream
    handler.crypto = upstream_crypto(app)
    message = fixture_xml("text", openid=SCANNER)
    if app.extensions["wechat_crypto"] is None:
        post_callback(client, message)
    else:
        encrypt = crypto_for(app).encrypt(message)
        post_callback(client, envelope(encrypt), encrypted_query(encrypt))
    [(args, received)] = handler.received
    scene = start_attempt(client)
    scan = fixture_xml("scan", openid=SCANNER, scene=scene)

    replays = [
        post_callback(client, received, args),
        post_callback(client, scan, {k: v for k, v in args.items() if k != "encrypt_type"}),
        client.get("/wechat/callback", query_string={**args, "echostr": "4815162342"}),
    ]

    assert [replay.status_code for replay in replays] == [403, 403, 403]
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "waiting"


@pytest.mark.parametrize("extra_settings", [{"WECHAT_FORWARD_URL": ""}], ids=["off"])
def test_without_forwarding_a_1_with_nothing_pending_is_answered_politely(client, upstream):
    response = post_callback(client, text_message("1", 4))

    assert reply_fields(response)["Content"] == NOTHING_PENDING_REPLY
    assert upstream[0].received == []


@pytest.mark.parametrize("extra_settings", [{"REDIS_URL": "redis://127.0.0.1:1/0"}])
def test_nothing_is_forwarded_while_replays_cannot_be_told_apart(app, client, upstream):
    with pytest.raises(redis.ConnectionError):
        app.extensions["redis"].ping()

    response = post_callback(client, fixture_xml("text", openid=SCANNER))

    # WeChat delivers it again later; a captured query replayed now reaches nobody.
    assert response.status_code == 503
    assert upstream[0].received == []
