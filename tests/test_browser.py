"""The whole product in a real headless Chromium: a person opens the page, scans with the
emulated phone, and the waiting page signs in, with no reload."""

import os
import re
import time

import pytest
import requests
from playwright.sync_api import Page, expect

#: Where the tests leave screenshots of what a person sees.
SCREENSHOT_DIR = os.environ.get("SCREENSHOT_DIR", "/tmp")


def shown_scene(page: Page) -> str:
    image = page.locator("#qr-image")
    expect(image).to_have_attribute("data-scene", re.compile(r"^\d{13}-"))
    return image.get_attribute("data-scene")


def qr_url_of(base: str, scene: str) -> str:
    """The url the QR code of ``scene`` encodes: what a phone's camera reads."""
    with requests.get(base + "/_emulator/api/qrcodes", timeout=5) as response:
        return next(q["url"] for q in response.json()["qrcodes"] if q["scene_str"] == scene)


def scan_with(phone: Page, base: str, scene: str) -> str:
    """Open the phone on the QR code of ``scene`` and tap 扫码（新关注）: the phone's openid."""
    phone.goto(qr_url_of(base, scene))
    openid = phone.locator("#openid").inner_text()
    phone.locator(".scan-new").click()
    return openid


def send_from(phone: Page, text: str) -> None:
    """Send ``text`` to the official account, as the phone's user typing it in WeChat."""
    phone.locator("#message-input").fill(text)
    phone.locator("#message-send").click()


def test_scan_with_the_phone_signs_in_the_waiting_page(live_server, new_page):
    alice, bob, phone = new_page(), new_page(), new_page()
    alice.goto(live_server + "/")
    bob.goto(live_server + "/")
    expect(alice.locator("body")).to_have_attribute("data-state", "waiting")
    scene = shown_scene(alice)
    bob_scene = shown_scene(bob)

    openid = scan_with(phone, live_server, scene)
    expect(phone.locator(".bubble.reply").last).to_contain_text("登录成功")

    expect(alice.locator("#signed-in")).to_be_visible()
    expect(alice.locator("#user-openid")).to_have_text(openid)
    expect(alice.locator("#user-login-count")).to_have_text("1")
    alice.screenshot(path=f"{SCREENSHOT_DIR}/signed-in.png")

    # Bob's page, open all along, is still waiting on its own QR code.
    expect(bob.locator("body")).to_have_attribute("data-state", "waiting")
    assert shown_scene(bob) == bob_scene

    # Signed in across reloads; logging out shows a fresh QR code.
    alice.reload()
    expect(alice.locator("#user-openid")).to_have_text(openid)
    alice.locator("#logout").click()
    expect(alice.locator("body")).to_have_attribute("data-state", "waiting")
    assert shown_scene(alice) != scene


def inject_fault(base: str, fault: dict) -> None:
    """Make the emulated WeChat fail the next call(s) of ``fault["api"]``."""
    with requests.post(base + "/_emulator/api/faults", json=fault, timeout=5) as injected:
        assert injected.status_code == 200


def test_a_unionid_still_being_looked_up_reads_as_such_until_the_look_up_ends(
    live_server, new_page
):
    # The look-up fails: the page says it is looking until it has asked long enough.
    inject_fault(live_server, {"api": "user/info/batchget", "errcode": 48001})
    page, phone = new_page(), new_page()
    page.goto(live_server + "/")
    scan_with(phone, live_server, shown_scene(page))

    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#user-unionid")).to_have_text("查询中…")
    expect(page.locator("#user-unionid")).to_have_text("未绑定开放平台", timeout=20_000)


def test_a_unionid_found_after_the_sign_in_shows_without_a_reload(live_server, new_page):
    # WeChat busy once: the look-up answers after its half-second retry, past the sign-in.
    inject_fault(live_server, {"api": "user/info/batchget", "errcode": -1})
    page, phone = new_page(), new_page()
    page.goto(live_server + "/")
    openid = scan_with(phone, live_server, shown_scene(page))

    expect(page.locator("#user-unionid")).to_have_text("u" + openid[1:], timeout=10_000)


@pytest.mark.parametrize("app_overrides", [{"LOGIN_QR_EXPIRE_SECONDS": 2}])
def test_expired_qr_code_is_replaced_while_the_tab_is_visible(live_server, new_page):
    page = new_page()
    page.goto(live_server + "/")
    first = shown_scene(page)
    expect(page.locator("#qr-image")).not_to_have_attribute("data-scene", first, timeout=10_000)
    expect(page.locator("body")).to_have_attribute("data-state", "waiting")


