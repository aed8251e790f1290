"""A browser binding that only this site can set: ``__Host-`` cookies over https, values the
server did not issue ignored, live QR codes handed only to their own browser, stolen codes
voided, HSTS for subdomains on request."""

import secrets
from http.cookies import SimpleCookie

import pytest

from app.login.store import hash_secret
from tests.conftest import confirmed_code, fixture_xml, page_client, sign_in, signed_query

SCANNER = "oBindingScanner0000000000001"
HTTPS = {"base_url": "https://localhost", "headers": {"Origin": "https://localhost"}}
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:121.0) Gecko/20100101 Firefox/121.0"


@pytest.fixture
def app_overrides() -> dict:
    return {"LOGIN_RATE_LIMIT": "off"}


def set_cookies(response) -> dict[str, SimpleCookie]:
    """Each ``Set-Cookie`` of ``response``, by cookie name."""
    cookies = {}
    for header in response.headers.getlist("Set-Cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        cookies.update({name: cookie for name in cookie})
    return cookies


def https_client(app):
    client = app.test_client()
    client.environ_base["HTTP_ORIGIN"] = "https://localhost"
    return client


# __Host- over https.


def test_over_https_both_cookies_carry_the_host_prefix(app, redis_client):
    client = https_client(app)
    started = client.post("/api/login/qrcode", base_url="https://localhost")
    scene = started.get_json()["scene"]
    client.post(
        "/wechat/callback",
        query_string=signed_query(openid=SCANNER),
        data=fixture_xml("scan", openid=SCANNER, scene=scene),
        content_type="text/xml",
        base_url="https://localhost",
    )
    code = redis_client.hget(f"login:attempt:{scene}", "code")
    redeemed = client.post("/api/login/redeem", json={"code": code}, base_url="https://localhost")

    assert redeemed.status_code == 200
    for response, name in [(started, "__Host-wxlogin_browser"), (redeemed, "__Host-session")]:
        cookie = set_cookies(response)[name][name]
        assert cookie["secure"] is True
        assert cookie["path"] == "/"
        assert cookie["domain"] == ""
        assert cookie["httponly"] is True
    assert client.get("/api/me", base_url="https://localhost").status_code == 200


def test_over_plain_http_the_cookies_keep_their_names(client, redis_client):
    sign_in(client, redis_client, SCANNER)

    assert client.get_cookie("wxlogin_browser") is not None
    assert client.get_cookie("session") is not None
    assert client.get("/api/me").status_code == 200


def test_over_https_a_planted_cookie_without_the_prefix_is_ignored(app):
    attacker = https_client(app)
    attacker.post("/api/login/qrcode", base_url="https://localhost")
    issued = attacker.get_cookie("__Host-wxlogin_browser", domain="localhost").value
    victim = https_client(app)
    # A sibling subdomain (or plain http) can set a bare-named cookie, never a __Host- one.
    victim.set_cookie("wxlogin_browser", issued, domain="localhost")

    answer = victim.post("/api/login/qrcode", base_url="https://localhost")

    assert "__Host-wxlogin_browser" in set_cookies(answer)
    assert victim.get_cookie("__Host-wxlogin_browser", domain="localhost").value != issued


# Values the server did not issue.


@pytest.mark.parametrize(
    "value",
    [secrets.token_urlsafe(32), secrets.token_urlsafe(32) + "." + "A" * 43, "x" * 43],
    ids=["random", "forged-signature", "chosen"],
)
def test_a_binding_value_the_server_did_not_issue_is_replaced(app, redis_client, value):
    client = page_client(app)
    client.set_cookie("wxlogin_browser", value)

    answer = client.post("/api/login/qrcode")

    assert answer.status_code == 200
    new_value = client.get_cookie("wxlogin_browser").value
    assert new_value != value
    stored = redis_client.hget(f"login:attempt:{answer.get_json()['scene']}", "browser_hash")
    assert stored == hash_secret(new_value)
    assert stored != hash_secret(value)


def test_a_binding_value_is_not_enough_to_be_handed_another_browsers_live_qr_code(app):
    owner = page_client(app)
    mine = owner.post(
        "/api/login/qrcode",
        headers={"User-Agent": CHROME},
        environ_overrides={"REMOTE_ADDR": "198.51.100.7"},
    ).get_json()
    holder = page_client(app)  # holds a copy of the owner's binding value, from elsewhere
    holder.set_cookie("wxlogin_browser", owner.get_cookie("wxlogin_browser").value)

    theirs = holder.post(
        "/api/login/qrcode",
        headers={"User-Agent": FIREFOX},
        environ_overrides={"REMOTE_ADDR": "203.0.113.9"},
    ).get_json()
    again = owner.post(
        "/api/login/qrcode",
        headers={"User-Agent": CHROME},
        environ_overrides={"REMOTE_ADDR": "198.51.100.7"},
    ).get_json()

    assert theirs["scene"] != mine["scene"]
    assert theirs["qrcode"] != mine["qrcode"]
    assert again["scene"] == mine["scene"]  # the browser itself still gets its own back


# A stolen code does not get easier to use.


def test_foreign_redeems_void_the_code_and_the_owner_scans_again(app, client, redis_client):
    code = confirmed_code(client, redis_client, SCANNER)
    thieves = [page_client(app) for _ in range(3)]
    for thief in thieves:
        thief.post("/api/login/qrcode")  # each has a binding of its own
        assert thief.post("/api/login/redeem", json={"code": code}).status_code == 400

    answer = client.post("/api/login/redeem", json={"code": code})

    assert answer.status_code == 400
    assert "重新扫码" in answer.get_json()["message"]
    assert client.get("/api/me").status_code == 401
    assert list(redis_client.scan_iter("login:code:*")) == []


def test_fewer_foreign_redeems_leave_the_code_to_its_owner(app, client, redis_client):
    code = confirmed_code(client, redis_client, SCANNER)
    for _ in range(2):
        thief = page_client(app)
        assert thief.post("/api/login/redeem", json={"code": code}).status_code == 400

    assert client.post("/api/login/redeem", json={"code": code}).status_code == 200


# HSTS for subdomains, on request.


@pytest.mark.parametrize(
    ("app_overrides", "expected"),
    [
        ({}, "max-age=31536000"),
        ({"HSTS_INCLUDE_SUBDOMAINS": True}, "max-age=31536000; includeSubDomains"),
    ],
    ids=["default", "include-subdomains"],
)
def test_hsts_includes_subdomains_only_when_asked(app, expected):
    answer = app.test_client().get("/", base_url="https://localhost")

    assert answer.headers["Strict-Transport-Security"] == expected
