"""Hardening of the browser side: rate limits, same-origin checks, security headers, sessions."""

import re
from html.parser import HTMLParser

import pytest
import requests
import websocket

from app.views.cookies import issue_binding
from tests.conftest import SCANNER, fixture_xml, scan, sign_in, signed_query

BROWSER_COOKIE = "wxlogin_browser"
EVIL = "https://evil.example"
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def browser(app, origin: str | None = "http://localhost"):
    """A new browser: its own cookies; sends ``origin`` as our pages would (None: no Origin)."""
    new = app.test_client()
    if origin is not None:
        new.environ_base["HTTP_ORIGIN"] = origin
    return new


def from_ip(ip: str) -> dict:
    return {"environ_overrides": {"REMOTE_ADDR": ip}}


def attempts(redis_client) -> int:
    return len(list(redis_client.scan_iter("login:attempt:*")))


# Rate limits on QR creation (each one spends WeChat's daily quota).

LIMIT_3 = {"LOGIN_RATE_LIMIT": "3/minute"}


def assert_rate_limited(response) -> None:
    assert response.status_code == 429
    assert response.is_json
    assert CHINESE.search(response.get_json()["message"])
    assert 0 < int(response.headers["Retry-After"]) <= 60


def returning_browser(app):
    """A browser that has its binding cookie from an earlier visit."""
    returning = browser(app)
    returning.set_cookie(BROWSER_COOKIE, issue_binding(app.secret_key))
    return returning


@pytest.mark.parametrize("app_overrides", [LIMIT_3], ids=["3-a-minute"])
@pytest.mark.parametrize("make_browser", [browser, returning_browser], ids=["new", "returning"])
def test_fourth_qr_code_from_one_ip_is_refused(app, redis_client, make_browser):
    answers = [make_browser(app).post("/api/login/qrcode") for _ in range(4)]

    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200]
    assert_rate_limited(answers[3])
    assert attempts(redis_client) == 3  # WeChat was not asked for the refused one


@pytest.mark.parametrize("app_overrides", [LIMIT_3], ids=["3-a-minute"])
def test_a_browser_asking_again_is_limited_whatever_its_address(app):
    same = returning_browser(app)

    # A new address each time: only the per-browser limit is at work.
    answers = [same.post("/api/login/qrcode", **from_ip(f"10.0.0.{n}")) for n in range(1, 5)]

    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200]
    assert_rate_limited(answers[3])


@pytest.mark.parametrize("app_overrides", [LIMIT_3], ids=["3-a-minute"])
def test_the_limit_is_per_ip_and_browser_not_global(app):
    answers = [browser(app).post("/api/login/qrcode", **from_ip(f"10.0.1.{n}")) for n in range(6)]

    assert [answer.status_code for answer in answers] == [200] * 6


@pytest.mark.parametrize("app_overrides", [LIMIT_3], ids=["3-a-minute"])
def test_addresses_of_one_ipv6_subscriber_share_a_limit(app):
    answers = [
        browser(app).post("/api/login/qrcode", **from_ip(f"2001:db8:1:2::{n:x}"))
        for n in range(1, 5)
    ]
    elsewhere = browser(app).post("/api/login/qrcode", **from_ip("2001:db8:1:3::1"))

    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200]
    assert_rate_limited(answers[3])
    assert elsewhere.status_code == 200


@pytest.mark.parametrize("app_overrides", [{"LOGIN_RATE_LIMIT": "off"}], ids=["off"])
def test_no_limit_when_off(app, redis_client):
    answers = [browser(app).post("/api/login/qrcode") for _ in range(25)]

    assert [answer.status_code for answer in answers] == [200] * 25
    assert attempts(redis_client) == 25


# Same-origin checks: our POSTs and the socket come from our own pages only.

