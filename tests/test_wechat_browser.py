"""In-WeChat login (``wechat_browser``): the state store on real Redis, the code exchange
against the emulated WeChat, the views end to end with WeChat's User-Agent, and the emulated
authorization page."""

import logging
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from playwright.sync_api import expect

from app.emulator.oauth import unionid_of
from app.emulator.state import emulator_state
from app.login.methods import WECHAT_BROWSER, LoginMethods, parse_methods
from app.login.methods.wechat_browser import (
    STATE_SECONDS,
    AuthorizationStates,
    authorize_url,
)
from app.wechat.errors import WeChatAPIError
from tests.conftest import page_client

#: WeChat's own browser on an iPhone.
WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN"
)
#: WeCom's browser: says MicroMessenger too, but cannot authorize for an official account.
WECOM_UA = WECHAT_UA.replace("Language/zh_CN", "wxwork/4.1.22 Language/zh_CN")
SAFARI_ON_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
CHROME_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
PHONE_HINT = "长按识别 / 保存图片后在微信中扫一扫"

BROWSER_A = "a" * 64
BROWSER_B = "b" * 64


# The state store, on real Redis.


class Clock:
    """A clock the test moves by hand, in epoch seconds."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_state_works_once(redis_client):
    states = AuthorizationStates(redis_client)
    state = states.issue(BROWSER_A, "scene-1")

    assert states.take(state, BROWSER_A) == "scene-1"
    assert states.take(state, BROWSER_A) is None


def test_a_state_is_good_only_for_the_browser_it_was_issued_to(redis_client):
    states = AuthorizationStates(redis_client)
    state = states.issue(BROWSER_A, "scene-1")

    assert states.take(state, BROWSER_B) is None
    # Presented once, by anyone, it is spent: a stolen state is no key to try again with.
    assert states.take(state, BROWSER_A) is None


def test_a_state_expires_after_its_life(redis_client):
    clock = Clock()
    states = AuthorizationStates(redis_client, clock=clock)
    late, in_time = states.issue(BROWSER_A, "late"), states.issue(BROWSER_A, "in-time")

    clock.now += STATE_SECONDS - 1
    assert states.take(in_time, BROWSER_A) == "in-time"
    clock.now += 1
    assert states.take(late, BROWSER_A) is None
    # Redis drops it too, at the same moment: nothing outlives its use.
    for key in redis_client.scan_iter("*"):
        assert 0 < redis_client.ttl(key) <= STATE_SECONDS


@pytest.mark.parametrize("state", ["", "not-a-state", "A" * 32, "0" * 31, "0" * 33])
def test_a_malformed_state_is_refused(redis_client, state):
    assert AuthorizationStates(redis_client).take(state, BROWSER_A) is None


def test_states_are_random_and_carry_the_prefix(redis_client):
    states = AuthorizationStates(redis_client, prefix="site1:")
    issued = {states.issue(BROWSER_A, "scene") for _ in range(50)}

    assert len(issued) == 50
    assert all(key.startswith("site1:login:oauth_state:") for key in redis_client.keys("*"))


def test_the_authorize_url_has_wechat_s_parameters_in_wechat_s_order():
    url = authorize_url(
        "https://open.weixin.qq.com/", "wx123", "https://a.example/login/wechat/callback", "ab12"
    )

    assert url == (
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx123"
        "&redirect_uri=https%3A%2F%2Fa.example%2Flogin%2Fwechat%2Fcallback"
        "&response_type=code&scope=snsapi_base&state=ab12#wechat_redirect"
    )


@pytest.mark.parametrize(
    ("setting", "on"),
    [
        ("auto", True),  # an account that may create parametric QR codes: a verified one
        ("scan,wechat_browser", True),
        (" message , wechat_browser ", True),
        ("scan,message", False),
    ],
)
def test_login_methods_turn_the_method_on(redis_client, setting, on):
    methods = LoginMethods(parse_methods(setting), redis_client=redis_client, probe=lambda: None)

    assert methods.enabled(WECHAT_BROWSER) is on


# The code exchange, against the emulated WeChat.


def issue_code(app, openid: str = "oVisitor000000000000000000001") -> str:
    with app.app_context():
        return emulator_state().issue_oauth_code(openid)


def test_the_code_exchange_gives_the_visitor_s_openid(app):
    wechat = app.extensions["wechat_login"].wechat
    visitor = wechat.oauth_access_token(issue_code(app))

    assert visitor.openid == "oVisitor000000000000000000001"
    assert visitor.unionid == "uVisitor000000000000000000001"
    assert visitor.is_snapshotuser is False


def test_a_snapshot_page_s_code_is_flagged(app):
    with app.app_context():
        code = emulator_state().issue_oauth_code("oVisitor000000000000000000001", snapshot=True)

    assert app.extensions["wechat_login"].wechat.oauth_access_token(code).is_snapshotuser


def test_a_code_is_exchanged_once_then_40163(app):
    wechat = app.extensions["wechat_login"].wechat
    code = issue_code(app)
    wechat.oauth_access_token(code)

    with pytest.raises(WeChatAPIError) as refused:
        wechat.oauth_access_token(code)
    assert refused.value.errcode == 40163


def test_a_code_wechat_never_issued_is_40029(app):
    with pytest.raises(WeChatAPIError) as refused:
        app.extensions["wechat_login"].wechat.oauth_access_token("0" * 32)
    assert refused.value.errcode == 40029


@pytest.mark.parametrize("errcode", [40013, 40125, 45011])
def test_the_exchange_fails_with_wechat_s_errcode_and_logs_no_secret(app, client, caplog, errcode):
    client.post(
        "/_emulator/api/faults", json={"api": "sns/oauth2/access_token", "errcode": errcode}
    )
    code = issue_code(app)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(WeChatAPIError) as refused:
        app.extensions["wechat_login"].wechat.oauth_access_token(code)

    assert refused.value.errcode == errcode
    assert str(errcode) in caplog.text
    for secret in (app.config["WECHAT_APP_SECRET"], code):
        assert secret not in caplog.text
        assert secret not in str(refused.value)


# The views, end to end, with WeChat's User-Agent.


def in_wechat(app, user_agent: str = WECHAT_UA):
    """A test client that is WeChat's browser: our pages' Origin, WeChat's User-Agent."""
    browser = page_client(app)
    browser.environ_base["HTTP_USER_AGENT"] = user_agent
    return browser


