"""Website application login (``open_qr``): the redirect to WeChat's QR page, the state, the
code exchange and ``sns/userinfo`` through Authlib against the emulated WeChat, the errors, the
unionid that makes the Official Account's person and the website's one, linking and unlinking
from the signed-in view, the settings, and the whole thing in headless Chromium."""

import re
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from playwright.sync_api import expect

from app import create_app
from app.emulator.oauth import unionid_of, website_openid
from app.emulator.state import EmulatorState
from app.login.methods.open_qr import WebsiteOAuth, qrconnect_url
from app.wechat.errors import WeChatAPIError
from config import SettingsError, TestingConfig
from tests.conftest import page_client, say, scan, sign_in

ON = {"LOGIN_METHODS": "scan,wechat_browser,open_qr"}


@pytest.fixture
def app_overrides() -> dict:
    return ON


def to_wechat(browser) -> str:
    """Start a website login: the URL of WeChat's QR page we are sent to."""
    start = browser.get("/login/open")
    assert start.status_code == 302
    return start.location


def confirm(browser, qrconnect: str, decision: str = "allow") -> str:
    """The phone's answer on WeChat's page: where WeChat sends the browser back."""
    url = urlsplit(qrconnect)
    assert browser.get(qrconnect).status_code == 200
    back = browser.post(url.path, data={**dict(parse_qsl(url.query)), "decision": decision})
    assert back.status_code == 302
    return back.location


def me(browser) -> dict | None:
    answer = browser.get("/api/me")
    return answer.get_json() if answer.status_code == 200 else None


def refusal(answer) -> str:
    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    assert 'href="/"' in page  # a way back
    return page


def test_the_redirect_names_wechats_qr_page_with_the_website_appid(app):
    browser = page_client(app)
    assert "网站应用扫码登录" in browser.get("/").get_data(as_text=True)

    url = urlsplit(to_wechat(browser))

    assert url.path == "/_emulator/open/connect/qrconnect"
    assert url.fragment == "wechat_redirect"
    params = parse_qsl(url.query)
    assert [name for name, _ in params] == [
        "appid",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
    ]
    values = dict(params)
    assert values["appid"] == app.config["WECHAT_OPEN_APP_ID"] != app.config["WECHAT_APP_ID"]
    assert values["redirect_uri"] == "http://localhost/login/open/callback"
    assert (values["response_type"], values["scope"]) == ("code", "snsapi_login")
    assert re.fullmatch(r"[0-9a-f]{32}", values["state"])


def test_qrconnect_url_keeps_wechats_order_and_fragment():
    url = qrconnect_url("https://open.weixin.qq.com/", "wxA", "https://x.example/cb?a=1", "s1")
    assert url == (
        "https://open.weixin.qq.com/connect/qrconnect?appid=wxA&redirect_uri="
        "https%3A%2F%2Fx.example%2Fcb%3Fa%3D1&response_type=code&scope=snsapi_login&state=s1"
        "#wechat_redirect"
    )


def test_a_website_login_signs_in_with_the_profile(app, redis_client):
    browser = page_client(app)
    landed = browser.get(confirm(browser, to_wechat(browser)))

    assert (landed.status_code, landed.location) == (302, "/")
    phone = browser.get_cookie("emulator_openid").value
    user = me(browser)
    assert user["openid"] is None  # never used the Official Account
    assert user["unionid"] == unionid_of(phone)
    assert user["nickname"].startswith("模拟用户")
    assert user["headimgurl"].startswith("https://thirdwx.qlogo.cn/")
    assert user["identities"] == [
        {
            "method": "open_qr",
            "appid": app.config["WECHAT_OPEN_APP_ID"],
            "openid": website_openid(phone),
        }
    ]
    (signin,) = redis_client.keys("login:signin:*")
    assert redis_client.hget(signin, "method") == "open_qr"
    # Signed out, the website identity's sign-in is forgotten like any other.
    assert browser.post("/api/logout").status_code == 200
    assert me(browser) is None


