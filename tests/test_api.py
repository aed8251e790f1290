"""The JSON API: start a login, redeem its one-time code, who am I, log out."""

import re
import secrets
import time
from datetime import datetime

import pytest

from app.emulator.state import EmulatorState
from app.wechat.messages import MAX_MESSAGE_BYTES
from tests.conftest import fixture_xml, page_client, scan, signed_query

SCANNER = "oApiScanner00000000000000001"
BROWSER_COOKIE = "wxlogin_browser"
EMULATOR_FAULTS = "/_emulator/api/faults"


def start_attempt(client, **kwargs) -> dict:
    response = client.post("/api/login/qrcode", **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def code_for(redis_client, scene: str) -> str:
    code = redis_client.hget(f"login:attempt:{scene}", "code")
    assert code
    return code


@pytest.fixture
def other_browser(app):
    """A second browser: its own cookies, our page's Origin."""
    return page_client(app)


@pytest.fixture
def code(client, redis_client) -> str:
    """A one-time code for `client`'s attempt, scanned by SCANNER."""
    scene = start_attempt(client)["scene"]
    assert "登录成功" in scan(client, scene, SCANNER)
    return code_for(redis_client, scene)


def test_qrcode_answer_has_everything_the_page_needs(app, client):
    answer = start_attempt(client)

    assert set(answer) == {"scene", "qrcode", "image", "expires_in", "ws"}
    assert answer["expires_in"] == app.config["LOGIN_QR_EXPIRE_SECONDS"] == 180
    # The emulator's url for the QR code (tests/test_emulator.py checks its shape).
    assert answer["qrcode"].startswith("http://localhost/_emulator/q/")
    # What it encodes: tests/test_qrimage.py scans it.
    assert answer["image"].startswith("data:image/svg+xml,%3Csvg ")
    assert answer["ws"] == f"ws://localhost/ws/login/{answer['scene']}"


@pytest.mark.parametrize("app_overrides", [{"LOGIN_QR_EXPIRE_SECONDS": 300}])
def test_qrcode_lives_as_configured(client, redis_client):
    answer = start_attempt(client)

    assert answer["expires_in"] == 300
    assert 295 <= redis_client.ttl(f"login:attempt:{answer['scene']}") <= 300


def test_scene_is_timestamped_unique_and_unguessable(client, other_browser):
    before = time.time() * 1000
    first = start_attempt(client)["scene"]
    after = time.time() * 1000
    second = start_attempt(other_browser)["scene"]

    millis, random_hex = re.fullmatch(r"(\d+)-([0-9a-f]+)", first).groups()
    assert before - 1 <= int(millis) <= after + 1
    assert len(random_hex) * 4 >= 64
    assert len(first) <= 64
    assert first != second


def test_a_browser_asking_again_gets_its_live_qr_code_back(client, other_browser):
    first = start_attempt(client)
    again = start_attempt(client)

    assert again["scene"] == first["scene"]
    assert again["qrcode"] == first["qrcode"]
    assert 0 < again["expires_in"] <= first["expires_in"]
    assert start_attempt(other_browser)["scene"] != first["scene"]


def test_binding_cookie_is_http_only_lax_and_not_secure_over_http(client):
    start_attempt(client)

    cookie = client.get_cookie(BROWSER_COOKIE)
    assert cookie is not None and len(cookie.value) >= 32
    assert cookie.http_only
    assert cookie.same_site == "Lax"
    assert not cookie.secure


@pytest.mark.parametrize(
    ("app_overrides", "base_url", "headers", "secure"),
    [
        ({}, "http://localhost", {}, False),
        ({}, "https://localhost", {}, True),
        ({"TRUSTED_PROXIES": 1}, "http://localhost", {"X-Forwarded-Proto": "https"}, True),
        ({}, "http://localhost", {"X-Forwarded-Proto": "https"}, False),
    ],
    ids=["http", "https", "trusted-proxy-https", "untrusted-forwarded-proto"],
)
def test_https_makes_the_cookie_secure_and_the_socket_wss(client, base_url, headers, secure):
    origin = "https://localhost" if secure else "http://localhost"
    answer = start_attempt(client, base_url=base_url, headers={**headers, "Origin": origin})

    cookie = client.get_cookie(f"__Host-{BROWSER_COOKIE}" if secure else BROWSER_COOKIE)
    assert cookie is not None
    assert cookie.secure is secure
    assert answer["ws"].startswith("wss://" if secure else "ws://")


def test_binding_cookie_is_reused_on_the_next_attempt(client):
    start_attempt(client)
    first = client.get_cookie(BROWSER_COOKIE).value

    response = client.post("/api/login/qrcode")

    assert response.status_code == 200
    assert not any(BROWSER_COOKIE in header for header in response.headers.getlist("Set-Cookie"))
    assert client.get_cookie(BROWSER_COOKIE).value == first


FAULTS_KEY = "emulator:fault:qrcode/create"


@pytest.mark.parametrize(
    ("fault", "errcode"),
    [
        ({"errcode": -1, "count": 2}, -1),  # busy, and busy again on the one retry
        ({"errcode": 48001}, 48001),
        ({"errcode": 40164}, 40164),
    ],
    ids=["busy-twice", "unauthorized", "ip-not-whitelisted"],
)
def test_wechat_failure_is_a_502_and_the_next_attempt_works(client, redis_client, fault, errcode):
    client.post(EMULATOR_FAULTS, json={"api": "qrcode/create", **fault})

    failed = client.post("/api/login/qrcode")

    assert failed.status_code == 502
    assert failed.get_json()["error"] == "wechat_unavailable"
    assert f"（errcode {errcode}）" in failed.get_json()["message"]
    assert redis_client.llen(FAULTS_KEY) == 0  # every injected failure was met
    start_attempt(client)


def test_one_busy_answer_is_retried_and_the_attempt_works(client, redis_client):
    client.post(EMULATOR_FAULTS, json={"api": "qrcode/create", "errcode": -1})

    start_attempt(client)

    assert redis_client.llen(FAULTS_KEY) == 0


@pytest.mark.parametrize("errcode", [45009, 45011], ids=["daily-quota", "minute-quota"])
def test_quota_error_is_a_502_and_wechat_is_not_asked_again_for_a_while(
    client, other_browser, redis_client, errcode
):
    client.post(EMULATOR_FAULTS, json={"api": "qrcode/create", "errcode": errcode, "count": 3})

    failed = client.post("/api/login/qrcode")
    assert redis_client.llen(FAULTS_KEY) == 2
    again = client.post("/api/login/qrcode")
    elsewhere = other_browser.post("/api/login/qrcode")

    for answer in (failed, again, elsewhere):
        assert answer.status_code == 502
        assert answer.get_json()["error"] == "wechat_unavailable"
        assert f"（errcode {errcode}）" in answer.get_json()["message"]
    assert redis_client.llen(FAULTS_KEY) == 2  # the emulator was not called again


def test_full_login_signs_the_browser_in(client, code):
    redeemed = client.post("/api/login/redeem", json={"code": code})

    assert redeemed.status_code == 200
    assert redeemed.get_json()["openid"] == SCANNER
    session = client.get_cookie("session")
    assert session is not None
    assert session.http_only
    assert session.same_site == "Lax"
    me = client.get("/api/me")
    assert me.status_code == 200
    user = me.get_json()
    assert set(user) == {
        "id",
        "openid",
        "unionid",
        "first_login_at",
        "last_login_at",
        "login_count",
        "nickname",
        "headimgurl",
        "identities",
    }
    assert user["openid"] == SCANNER
    assert user["login_count"] == 1
    for field in ("first_login_at", "last_login_at"):
        assert datetime.fromisoformat(user[field]).utcoffset() is not None


def test_session_cookie_is_secure_over_https(client, redis_client):
    https = {"base_url": "https://localhost", "headers": {"Origin": "https://localhost"}}
    scene = start_attempt(client, **https)["scene"]
    assert "登录成功" in scan(client, scene, SCANNER)

    redeemed = client.post(
        "/api/login/redeem", json={"code": code_for(redis_client, scene)}, **https
    )

    assert redeemed.status_code == 200
    assert client.get_cookie("__Host-session").secure


def test_unionid_arrives_in_the_background(client, redis_client):
    scene = start_attempt(client)["scene"]
    EmulatorState(redis_client).follow(SCANNER, scene)  # only followers have a unionid
    assert "登录成功" in scan(client, scene, SCANNER)
    client.post("/api/login/redeem", json={"code": code_for(redis_client, scene)})

    deadline = time.monotonic() + 5
    while (unionid := client.get("/api/me").get_json()["unionid"]) is None:
        assert time.monotonic() < deadline, "unionid never arrived"
        time.sleep(0.05)

    assert unionid == "u" + SCANNER[1:]


def test_a_partial_user_record_never_makes_me_or_redeem_fail(client, redis_client, code):
    # A record holding only what the unionid look-up wrote, as if the rest never was.
    redis_client.delete(f"user:{SCANNER}")
    redis_client.hset(f"user:{SCANNER}", "unionid", "uUnion")

    redeemed = client.post("/api/login/redeem", json={"code": code})
    assert redeemed.status_code == 200
    assert (redeemed.get_json()["unionid"], redeemed.get_json()["login_count"]) == ("uUnion", 1)

    redis_client.hdel(f"user:{SCANNER}", "login_count")
    assert client.get("/api/me").status_code == 401


def test_code_works_once(client, code):
    assert client.post("/api/login/redeem", json={"code": code}).status_code == 200

    again = client.post("/api/login/redeem", json={"code": code})

    assert again.status_code == 400
    assert again.get_json()["error"] == "invalid_code"


@pytest.mark.parametrize("cookie", [None, secrets.token_urlsafe(32)], ids=["none", "other"])
def test_code_from_another_browser_is_refused_and_stays_usable(client, other_browser, code, cookie):
    other = other_browser
    if cookie is not None:
        other.set_cookie(BROWSER_COOKIE, cookie)

    refused = other.post("/api/login/redeem", json={"code": code})

    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_code"
    assert other.get("/api/me").status_code == 401
    assert client.post("/api/login/redeem", json={"code": code}).status_code == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"json": {}},
        {"json": {"code": ""}},
        {"json": {"code": 12345}},
        {"json": {"code": None}},
        {"json": ["code"]},
        {"json": {"code": "x" * 200}},
        {"json": {"code": "no-such-code"}},
        {"data": "code=abc", "content_type": "application/x-www-form-urlencoded"},
        {"data": "{not json", "content_type": "application/json"},
    ],
    ids=[
        "no-body",
        "empty-object",
        "empty-code",
        "number",
        "null",
        "array",
        "too-long",
        "unknown",
        "form",
        "broken-json",
    ],
)
def test_redeem_without_a_good_code_is_a_bad_request(client, kwargs):
    start_attempt(client)

    response = client.post("/api/login/redeem", **kwargs)

    assert response.status_code == 400
    assert response.is_json
    assert response.get_json()["error"] in ("bad_request", "invalid_code")
    assert client.get_cookie("session") is None