def go_to_authorization(browser) -> str:
    """Open ``/``, follow us to WeChat's web authorization: its URL."""
    page = browser.get("/")
    assert page.status_code == 302
    start = browser.get(page.location)
    assert start.status_code == 302
    return start.location


def answer(browser, authorization: str, decision: str = "allow") -> str:
    """The visitor's answer on WeChat's page: where WeChat sends the browser back."""
    url = urlsplit(authorization)
    assert browser.get(authorization).status_code == 200  # the page asking
    back = browser.post(url.path, data={**dict(parse_qsl(url.query)), "decision": decision})
    assert back.status_code == 302
    return back.location


def test_in_wechat_the_page_sends_the_browser_to_web_authorization(app):
    browser = in_wechat(app)
    page = browser.get("/")
    assert page.status_code == 302
    assert page.location == "/login/wechat"

    url = urlsplit(go_to_authorization(browser))

    assert url.path == "/_emulator/open/connect/oauth2/authorize"
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
    assert values["appid"] == app.config["WECHAT_APP_ID"]
    assert values["redirect_uri"] == "http://localhost/login/wechat/callback"
    assert (values["response_type"], values["scope"]) == ("code", "snsapi_base")


@pytest.mark.parametrize("app_overrides", [{"PUBLIC_BASE_URL": "https://login.example.com"}])
def test_the_way_back_is_under_the_public_base_url_whatever_the_host(app):
    browser = in_wechat(app)
    browser.get("/")
    start = browser.get("/login/wechat", headers={"Host": "evil.example"})

    values = dict(parse_qsl(urlsplit(start.location).query))
    assert values["redirect_uri"] == "https://login.example.com/login/wechat/callback"


def signed_in_openid(browser) -> str | None:
    me = browser.get("/api/me")
    return me.get_json()["openid"] if me.status_code == 200 else None


def test_the_authorization_signs_the_browser_in_with_no_scan(app, redis_client):
    browser = in_wechat(app)
    back = answer(browser, go_to_authorization(browser))
    phone_openid = browser.get_cookie("emulator_openid").value

    landed = browser.get(back)

    assert landed.status_code == 302
    assert landed.location == "/"
    assert signed_in_openid(browser) == phone_openid
    # Signed in, the page is shown, not sent to WeChat again.
    assert browser.get("/").status_code == 200
    # Recorded as this method (the session's method, and the ID token's amr, follow it).
    (signin,) = redis_client.keys("login:signin:*")
    assert redis_client.hget(signin, "method") == "wechat_browser"
    # No QR code was made for it.
    assert browser.get("/_emulator/api/qrcodes").get_json()["qrcodes"] == []