def test_the_same_phone_by_oa_scan_and_by_website_is_one_person(app, redis_client):
    browser = page_client(app)
    browser.get(confirm(browser, to_wechat(browser)))
    phone = browser.get_cookie("emulator_openid").value
    web_user = me(browser)
    browser.post("/api/logout")

    # The same person scans the Official Account's QR code (a follower: user/info gives the
    # unionid, off the callback's path).
    EmulatorState(redis_client).follow(phone, "")
    scene = browser.post("/api/login/qrcode").get_json()["scene"]
    scan(browser, scene, phone)
    code = redis_client.hget(f"login:attempt:{scene}", "code")
    assert browser.post("/api/login/redeem", json={"code": code}).status_code == 200

    oa_user = me(browser)
    # Until user/info answers, the scan may be a person of its own; then they are joined.
    for _ in range(100):
        oa_user = me(browser)
        if oa_user["id"] == web_user["id"]:
            break
        time.sleep(0.05)
    assert oa_user["id"] == web_user["id"]
    assert oa_user["openid"] == phone
    assert {i["method"] for i in oa_user["identities"]} == {"scan", "open_qr"}


@pytest.mark.parametrize("decision", ["cancel"])
def test_a_cancel_on_the_phone_ends_on_a_clear_page(app, decision):
    browser = page_client(app)
    back = confirm(browser, to_wechat(browser), decision)

    assert "取消了登录" in refusal(browser.get(back))
    assert me(browser) is None


def test_state_is_single_use_and_bound_to_the_browser(app):
    browser, other = page_client(app), page_client(app)
    back = confirm(browser, to_wechat(browser))
    path, query = urlsplit(back).path, dict(parse_qsl(urlsplit(back).query))

    assert "已失效" in refusal(other.get(path, query_string=query))  # another browser
    assert "已失效" in refusal(browser.get(path, query_string=query))  # spent by the try
    assert me(browser) is None


def test_a_used_code_is_40163_and_a_made_up_one_40029(app):
    browser = page_client(app)
    first = dict(parse_qsl(urlsplit(confirm(browser, to_wechat(browser))).query))
    browser.get("/login/open/callback", query_string=first)
    browser.post("/api/logout")

    fresh = dict(parse_qsl(urlsplit(to_wechat(browser)).query))["state"]
    again = browser.get("/login/open/callback", query_string={**first, "state": fresh})
    assert "40163" in refusal(again)

    fresh = dict(parse_qsl(urlsplit(to_wechat(browser)).query))["state"]
    made_up = browser.get("/login/open/callback", query_string={"code": "0" * 32, "state": fresh})
    assert "40029" in refusal(made_up)
    assert me(browser) is None


def test_a_wrong_website_secret_is_40125_on_a_clear_page_and_never_shows_the_secret(app):
    browser = page_client(app)
    back = confirm(browser, to_wechat(browser))
    app.extensions["open_qr"]._oauth._secret = "wrong-secret"

    page = refusal(browser.get(back))

    assert "40125" in page and "wrong-secret" not in page


def test_the_oauth_client_sends_wechats_parameters_and_raises_its_errcodes():
    seen = []

    class Transport(requests.adapters.BaseAdapter):
        def send(self, request, **kwargs):
            seen.append(request.url)
            response = requests.Response()
            response.status_code = 200
            response._content = b'{"errcode":40029,"errmsg":"invalid code"}'
            return response

        def close(self):
            pass

    oauth = WebsiteOAuth(
        "wxWeb",
        "s3cret",
        api_base="https://api.example",
        mount=lambda session: session.mount("https://", Transport()),
    )

    with pytest.raises(WeChatAPIError) as raised:
        oauth.visitor("CODE")

    assert raised.value.errcode == 40029
    url = urlsplit(seen[0])
    assert url.path == "/sns/oauth2/access_token"
    assert parse_qsl(url.query) == [
        ("appid", "wxWeb"),
        ("secret", "s3cret"),
        ("code", "CODE"),
        ("grant_type", "authorization_code"),
    ]
    assert "s3cret" not in repr(oauth)