def test_me_without_a_session_is_401(client):
    response = client.get("/api/me")

    assert response.status_code == 401
    assert response.get_json()["error"] == "not_signed_in"


def test_logout_ends_the_session(client, code):
    client.post("/api/login/redeem", json={"code": code})
    assert client.get("/api/me").status_code == 200

    response = client.post("/api/logout")

    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    assert client.get("/api/me").status_code == 401


@pytest.mark.parametrize("app_overrides", [{"REDIS_URL": "redis://127.0.0.1:1/0"}], ids=["down"])
@pytest.mark.parametrize("path", ["/api/me", "/"])
def test_a_session_unreadable_for_lack_of_redis_is_a_clear_503(client, caplog, path):
    # Sessions are opened before any view runs: the error must still reach our handlers.
    client.set_cookie("session", "s" * 43)

    response = client.get(path)

    assert response.status_code == 503
    body = response.get_json()["message"] if response.is_json else response.get_data(True)
    assert "服务暂时不可用" in body
    assert "Traceback" not in caplog.text
    assert not [record for record in caplog.records if record.exc_info]


# HTTP hygiene: body limits, hostile JSON, caching


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/login/qrcode"),
        ("POST", "/api/login/redeem"),
        ("POST", "/api/logout"),
        ("GET", "/api/me"),
        ("POST", "/_emulator/api/faults"),
        ("GET", "/"),
    ],
)
def test_every_route_refuses_a_body_over_the_limit_with_413(client, method, path):
    response = client.open(
        path, method=method, data=b"x" * (MAX_MESSAGE_BYTES + 1), content_type="application/json"
    )

    assert response.status_code == 413
    assert response.is_json is path.startswith(("/api/", "/_emulator/api/"))