@pytest.mark.parametrize("app_overrides", [{"LOGIN_METHODS": "scan,wechat_browser,open_qr"}])
def test_the_unionid_of_the_authorization_makes_the_website_s_person_the_same(app):
    # The visitor does not follow the account, so user/info would give no unionid: only the
    # code exchange's does. Signed in on the website (its own openid, the same unionid) first,
    # then inside WeChat: one person, at once.
    website = page_client(app)
    website.get(answer(website, website.get("/login/open").location))  # WeChat's QR page
    person = website.get("/api/me").get_json()
    browser = in_wechat(app)
    browser.set_cookie("emulator_openid", website.get_cookie("emulator_openid").value)

    browser.get(answer(browser, go_to_authorization(browser)))

    me = browser.get("/api/me").get_json()
    assert me["openid"] == browser.get_cookie("emulator_openid").value
    assert me["unionid"] == person["unionid"] == unionid_of(me["openid"])
    assert me["id"] == person["id"]
    assert {identity["method"] for identity in me["identities"]} == {"open_qr", "wechat_browser"}


@pytest.mark.parametrize("app_overrides", [{"LOGIN_CONFIRM": "always"}])
def test_the_confirm_policy_does_not_ask_the_browser_that_proved_itself(app):
    browser = in_wechat(app)
    browser.get(answer(browser, go_to_authorization(browser)))

    assert signed_in_openid(browser) == browser.get_cookie("emulator_openid").value


def refusal(answer_) -> str:
    assert answer_.status_code == 400
    page = answer_.get_data(as_text=True)
    # The ways back: start again, or take the QR code.
    assert 'href="/"' in page and 'href="/?qr=1"' in page
    return page


def test_a_replayed_way_back_signs_nobody_in(app):
    browser = in_wechat(app)
    back = answer(browser, go_to_authorization(browser))
    browser.get(back)
    browser.post("/api/logout")

    assert "已失效" in refusal(browser.get(back))
    assert signed_in_openid(browser) is None


def test_a_used_code_with_a_fresh_state_is_40163(app):
    browser = in_wechat(app)
    first = dict(parse_qsl(urlsplit(answer(browser, go_to_authorization(browser))).query))
    browser.get("/login/wechat/callback", query_string=first)
    browser.post("/api/logout")
    fresh = dict(parse_qsl(urlsplit(go_to_authorization(browser)).query))

    replay = browser.get(
        "/login/wechat/callback", query_string={"code": first["code"], "state": fresh["state"]}
    )

    assert "40163" in refusal(replay)
    assert signed_in_openid(browser) is None


def test_a_made_up_code_is_40029(app):
    browser = in_wechat(app)
    state = dict(parse_qsl(urlsplit(go_to_authorization(browser)).query))["state"]

    made_up = browser.get("/login/wechat/callback", query_string={"code": "x" * 32, "state": state})

    assert "40029" in refusal(made_up)
    assert signed_in_openid(browser) is None


def test_a_refused_authorization_says_so(app):
    browser = in_wechat(app)
    back = answer(browser, go_to_authorization(browser), decision="deny")
    assert "code" not in dict(parse_qsl(urlsplit(back).query))

    assert "没有同意授权" in refusal(browser.get(back))
    assert signed_in_openid(browser) is None


def test_a_snapshot_page_s_virtual_openid_signs_nobody_in(app, redis_client):
    browser = in_wechat(app)
    back = answer(browser, go_to_authorization(browser), decision="snapshot")

    assert "使用完整服务" in refusal(browser.get(back))
    assert signed_in_openid(browser) is None
    assert redis_client.keys("user:*") == redis_client.keys("login:signin*") == []


def test_another_browser_cannot_use_the_way_back(app):
    owner, thief = in_wechat(app), in_wechat(app)
    back = answer(owner, go_to_authorization(owner))
    thief.get("/login/wechat")  # has a binding of its own

    assert "已失效" in refusal(thief.get(back))
    assert signed_in_openid(thief) is None