def test_off_unless_listed(redis_url):
    app = create_app(TestingConfig, {"REDIS_URL": redis_url})
    try:
        assert app.test_client().get("/login/open").status_code == 404
        assert "网站应用扫码登录" not in app.test_client().get("/").get_data(as_text=True)
    finally:
        app.extensions["wechat_login"].close()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"WECHAT_OPEN_APP_ID": "wxWeb"}, "WECHAT_OPEN_APP_ID, WECHAT_OPEN_APP_SECRET"),
        (
            {"WECHAT_APP_ID": "wxOA", "WECHAT_APP_SECRET": "x", "LOGIN_METHODS": "scan,open_qr"},
            "WECHAT_OPEN_APP_ID",
        ),
        (
            {
                "WECHAT_APP_ID": "wxOA",
                "WECHAT_APP_SECRET": "x",
                "WECHAT_OPEN_APP_ID": "wxOA",
                "WECHAT_OPEN_APP_SECRET": "y",
            },
            "WECHAT_OPEN_APP_ID",
        ),
    ],
    ids=["secret-missing", "open_qr-without-appid", "the-accounts-appid"],
)
def test_the_website_settings_are_checked_at_start(redis_url, overrides, named):
    with pytest.raises(SettingsError) as refused:
        create_app(TestingConfig, {"REDIS_URL": redis_url, **overrides})
    assert str(refused.value).startswith(named)


# Link and unlink from the signed-in view.


def test_link_attaches_the_website_identity_to_the_signed_in_person(app, redis_client):
    browser = page_client(app)
    # Signed in by scan, as someone whose accounts are not bound (no unionid).
    scene = browser.post("/api/login/qrcode").get_json()["scene"]
    scan(browser, scene, "oNotBound000000000000000000001")
    code = redis_client.hget(f"login:attempt:{scene}", "code")
    browser.post("/api/login/redeem", json={"code": code})
    person = me(browser)

    answer = browser.post("/login/open/link")
    assert answer.status_code == 200
    landed = browser.get(confirm(browser, answer.get_json()["redirect"]))

    assert (landed.status_code, landed.location) == (302, "/")
    linked = me(browser)
    assert linked["id"] == person["id"]
    assert {i["method"] for i in linked["identities"]} == {"scan", "open_qr"}
    assert linked["nickname"]

    # Unlink: refused for the last one, allowed while another remains.
    web = next(i for i in linked["identities"] if i["method"] == "open_qr")
    left = browser.post("/api/me/identities/unlink", json={"openid": web["openid"]})
    assert left.status_code == 200
    assert [i["method"] for i in left.get_json()["identities"]] == ["scan"]
    last = browser.post(
        "/api/me/identities/unlink", json={"openid": "oNotBound000000000000000000001"}
    )
    assert (last.status_code, last.get_json()["error"]) == (400, "cannot_unlink")


def test_link_refuses_an_identity_that_belongs_to_someone_else(app, redis_client):
    owner = page_client(app)
    owner.get(confirm(owner, to_wechat(owner)))
    phone = owner.get_cookie("emulator_openid").value
    owner_id = me(owner)["id"]

    # Another person, signed in by scan in a browser that plays the same phone.
    thief = page_client(app)
    thief.set_cookie("emulator_openid", phone)
    scene = thief.post("/api/login/qrcode").get_json()["scene"]
    scan(thief, scene, "oSomeoneElse0000000000000000001")
    thief.post(
        "/api/login/redeem", json={"code": redis_client.hget(f"login:attempt:{scene}", "code")}
    )
    thief_id = me(thief)["id"]

    answer = thief.post("/login/open/link")
    page = refusal(thief.get(confirm(thief, answer.get_json()["redirect"])))

    assert "另一个账号" in page
    assert me(thief)["id"] == thief_id and len(me(thief)["identities"]) == 1
    assert me(owner)["id"] == owner_id


def test_link_and_unlink_need_our_origin_and_a_session(app):
    stranger = app.test_client()
    assert stranger.post("/login/open/link").status_code == 403
    assert page_client(app).post("/login/open/link").status_code == 401
    assert (
        page_client(app).post("/api/me/identities/unlink", json={"openid": "o"}).status_code == 401
    )


# In headless Chromium.