FOREIGN_ORIGINS = [
    pytest.param(None, id="no-origin"),
    pytest.param(EVIL, id="evil"),
    pytest.param("null", id="null"),
    pytest.param("http://localhost.evil.example", id="suffixed-host"),
    pytest.param("http://localhost:8080", id="other-port"),
    pytest.param("https://localhost", id="other-scheme"),
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
@pytest.mark.parametrize("path", ["/api/login/qrcode", "/api/login/redeem", "/api/logout"])
def test_posts_from_another_origin_are_refused(app, redis_client, path, origin):
    response = browser(app, origin).post(path, json={"code": "x" * 43})

    assert response.status_code == 403
    assert response.is_json
    assert CHINESE.search(response.get_json()["message"])
    assert not response.headers.getlist("Set-Cookie")
    assert attempts(redis_client) == 0


def test_a_cross_site_logout_does_not_sign_out(client, redis_client):
    sign_in(client, redis_client)

    refused = client.post("/api/logout", headers={"Origin": EVIL})

    assert refused.status_code == 403
    assert client.get("/api/me").get_json()["openid"] == SCANNER


def test_a_cross_site_redeem_leaves_the_code_usable(client, redis_client):
    scene = client.post("/api/login/qrcode").get_json()["scene"]
    client.post(
        "/wechat/callback",
        query_string=signed_query(openid=SCANNER),
        data=fixture_xml("scan", openid=SCANNER, scene=scene),
        content_type="text/xml",
    )
    code = redis_client.hget(f"login:attempt:{scene}", "code")

    refused = client.post("/api/login/redeem", json={"code": code}, headers={"Origin": EVIL})

    assert refused.status_code == 403
    assert client.get("/api/me").status_code == 401
    assert client.post("/api/login/redeem", json={"code": code}).status_code == 200


@pytest.mark.parametrize(
    "app_overrides",
    [{"LOGIN_ALLOWED_ORIGINS": ("https://app.example",)}],
    ids=["app.example-allowed"],
)
@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://app.example", 200),
        ("https://app.example/", 200),
        ("http://localhost", 200),
        ("http://app.example", 403),
        ("https://app.example.evil.example", 403),
        (EVIL, 403),
    ],
    ids=["listed", "listed-with-slash", "own", "other-scheme", "suffixed-host", "evil"],
)
def test_listed_origins_are_allowed(app, origin, status):
    response = browser(app, origin).post("/api/login/qrcode")

    assert response.status_code == status


@pytest.mark.parametrize("origin", [None, EVIL], ids=["no-origin", "evil"])
def test_me_needs_no_origin(app, client, redis_client, origin):
    sign_in(client, redis_client)
    headers = {} if origin is None else {"Origin": origin}
    del client.environ_base["HTTP_ORIGIN"]

    signed_in = client.get("/api/me", headers=headers)
    stranger = browser(app, origin).get("/api/me")

    assert signed_in.status_code == 200
    assert signed_in.get_json()["openid"] == SCANNER
    assert stranger.status_code == 401


@pytest.fixture
def page_attempt(live_server):
    """A browser of our page against the live server, with its attempt: (cookie header, ws)."""
    with requests.Session() as session:
        session.headers["Origin"] = live_server
        attempt = session.post(live_server + "/api/login/qrcode", timeout=5).json()
        cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    return f"Cookie: {cookie}", attempt["ws"]


@pytest.mark.parametrize(
    "options",
    [
        {"origin": EVIL},
        {"origin": "null"},
        {"origin": "http://127.0.0.1"},  # the right host, another port
        {"suppress_origin": True},
    ],
    ids=["evil", "null", "other-port", "no-origin"],
)
def test_socket_from_another_origin_is_refused(page_attempt, options):
    cookie, url = page_attempt

    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, header=[cookie], timeout=5, **options)

    assert refused.value.status_code == 403


@pytest.mark.parametrize(
    "app_overrides", [{"LOGIN_ALLOWED_ORIGINS": (EVIL,)}], ids=["evil-allowed"]
)
def test_socket_from_a_listed_origin_is_let_in(page_attempt):
    cookie, url = page_attempt

    ws = websocket.create_connection(url, header=[cookie], timeout=5, origin=EVIL)
    try:
        assert '"waiting"' in ws.recv()
    finally:
        ws.shutdown()


# Security headers.