@pytest.mark.parametrize("app_overrides", [{"LOGIN_CONFIRM": "always"}])
def test_scanner_confirms_in_wechat_before_the_page_signs_in(live_server, new_page):
    page, phone = new_page(), new_page()
    page.goto(live_server + "/")
    openid = scan_with(phone, live_server, shown_scene(page))

    expect(phone.locator(".bubble.reply").last).to_contain_text("回复 1 确认登录")
    expect(page.locator("#status")).to_have_text("已扫码，请在微信中确认")
    # Scanned is not signed in: the QR code is dimmed, with nothing to click, until they answer.
    expect(page.locator("body")).to_have_attribute("data-state", "scanned")
    expect(page.locator("#qr-overlay-text")).to_have_text("已扫码，请在微信中确认")
    expect(page.locator("#qr-refresh")).to_be_hidden()
    expect(page.locator("#signed-in")).to_be_hidden()
    page.screenshot(path=f"{SCREENSHOT_DIR}/scanned.png")
    phone.screenshot(path=f"{SCREENSHOT_DIR}/phone-confirm.png")

    send_from(phone, "1")
    expect(phone.locator(".bubble.reply").last).to_contain_text("登录成功")
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#user-openid")).to_have_text(openid)


@pytest.mark.parametrize("app_overrides", [{"LOGIN_CONFIRM": "always"}])
def test_scanner_cancelling_in_wechat_leaves_the_page_a_fresh_qr_code(live_server, new_page):
    page, phone = new_page(), new_page()
    page.goto(live_server + "/")
    scene = shown_scene(page)
    scan_with(phone, live_server, scene)
    # "0" only cancels once the scan is awaiting its answer.
    expect(phone.locator(".bubble.reply").last).to_contain_text("回复 0 取消")
    expect(page.locator("#status")).to_have_text("已扫码，请在微信中确认")

    send_from(phone, "0")
    expect(phone.locator(".bubble.reply").last).to_contain_text("已取消本次登录")
    expect(page.locator("body")).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#qr-overlay-text")).to_have_text("已取消登录")
    expect(page.locator("#signed-in")).to_be_hidden()

    page.locator("#qr-refresh").click()
    expect(page.locator("body")).to_have_attribute("data-state", "waiting")
    assert shown_scene(page) != scene


@pytest.mark.parametrize(
    "fault",
    [
        {"api": "qrcode/create", "errcode": 48001},
        # -1 (system busy) is retried once, so it takes two in a row to reach the page.
        {"api": "qrcode/create", "errcode": -1, "count": 2},
    ],
    ids=["no-permission", "busy-twice"],
)
def test_wechat_failure_is_explained_and_retry_works(live_server, new_page, fault):
    # Not a quota errcode (45009, 45011): after those the client rightly refuses for minutes.
    inject_fault(live_server, fault)
    page = new_page()
    page.goto(live_server + "/")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text(f"errcode {fault['errcode']}")
    page.locator("#retry").click()
    expect(page.locator("body")).to_have_attribute("data-state", "waiting")
    shown_scene(page)


def test_a_sign_in_leaves_no_error_in_the_console(live_server, new_page):
    # live_server is werkzeug's, as `flask --app wsgi run` serves; gunicorn is tested in
    # test_nginx.py and test_faults.py.
    page, phone = new_page(), new_page()
    # (The page's first GET /api/me answers 401 by design: Chromium logs that one too.)
    errors = []
    page.on("console", lambda message: "WebSocket" in message.text and errors.append(message.text))
    page.goto(live_server + "/")
    with page.expect_websocket() as opened:
        scene = shown_scene(page)  # the socket opens once the QR code is shown
    socket = opened.value

    scan_with(phone, live_server, scene)

    expect(page.locator("#signed-in")).to_be_visible()
    deadline = time.monotonic() + 5
    while not socket.is_closed():
        assert time.monotonic() < deadline, "the login socket never closed"
        page.wait_for_timeout(50)
    assert errors == []


def test_a_third_tab_sends_the_oldest_away_and_the_tabs_do_not_take_turns(
    app, live_server, new_page
):
    context = new_page().context  # one browser: its tabs share the binding cookie and the QR
    tabs = [context.pages[0]]
    tabs[0].goto(live_server + "/")
    scene = shown_scene(tabs[0])
    for _ in range(2):
        tab = context.new_page()
        tab.goto(live_server + "/")
        assert shown_scene(tab) == scene
        tabs.append(tab)

    oldest, *newer = tabs
    expect(oldest.locator("body")).to_have_attribute("data-state", "replaced")
    expect(oldest.locator("#qr-overlay-text")).to_have_text("已在其他标签页打开")
    for tab in newer:
        expect(tab.locator("body")).to_have_attribute("data-state", "waiting")
    # The one sent away stays away: the two others keep their sockets.
    assert app.extensions["wechat_login"].hub.waiting_count() == 2

    openid = scan_with(new_page(), live_server, scene)
    for tab in newer:
        expect(tab.locator("#user-openid")).to_have_text(openid)
    expect(oldest.locator("body")).to_have_attribute("data-state", "replaced")