@pytest.mark.parametrize(
    ("user_agent", "hint"),
    [(CHROME_ON_WINDOWS, False), (SAFARI_ON_IPHONE, True), (WECOM_UA, True)],
)
def test_outside_wechat_the_page_shows_the_qr_code(app, user_agent, hint):
    page = in_wechat(app, user_agent).get("/")

    assert page.status_code == 200
    assert 'id="qr-image"' in page.get_data(as_text=True)
    assert (PHONE_HINT in page.get_data(as_text=True)) is hint


def test_in_wechat_the_qr_code_can_still_be_asked_for(app):
    page = in_wechat(app).get("/?qr=1")

    assert page.status_code == 200
    assert PHONE_HINT in page.get_data(as_text=True)


@pytest.mark.parametrize("app_overrides", [{"LOGIN_METHODS": "scan,message"}])
def test_with_the_method_off_wechat_s_browser_gets_the_qr_page(app):
    browser = in_wechat(app)

    assert browser.get("/").status_code == 200
    assert browser.get("/login/wechat").status_code == 404
    assert browser.get("/login/wechat/callback?code=x&state=y").status_code == 404


@pytest.mark.parametrize("app_overrides", [{"LOGIN_RATE_LIMIT": "2/minute"}])
def test_starts_are_rate_limited_like_qr_codes(app):
    browser = in_wechat(app)

    assert [browser.get("/login/wechat").status_code for _ in range(3)] == [302, 302, 429]


# The emulated authorization page.


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"redirect_uri": "https://elsewhere.example/login/wechat/callback"}, "10003"),
        ({"appid": "wx0000000000000000"}, "appid"),
        ({"scope": "snsapi_login"}, "10005"),
    ],
)
def test_the_emulated_authorization_refuses_what_wechat_refuses(app, change, problem):
    browser = in_wechat(app)
    url = urlsplit(go_to_authorization(browser))
    params = {**dict(parse_qsl(url.query)), **change}

    page = browser.get(url.path, query_string=params)
    assert page.status_code == 400
    assert problem in page.get_data(as_text=True)
    sent = browser.post(url.path, data={**params, "decision": "allow"})
    assert sent.status_code == 400
    assert sent.location is None


def test_wechat_check_names_the_domain_to_allow_for_web_authorization(app, live_server):
    app.config["PUBLIC_BASE_URL"] = live_server
    domain = live_server.removeprefix("http://")

    output = app.test_cli_runner().invoke(args=["wechat", "check"]).output

    assert f"[ ok ] web authorization: in-WeChat login comes back to {live_server}/login/" in output
    assert f"enter {domain} (no https://) as 网页授权域名" in output


# In a real headless Chromium.


def test_a_page_opened_in_wechat_signs_in_through_the_authorization_with_no_scan(
    browser, live_server
):
    context = browser.new_context(
        user_agent=WECHAT_UA, viewport={"width": 390, "height": 844}, locale="zh-CN"
    )
    try:
        page = context.new_page()
        page.goto(live_server + "/")

        # Sent straight to WeChat's (emulated) authorization: no QR code on the way.
        expect(page.locator("#authorize-ask")).to_contain_text("请求获取你的身份")
        assert "/connect/oauth2/authorize?appid=" in page.url
        openid = page.locator("#openid").inner_text()
        page.locator("#authorize-allow").click()

        expect(page.locator("#signed-in")).to_be_visible()
        expect(page.locator("#user-openid")).to_have_text(openid)
        assert page.url == live_server + "/"
        with requests.get(live_server + "/_emulator/api/qrcodes", timeout=5) as listed:
            assert listed.json()["qrcodes"] == []
    finally:
        context.close()


def test_a_phone_browser_outside_wechat_shows_the_qr_code_to_long_press_or_save(
    browser, live_server
):
    context = browser.new_context(
        user_agent=SAFARI_ON_IPHONE, viewport={"width": 360, "height": 740}, locale="zh-CN"
    )
    try:
        page = context.new_page()
        page.goto(live_server + "/")

        expect(page.locator("body")).to_have_attribute("data-state", "waiting")
        expect(page.locator("#phone-hint")).to_have_text(PHONE_HINT)
        # As wide as the card allows on a small phone, at least as large as on a desktop.
        width = page.locator("#qr-image").bounding_box()["width"]
        assert width >= 240
        assert width <= 360
    finally:
        context.close()