def csp_directives(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    directives = [part.split() for part in policy.split(";") if part.strip()]
    return {name: values for name, *values in directives}


@pytest.mark.parametrize(
    ("method", "path", "origin"),
    [
        ("GET", "/", None),
        ("GET", "/no-such-page", None),
        ("GET", "/api/me", None),
        ("POST", "/api/login/qrcode", "http://localhost"),
        ("POST", "/api/logout", EVIL),
    ],
    ids=["page", "html-error", "api-401", "api-200", "api-403"],
)
def test_security_headers_over_http(app, method, path, origin):
    response = browser(app, origin).open(path, method=method)

    csp = csp_directives(response)
    assert all("'unsafe-inline'" not in values for values in csp.values())
    assert all("'unsafe-eval'" not in values for values in csp.values())
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert "ws://localhost" in csp["connect-src"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in ("no-referrer", "same-origin", "strict-origin")
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("POST", "/api/login/qrcode")])
def test_https_adds_hsts_and_a_wss_socket(app, method, path):
    https = browser(app, "https://localhost")

    response = https.open(path, method=method, base_url="https://localhost")

    assert response.status_code == 200
    max_age = re.fullmatch(r"max-age=(\d+).*", response.headers["Strict-Transport-Security"])
    assert max_age and int(max_age.group(1)) >= 180 * 86400
    assert csp_directives(response)["connect-src"] == ["'self'", "wss://localhost"]


class InlineFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.blocked.append("<script> without src")
        if tag == "style":
            self.blocked.append("<style>")
        self.blocked += [f"{tag} {name}=" for name in names if name == "style" or name[:2] == "on"]


@pytest.mark.parametrize("path", ["/", "/_emulator/phone", "/no-such-page"])
def test_pages_work_under_their_own_csp(client, path):
    page = client.get(path)
    finder = InlineFinder()

    finder.feed(page.get_data(as_text=True))

    assert page.mimetype == "text/html"
    assert finder.blocked == []


# Sessions: server-side, a fresh id at every login, ended for good at logout.


def test_session_cookie_holds_only_an_id(app, client, redis_client):
    sid = sign_in(client, redis_client)

    cookie = client.get_cookie("session")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", sid)
    assert SCANNER not in sid
    assert cookie.http_only
    assert cookie.same_site == "Lax"
    assert not cookie.secure
    stored = app.session_interface.client.get(f"session:{sid}")
    assert stored is not None and SCANNER.encode() in stored


@pytest.mark.parametrize("before", ["own-earlier-login", "planted"])
def test_session_id_changes_at_redeem(app, client, redis_client, before):
    if before == "own-earlier-login":
        old = sign_in(client, redis_client, "oSecurityEarlier000000000001")
    else:  # an attacker's own live session id, planted in the victim's browser
        old = sign_in(browser(app), redis_client, "oSecurityAttacker00000000001")
        client.set_cookie("session", old)

    new = sign_in(client, redis_client)

    assert new != old
    assert not app.session_interface.client.exists(f"session:{old}")
    assert client.get("/api/me").get_json()["openid"] == SCANNER


def test_logout_ends_the_session_on_the_server(app, client, redis_client):
    sid = sign_in(client, redis_client)

    client.post("/api/logout")

    assert not app.session_interface.client.exists(f"session:{sid}")
    replayed = browser(app)
    replayed.set_cookie("session", sid)
    assert replayed.get("/api/me").status_code == 401


# What the scanner reads comes from configuration, not from the request.


@pytest.mark.parametrize(
    ("app_overrides", "site"),
    [
        ({"PUBLIC_BASE_URL": "https://login.example.com"}, "login.example.com"),
        ({"PUBLIC_BASE_URL": "https://login.example.com", "SITE_NAME": "示例商城"}, "示例商城"),
    ],
    ids=["public-base-url", "site-name"],
)
def test_the_scanner_is_told_the_configured_site_never_the_requests_host(app, site):
    forged = app.test_client()
    forged.environ_base["HTTP_ORIGIN"] = "http://evil.example"
    scene = forged.post("/api/login/qrcode", base_url="http://evil.example").get_json()["scene"]

    reply = scan(forged, scene)

    assert f"登录成功：{site}" in reply
    assert "evil.example" not in reply
