"""Message-code login: the page shows a code, the person sends it to the account, the callback
signs that page in. The code's shape and odds, its life in Redis, the guessing limits, the
callback end to end, ``LOGIN_METHODS`` (``auto`` included), and a real Chromium."""

import logging
import re
import time

import limits.storage.redis
import pytest
from limits.storage import storage_from_string
from playwright.sync_api import expect

from app import create_app
from app.login.methods import PROBE_EVERY_SECONDS
from app.login.methods.message import (
    ALPHABET,
    CODE_LENGTH,
    IGNORE_AFTER,
    MAX_HIT_PER_GUESS,
    MAX_LIVE_ATTEMPTS,
    SLOW_DOWN,
    SLOWED_REPLY,
    WRONG_CODE_REPLY,
    MessageCodes,
    as_code,
    new_code,
)
from config import SettingsError, TestingConfig

from .conftest import SCANNER, fixture_xml, page_client, say, signed_query

MESSAGE_ONLY = {"LOGIN_METHODS": "message", "LOGIN_RATE_LIMIT": "off"}
BOTH = {"LOGIN_METHODS": "scan,message", "LOGIN_RATE_LIMIT": "off"}


# The code: easy to type, hard to guess.


def test_the_alphabet_has_no_characters_that_look_alike():
    assert len(set(ALPHABET)) == len(ALPHABET)
    assert set(ALPHABET) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    assert not set(ALPHABET) & set("0O1IL")


def test_one_guess_among_ten_thousand_live_codes_hits_with_at_most_one_in_a_million():
    codes = len(ALPHABET) ** CODE_LENGTH
    assert MAX_LIVE_ATTEMPTS == 10_000 and MAX_HIT_PER_GUESS == 1e-6
    assert codes >= 1e10
    assert MAX_LIVE_ATTEMPTS / codes <= MAX_HIT_PER_GUESS
    # The shortest length that does: one character less would not.
    assert MAX_LIVE_ATTEMPTS / len(ALPHABET) ** (CODE_LENGTH - 1) > MAX_HIT_PER_GUESS
    # The figures the README and the module state.
    assert (len(ALPHABET), CODE_LENGTH, codes) == (31, 7, 27_512_614_111)
    assert f"{MAX_LIVE_ATTEMPTS / codes:.1e}" == "3.6e-07"


def test_new_codes_are_codes_and_differ():
    codes = {new_code() for _ in range(1000)}
    assert len(codes) == 1000
    assert all(as_code(code) == code for code in codes)


@pytest.mark.parametrize(
    "typed, code",
    [
        ("K7M4QXP", "K7M4QXP"),
        ("k7m4qxp", "K7M4QXP"),  # case-insensitive
        ("Ｋ７ｍ４ＱＸＰ", "K7M4QXP"),  # full-width, as Chinese keyboards type
        ("  K7M4QXP \n", "K7M4QXP"),  # surrounding spaces
        ("\u3000K7M4QXP\u3000", "K7M4QXP"),  # full-width spaces
        # Nothing else is forgiven: these are ordinary messages, never guesses.
        ("K7M 4QXP", None),
        ("K7M-4QXP", None),
        ("K7M4QX", None),
        ("K7M4QXPP", None),
        ("K7M4QX0", None),  # 0 is not in the alphabet, nor O
        ("K7M4QXO", None),
        ("K7M4QX1", None),
        ("K7M4QXl", None),  # l (an L once upper case) is not either
        ("验证码K7M4QXP", None),
        ("1", None),  # an answer to a confirmation, never a code
        ("0", None),
        ("", None),
    ],
)
def test_what_counts_as_a_code(typed, code):
    assert as_code(typed) == code


# Codes in Redis.


@pytest.fixture
def codes(redis_url, redis_client):
    return MessageCodes(redis_client, storage_from_string(redis_url), prefix="p:")


def test_a_code_maps_to_its_scene_for_the_attempts_life(codes, redis_client):
    code = codes.issue("scene-a", 120)

    assert codes.scene_of(code) == "scene-a"
    assert 118 <= redis_client.ttl(f"p:login:message-code:{code}") <= 120
    assert codes.scene_of(new_code()) is None


def test_a_code_is_gone_when_its_attempt_expires(codes):
    code = codes.issue("scene-a", 1)
    time.sleep(1.2)
    assert codes.scene_of(code) is None


def test_no_two_live_attempts_share_a_code(redis_url, redis_client):
    candidates = iter(["AAAAAAA", "AAAAAAA", "BBBBBBB"])
    codes = MessageCodes(redis_client, storage_from_string(redis_url), new=lambda: next(candidates))

    assert codes.issue("scene-a", 60) == "AAAAAAA"
    assert codes.issue("scene-b", 60) == "BBBBBBB"  # AAAAAAA was taken: drawn again
    assert codes.scene_of("AAAAAAA") == "scene-a"


