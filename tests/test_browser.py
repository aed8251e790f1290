"""The whole product in a real headless Chromium: a person opens the page, scans with the
emulated phone, and the waiting page signs in, with no reload."""

import os
import re
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():
    # CI installs Debian's chromium, so there a missing browser is a failure, never a skip.
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Browser:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """Returns a function: a page in a fresh context, i.e. a separate browser with its own
    cookies."""
    contexts = []

    def make() -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def shown_scene(page: Page) -> str:
    image = page.locator("#qr-image")
    expect(image).to_have_attribute("data-scene", re.compile(r"^\d{13}-"))
    return image.get_attribute("data-scene")


def ticket_for(base: str, scene: str) -> str:
    with requests.get(base + "/_emulator/api/qrcodes", timeout=5) as response:
        return next(q["ticket"] for q in response.json()["qrcodes"] if q["scene_str"] == scene)


def test_scan_with_the_phone_signs_in_the_waiting_page(live_server, new_page):
    alice, bob, phone = new_page(), new_page(), new_page()
    alice.goto(live_server + "/")
    bob.goto(live_server + "/")
    expect(alice.locator("body")).to_have_attribute("data-state", "waiting")
    scene = shown_scene(alice)
    bob_scene = shown_scene(bob)

    phone.goto(
        f"{live_server}/_emulator/scan?{urlencode({'ticket': ticket_for(live_server, scene)})}"
    )
    openid = phone.locator("#openid").inner_text()
    phone.locator(".scan-new").click()
    expect(phone.locator(".bubble.reply").last).to_contain_text("登录成功")

    expect(alice.locator("#signed-in")).to_be_visible()
    expect(alice.locator("#user-openid")).to_have_text(openid)
    expect(alice.locator("#user-login-count")).to_have_text("1")
    alice.screenshot(path=os.environ.get("SCREENSHOT_DIR", "/tmp") + "/signed-in.png")

    # Bob's page, open all along, is still waiting on its own QR code.
    expect(bob.locator("body")).to_have_attribute("data-state", "waiting")
    assert shown_scene(bob) == bob_scene

    # Signed in across reloads; logging out shows a fresh QR code.
    alice.reload()
    expect(alice.locator("#user-openid")).to_have_text(openid)
    alice.locator("#logout").click()
    expect(alice.locator("body")).to_have_attribute("data-state", "waiting")
    assert shown_scene(alice) != scene


@pytest.mark.parametrize("app_overrides", [{"LOGIN_QR_EXPIRE_SECONDS": 2}])
def test_expired_qr_code_is_replaced_while_the_tab_is_visible(live_server, new_page):
    page = new_page()
    page.goto(live_server + "/")
    first = shown_scene(page)
    expect(page.locator("#qr-image")).not_to_have_attribute("data-scene", first, timeout=10_000)
    expect(page.locator("body")).to_have_attribute("data-state", "waiting")


def test_wechat_failure_is_explained_and_retry_works(live_server, new_page):
    with requests.post(
        live_server + "/_emulator/api/faults",
        json={"api": "qrcode/create", "errcode": 45009},
        timeout=5,
    ) as injected:
        assert injected.status_code == 200
    page = new_page()
    page.goto(live_server + "/")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("45009")
    page.locator("#retry").click()
    expect(page.locator("body")).to_have_attribute("data-state", "waiting")
    shown_scene(page)