def test_a_body_at_the_limit_is_read(client):
    body = b'{"code": "no-such-code"}'.ljust(MAX_MESSAGE_BYTES)

    response = client.post("/api/login/redeem", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_code"


@pytest.mark.parametrize("nesting", ["[" * 50_000, '{"code":' * 7_000], ids=["arrays", "objects"])
def test_deeply_nested_json_is_a_bad_request_not_a_500(client, caplog, nesting):
    start_attempt(client)

    response = client.post("/api/login/redeem", data=nesting, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
    assert not [record for record in caplog.records if record.exc_info]


def test_answers_that_carry_identity_or_codes_are_never_stored(client, code):
    scene = start_attempt(client)["scene"]
    answers = {
        "qrcode": client.post("/api/login/qrcode"),
        "me 401": client.get("/api/me"),
        "bad redeem": client.post("/api/login/redeem", json={"code": "no-such-code"}),
        "redeem": client.post("/api/login/redeem", json={"code": code}),
        "me": client.get("/api/me"),
        "logout": client.post("/api/logout"),
        "callback": client.post(
            "/wechat/callback",
            query_string=signed_query(openid=SCANNER),
            data=fixture_xml("scan", openid=SCANNER, scene=scene),
        ),
        "callback 403": client.post("/wechat/callback", query_string={"signature": "forged"}),
        "verification": client.get(
            "/wechat/callback", query_string=signed_query(echostr="2718281828")
        ),
    }

    assert {name: answer.headers.get("Cache-Control") for name, answer in answers.items()} == {
        name: "no-store" for name in answers
    }