@pytest.mark.parametrize("app_overrides", [{**ON, "LOGIN_RATE_LIMIT": "off"}])
def test_in_chromium_website_login_and_oa_scan_are_one_person(live_server, new_page, app):
    page = new_page()
    page.goto(live_server + "/")
    # Once the QR code is there, the browser has its binding cookie: the start keeps it.
    expect(page.locator("#qr-image")).to_be_visible()
    page.click("#open-qr-login")
    page.click("#qrconnect-allow")
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#user-nickname")).to_contain_text("模拟用户")
    expect(page.locator("#user-avatar")).to_have_attribute("href", re.compile("^https://"))
    web_id = page.evaluate("fetch('/api/me').then(r => r.json()).then(u => u.id)")

    page.click("#logout")
    expect(page.locator("#qr-image")).to_be_visible()
    # The same browser's phone scans the Official Account's QR code (and follows).
    phone = page.context.new_page()
    phone.goto(live_server + "/_emulator/phone")
    phone.locator("button", has_text="扫码").first.click()
    expect(page.locator("#signed-in")).to_be_visible()

    expect(page.locator("#identities li")).to_have_count(2, timeout=10000)
    oa_id = page.evaluate("fetch('/api/me').then(r => r.json()).then(u => u.id)")
    assert oa_id == web_id


# "绑定公众号登录": a person who came by the website links the Official Account by a scan,
# which the scanner confirms in WeChat as a link.

BOB = "oLinkBob0000000000000000001"


def link_scan(browser, openid: str) -> tuple[str, str]:
    """A signed-in page asks for a link QR code and ``openid`` scans it: ``(scene, reply)``."""
    answer = browser.post("/api/login/qrcode", json={"link": True})
    assert answer.status_code == 200, answer.get_json()
    scene = answer.get_json()["scene"]
    return scene, scan(browser, scene, openid)


def website_person(app) -> tuple[object, dict]:
    browser = page_client(app)
    browser.get(confirm(browser, to_wechat(browser)))
    return browser, me(browser)


def test_a_scan_links_the_official_account_only_once_the_scanner_confirms(app, redis_client):
    browser, person = website_person(app)

    scene, reply = link_scan(browser, BOB)

    # Even with LOGIN_CONFIRM off, a link asks, and says it is a link.
    assert "回复 1 确认绑定" in reply
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "scanned"
    assert "绑定成功" in say(browser, "1", BOB)
    code = redis_client.hget(f"login:attempt:{scene}", "code")
    assert browser.post("/api/login/redeem", json={"code": code}).status_code == 200
    linked = me(browser)
    assert linked["id"] == person["id"]
    assert linked["openid"] == BOB
    assert {i["method"] for i in linked["identities"]} == {"open_qr", "scan"}


def test_a_link_to_someone_elses_wechat_is_refused_and_signs_nobody_in(app, redis_client):
    bob_browser = page_client(app)
    sign_in(bob_browser, redis_client, BOB)
    bob = me(bob_browser)
    browser, person = website_person(app)

    scene, _ = link_scan(browser, BOB)
    reply = say(browser, "1", BOB)

    assert "另一个账号" in reply
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "cancelled"
    assert redis_client.hget(f"login:attempt:{scene}", "code") is None
    assert me(browser)["identities"] == person["identities"]
    assert me(bob_browser)["id"] == bob["id"]


def test_a_link_scan_answered_0_links_nothing(app, redis_client):
    browser, person = website_person(app)
    scene, _ = link_scan(browser, BOB)

    say(browser, "0", BOB)

    assert redis_client.hget(f"login:attempt:{scene}", "status") == "cancelled"
    assert me(browser)["identities"] == person["identities"]


def test_a_link_qr_code_needs_a_signed_in_session(app):
    answer = page_client(app).post("/api/login/qrcode", json={"link": True})

    assert answer.status_code == 401


def test_in_chromium_a_website_person_links_the_official_account(live_server, new_page, app):
    page = new_page()
    page.goto(live_server + "/")
    expect(page.locator("#qr-image")).to_be_visible()
    page.click("#open-qr-login")
    page.click("#qrconnect-allow")
    expect(page.locator("#signed-in")).to_be_visible()
    person = page.evaluate("fetch('/api/me').then(r => r.json()).then(u => u.id)")

    page.click("#link-scan")
    expect(page.locator("#qr-image")).to_be_visible()
    scene = page.locator("#qr-image").get_attribute("data-scene")
    assert "回复 1 确认绑定" in scan(page_client(app), scene, BOB)
    assert "绑定成功" in say(page_client(app), "1", BOB)

    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#identities li")).to_have_count(2, timeout=10000)
    expect(page.locator("#link-scan")).to_be_hidden()
    assert page.evaluate("fetch('/api/me').then(r => r.json()).then(u => u.id)") == person