def test_issuing_gives_up_rather_than_share_a_code(redis_url, redis_client):
    codes = MessageCodes(redis_client, storage_from_string(redis_url), new=lambda: "AAAAAAA")
    codes.issue("scene-a", 60)
    with pytest.raises(RuntimeError):
        codes.issue("scene-b", 60)
    assert codes.scene_of("AAAAAAA") == "scene-a"


class LimitsClock:
    """The clock of ``limits``' Redis storage (its moving windows are timestamps we pass)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def limits_clock(monkeypatch) -> LimitsClock:
    clock = LimitsClock()
    monkeypatch.setattr(limits.storage.redis, "time", clock)
    return clock


def test_an_openid_sending_codes_is_slowed_then_ignored(codes, limits_clock):
    assert (SLOW_DOWN.amount, SLOW_DOWN.get_expiry()) == (3, 60)
    assert (IGNORE_AFTER.amount, IGNORE_AFTER.get_expiry()) == (10, 3600)
    # Three a minute...
    assert [codes.allowed("oGuesser") for _ in range(4)] == [True, True, True, False]
    assert codes.allowed("oSomeoneElse") is True
    # ...more once the minute has passed...
    limits_clock.now += 61
    assert [codes.allowed("oGuesser") for _ in range(4)] == [True, True, True, False]
    limits_clock.now += 61
    assert [codes.allowed("oGuesser") for _ in range(4)] == [True, True, True, False]
    limits_clock.now += 61
    # ...ten in the hour, then ignored...
    assert [codes.allowed("oGuesser") for _ in range(2)] == [True, None]
    limits_clock.now += 61
    assert codes.allowed("oGuesser") is None
    # ...until the first of them is an hour old.
    limits_clock.now += 3600 - 4 * 61 + 1
    assert codes.allowed("oGuesser") is True


def test_the_counts_are_shared_by_every_worker(redis_url, redis_client, limits_clock):
    workers = [
        MessageCodes(redis_client, storage_from_string(redis_url, key_prefix="p:limits"))
        for _ in range(3)
    ]
    assert [worker.allowed("oGuesser") for worker in workers] == [True, True, True]
    assert workers[0].allowed("oGuesser") is False
    assert all(key.startswith("p:limits:") for key in redis_client.keys("*"))


# The callback, end to end.


def message_app(redis_url, **overrides):
    return create_app(TestingConfig, {"REDIS_URL": redis_url, **MESSAGE_ONLY, **overrides})


@pytest.fixture
def app(redis_url, app_overrides):
    application = message_app(redis_url, **app_overrides)
    yield application
    application.extensions["wechat_login"].close()


def start(client) -> dict:
    answer = client.post("/api/login/qrcode")
    assert answer.status_code == 200
    return answer.get_json()


def attempt_of(app, scene):
    return app.extensions["wechat_login"].attempt(scene)


def test_the_page_gets_a_code_and_the_accounts_qr_code_and_no_login_qr_code(app, client):
    answer = start(client)

    assert re.fullmatch(f"[{ALPHABET}]{{{CODE_LENGTH}}}", answer["message_code"])
    assert answer["account_qr"] == "/account-qr"
    # With scan off, the account's QR code is the one to scan, and WeChat made none.
    assert answer["qrcode"] is None and answer["image"] == "/account-qr"
    assert 0 < answer["expires_in"] <= 180
    assert answer["ws"].endswith(answer["scene"])
    from app.emulator.state import emulator_state

    with app.app_context():
        assert emulator_state().live_tickets() == []
    with client.get("/account-qr") as image:
        assert image.status_code == 200 and image.mimetype == "image/svg+xml"
    # Asking again from the same browser keeps the attempt, and its code.
    assert start(client)["message_code"] == answer["message_code"]


@pytest.mark.parametrize("app_overrides", [BOTH])
def test_with_scan_and_message_the_page_gets_both(client):
    answer = start(client)
    assert answer["qrcode"] and answer["image"].startswith("data:image/svg+xml")
    assert answer["message_code"] and answer["account_qr"] == "/account-qr"


@pytest.mark.parametrize("app_overrides", [{"LOGIN_METHODS": "scan"}])
def test_with_scan_only_the_answer_is_as_before(client):
    answer = start(client)
    assert answer.keys() == {"scene", "qrcode", "image", "expires_in", "ws"}


def test_a_sent_code_signs_the_page_in(app, client, redis_client):
    answer = start(client)
    typed = (
        answer["message_code"].lower().translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"})
    )  # lower case, full-width digits: as a phone may send it

    reply = say(client, f" {typed} ")

    assert "登录成功" in reply and "浏览器" in reply
    attempt = attempt_of(app, answer["scene"])
    assert attempt.status == "confirmed" and attempt.openid == SCANNER
    assert client.post("/api/login/redeem", json={"code": attempt.code}).status_code == 200
    assert client.get("/api/me").get_json()["openid"] == SCANNER
    assert app.extensions["wechat_login"].method_of(answer["scene"]) == "message"


def test_a_wrong_code_is_answered_politely_and_signs_nobody_in(app, client):
    answer = start(client)
    wrong = next(code for code in iter(new_code, None) if code != answer["message_code"])

    assert WRONG_CODE_REPLY in say(client, wrong)
    assert attempt_of(app, answer["scene"]).status == "waiting"


@pytest.mark.parametrize("app_overrides", [{"LOGIN_QR_EXPIRE_SECONDS": 1}])
def test_an_expired_code_is_answered_politely(app, client):
    answer = start(client)
    time.sleep(1.2)
    assert WRONG_CODE_REPLY in say(client, answer["message_code"])


def test_a_new_followers_first_message_signs_in(app, client):
    answer = start(client)
    newcomer = "oNewFollower0000000000000001"
    follow = client.post(
        "/wechat/callback",
        query_string=signed_query(openid=newcomer),
        data=fixture_xml("subscribe_plain", openid=newcomer),
        content_type="text/xml",
    )
    assert follow.get_data(as_text=True) == "success"

    assert "登录成功" in say(client, answer["message_code"], newcomer)
    assert attempt_of(app, answer["scene"]).openid == newcomer
    assert app.extensions["wechat_login"].user(newcomer).login_count == 1


@pytest.mark.parametrize("app_overrides", [{"LOGIN_CONFIRM": "always"}])
def test_the_confirm_policy_applies_to_a_sent_code(app, client):
    answer = start(client)

    assert "回复 1 确认登录" in say(client, answer["message_code"])
    assert attempt_of(app, answer["scene"]).status == "scanned"
    assert "登录成功" in say(client, "1")
    attempt = attempt_of(app, answer["scene"])
    assert attempt.status == "confirmed" and attempt.method == "message"


def test_wechats_retry_of_a_code_gets_the_same_reply_and_signs_in_once(app, client):
    answer = start(client)
    body = (
        fixture_xml("text")
        .replace(b"oABCD1234openid", SCANNER.encode())
        .replace("你好".encode(), answer["message_code"].encode())
    )

    def deliver() -> str:
        return client.post(
            "/wechat/callback",
            query_string=signed_query(openid=SCANNER),
            data=body,
            content_type="text/xml",
        ).get_data(as_text=True)

    first, retry = deliver(), deliver()
    assert "登录成功" in first
    assert re.sub(r"<CreateTime>\d+", "", retry) == re.sub(r"<CreateTime>\d+", "", first)
    assert app.extensions["wechat_login"].user(SCANNER).login_count == 1


def test_a_guesser_is_slowed_even_with_the_right_code(app, client):
    answer = start(client)
    wrong = [code for code in (new_code() for _ in range(4)) if code != answer["message_code"]]

    for code in wrong[:3]:
        assert WRONG_CODE_REPLY in say(client, code)
    assert SLOWED_REPLY in say(client, answer["message_code"])
    assert attempt_of(app, answer["scene"]).status == "waiting"
    # Someone else is not held up by it.
    assert "登录成功" in say(client, answer["message_code"], "oSomeoneElse00000000000000001")


@pytest.mark.parametrize("app_overrides", [{"WECHAT_FORWARD_URL": ""}])
def test_messages_that_are_not_codes_are_not_taken_for_guesses(app, client):
    start(client)
    for text in ("你好", "K7M 4QXP", "hello world"):
        assert say(client, text) == "success"  # left alone: acknowledged, or forwarded
    # "1" and "0" are still answers.
    assert "没有等待你确认的登录" in say(client, "1")
    assert "没有可以退出的登录" in say(client, "0")
    for _ in range(5):  # and none of that counted as a guess
        say(client, "你好")
    assert WRONG_CODE_REPLY in say(client, new_code())


def test_with_scan_only_a_code_shaped_message_is_an_ordinary_message(redis_url):
    application = message_app(redis_url, LOGIN_METHODS="scan")
    try:
        client = page_client(application)
        assert say(client, new_code()) == "success"
    finally:
        application.extensions["wechat_login"].close()


# LOGIN_METHODS.


@pytest.mark.parametrize(
    "overrides, setting",
    [
        ({"LOGIN_METHODS": "scan,sms"}, "LOGIN_METHODS"),
        ({"LOGIN_METHODS": "scan,scan"}, "LOGIN_METHODS"),
        ({"LOGIN_METHODS": ","}, "LOGIN_METHODS"),
        ({"LOGIN_METHODS": "auto,scan"}, "LOGIN_METHODS"),
        # With a real account (no emulator default), message needs the account's QR code.
        ({"WECHAT_APP_ID": "wx1234567890abcdef", "WECHAT_ACCOUNT_QR": ""}, "WECHAT_ACCOUNT_QR"),
        ({"WECHAT_ACCOUNT_QR": "/nonexistent/account-qr.jpg"}, "WECHAT_ACCOUNT_QR"),
    ],
)
def test_refused_settings_are_named(redis_url, overrides, setting):
    with pytest.raises(SettingsError) as refused:
        message_app(redis_url, WECHAT_TOKEN="abcdef", **overrides)
    assert refused.value.setting == setting


def test_an_account_qr_url_is_given_to_the_page_as_it_is(redis_url):
    application = message_app(redis_url, WECHAT_ACCOUNT_QR="https://cdn.example.com/qr.jpg")
    try:
        answer = start(page_client(application))
        assert answer["account_qr"] == answer["image"] == "https://cdn.example.com/qr.jpg"
    finally:
        application.extensions["wechat_login"].close()


AUTO = {"LOGIN_METHODS": "auto", "LOGIN_RATE_LIMIT": "off"}


def inject(client, errcode: int, count: int = 1) -> None:
    answer = client.post(
        "/_emulator/api/faults",
        json={"api": "qrcode/create", "errcode": errcode, "count": count},
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("app_overrides", [AUTO])
def test_auto_offers_message_to_an_account_that_cannot_make_qr_codes(
    app, client, redis_client, caplog
):
    inject(client, 48001)  # the probe's QR code is refused

    with caplog.at_level(logging.WARNING, "app.login.methods"):
        answer = start(client)

    assert answer["message_code"] and answer["qrcode"] is None
    assert "offered instead of scan" in caplog.text
    assert redis_client.get("login:methods:auto") == "message"
    assert PROBE_EVERY_SECONDS - 2 <= redis_client.ttl("login:methods:auto") <= 3600
    # Every worker takes the answer from Redis without asking WeChat again.
    other = page_client(message_app(client.application.config["REDIS_URL"], **AUTO))
    inject(other, 40001, count=5)  # any call to qrcode/create would fail now
    assert start(other)["message_code"]


@pytest.mark.parametrize("app_overrides", [AUTO])
def test_auto_offers_scan_to_an_account_that_can(client, redis_client):
    answer = start(client)
    assert answer["qrcode"] and "message_code" not in answer
    # A verified service account: it may also authorize visitors inside WeChat.
    assert redis_client.get("login:methods:auto") == "scan,wechat_browser"


@pytest.mark.parametrize("app_overrides", [AUTO])
def test_auto_learns_from_a_logins_own_qr_code_being_refused(client, redis_client):
    redis_client.set("login:methods:auto", "scan", ex=PROBE_EVERY_SECONDS)
    inject(client, 48001)  # the account lost the permission since the last probe

    answer = start(client)

    assert answer["message_code"] and answer["qrcode"] is None
    assert redis_client.get("login:methods:auto") == "message"


@pytest.mark.parametrize("app_overrides", [AUTO])
def test_wechat_check_says_auto_offers_message(app, client):
    inject(client, 48001)

    result = app.test_cli_runner().invoke(args=["wechat", "check"])

    lines = result.output.splitlines()
    qr = next(line for line in lines if "QR creation:" in line)
    methods = next(line for line in lines if "login methods:" in line)
    assert qr.startswith("[warn]") and "48001" in qr
    assert "offered: message (LOGIN_METHODS=auto)" in methods
    assert "message-code login instead of scan" in result.output


# A real browser and the emulated phone.


def test_a_desktop_page_is_signed_in_by_a_code_sent_from_the_phone(live_server, new_page):
    page, phone = new_page(), new_page()
    page.goto(live_server + "/")
    expect(page.locator("body")).to_have_attribute("data-state", "waiting")
    expect(page.locator("#message-login")).to_be_visible()
    expect(page.locator("#message-login")).to_contain_text("扫码关注公众号，然后发送以下验证码")
    expect(page.locator("#qr-image")).to_have_attribute("src", "/account-qr")
    code = page.locator("#message-code").inner_text()
    assert as_code(code) == code  # shown in groups, read (and copied) as the code
    page.screenshot(path="/tmp/message-code.png")

    phone.goto(live_server + "/_emulator/phone")
    openid = phone.locator("#openid").inner_text()
    phone.locator("#message-input").fill(code.lower())
    phone.locator("#message-send").click()

    expect(phone.locator(".bubble.reply").last).to_contain_text("登录成功")
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#user-openid")).to_have_text(openid)


def test_a_secret_code_is_never_logged(app, client, caplog):
    with caplog.at_level(logging.DEBUG):
        answer = start(client)
        say(client, answer["message_code"])
    assert answer["message_code"] not in caplog.text
