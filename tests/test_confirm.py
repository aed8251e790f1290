"""Confirming a login in WeChat (``LOGIN_CONFIRM``), and ending it from there, played through
the emulator's phone against a live server, with the page's websocket watching."""

import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
import requests
import websocket

from app.login.service import NOTHING_PENDING_REPLY, UNKNOWN_REPLY
from tests.conftest import ws_frames

#: A desktop Chrome on Windows, as the page's browser.
CHROME_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
FIREFOX_ON_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:121.0) Gecko/20100101 Firefox/121.0"
)
#: The worker's periodic re-check far apart: a frame that comes within the socket's 2 s
#: timeout came by the push.
PUSH_ONLY = {"LOGIN_RECHECK_SECONDS": 30}
ALWAYS = {"LOGIN_CONFIRM": "always", **PUSH_ONLY}
NEW_DEVICE = {"LOGIN_CONFIRM": "new_device", **PUSH_ONLY}
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


@pytest.fixture
def app_overrides() -> dict:
    return PUSH_ONLY


class Browser:
    """A browser showing our login page: its own cookies, our Origin on POSTs."""

    def __init__(self, base: str, user_agent: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers.update({"Origin": base, "User-Agent": user_agent})

    def start(self) -> dict:
        """Ask for a QR code: the page's ``{"scene", "ws", ...}``."""
        response = self.session.post(self.base + "/api/login/qrcode", timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def socket(self, attempt: dict) -> websocket.WebSocket:
        """Open the attempt's login socket with this browser's cookies."""
        # websocket-client sends an Origin made from the URL: it must be our site to be let in.
        assert "http://" + urlsplit(attempt["ws"]).netloc == self.base
        cookie = "; ".join(f"{name}={value}" for name, value in self.session.cookies.items())
        # 2 s, well under LOGIN_RECHECK_SECONDS (PUSH_ONLY).
        return websocket.create_connection(attempt["ws"], header=[f"Cookie: {cookie}"], timeout=2)

    def redeem(self, code: str) -> requests.Response:
        return self.session.post(self.base + "/api/login/redeem", json={"code": code}, timeout=5)

    def me(self) -> requests.Response:
        return self.session.get(self.base + "/api/me", timeout=5)


class Phone:
    """The emulator's phone: one WeChat user, whose openid lives in this session's cookie."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.get(base + "/_emulator/phone", timeout=5).raise_for_status()
        self.openid = self.session.cookies["emulator_openid"]

    def scan(self, scene: str, mode: str | None = None) -> dict:
        """Scan the QR code of ``scene`` as a returning follower: ``{"status", "reply", ...}``."""
        qrcodes = self.session.get(self.base + "/_emulator/api/qrcodes", timeout=5).json()
        [ticket] = [qr["ticket"] for qr in qrcodes["qrcodes"] if qr["scene_str"] == scene]
        body = {"ticket": ticket, "follower": "returning"}
        if mode is not None:
            body["mode"] = mode
        return self._post("/_emulator/api/scan", body)

    def says(self, content: str) -> dict:
        """Send a text message to the account: ``{"status", "reply", ...}``."""
        return self._post("/_emulator/api/message", {"content": content})

    def _post(self, path: str, body: dict) -> dict:
        response = self.session.post(self.base + path, json=body, timeout=10)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["openid"] == self.openid
        return answer


@pytest.fixture
def closing():
    """Collects the close methods of what a test opens, and calls them at its end."""
    closers: list[Callable[[], None]] = []
    yield closers.append
    for close in closers:
        close()


@pytest.fixture
def new_browser(live_server, closing) -> Callable[..., Browser]:
    def make(user_agent: str = CHROME_ON_WINDOWS) -> Browser:
        browser = Browser(live_server, user_agent)
        closing(browser.session.close)
        return browser

    return make


@pytest.fixture
def new_phone(live_server, closing) -> Callable[[], Phone]:
    def make() -> Phone:
        phone = Phone(live_server)
        closing(phone.session.close)
        return phone

    return make


@pytest.fixture
def open_socket(closing) -> Callable[[Browser, dict], websocket.WebSocket]:
    def open_(browser: Browser, attempt: dict) -> websocket.WebSocket:
        ws = browser.socket(attempt)
        # shutdown(), not close(): after the server's close frame close() leaves the socket open.
        closing(ws.shutdown)
        return ws

    return open_


def next_frame(ws: websocket.WebSocket) -> dict:
    return json.loads(ws.recv())


def scanned_while_waiting(browser, phone, open_socket) -> tuple[dict, websocket.WebSocket, str]:
    """A page waiting on its socket when the phone scans: ``(attempt, socket, scan reply)``,
    the socket having said "waiting" and then "scanned"."""
    attempt = browser.start()
    ws = open_socket(browser, attempt)
    assert next_frame(ws)["status"] == "waiting"
    reply = phone.scan(attempt["scene"])["reply"]
    assert next_frame(ws) == {"status": "scanned"}
    return attempt, ws, reply


def asks_to_confirm(reply: str) -> bool:
    return "回复 1 确认登录" in reply


# LOGIN_CONFIRM=always


@pytest.mark.parametrize("app_overrides", [ALWAYS], ids=["always"])
def test_scan_asks_to_confirm_and_tells_what_is_being_signed_in(
    live_server, new_browser, new_phone, open_socket, redis_client
):
    browser, phone = new_browser(), new_phone()
    attempt = browser.start()
    ws = open_socket(browser, attempt)
    assert next_frame(ws)["status"] == "waiting"

    scanned = phone.scan(attempt["scene"])

    reply = scanned["reply"]
    assert asks_to_confirm(reply)
    assert "回复 0 取消" in reply
    assert "你正在登录 本网站" in reply  # the site: SITE_NAME, unset here
    assert "Chrome" in reply and "Windows" in reply
    assert "127.0.0.1" in reply
    assert "北京时间" in reply
    assert "登录成功" not in reply
    assert next_frame(ws) == {"status": "scanned"}
    assert redis_client.hget(f"login:attempt:{attempt['scene']}", "status") == "scanned"
    assert not redis_client.exists(f"user:{phone.openid}")


@pytest.mark.parametrize("app_overrides", [ALWAYS], ids=["always"])
def test_answering_1_signs_the_page_in(new_browser, new_phone, open_socket):
    browser, phone = new_browser(), new_phone()
    attempt, ws, _ = scanned_while_waiting(browser, phone, open_socket)

    confirmed = phone.says("1")

    assert "登录成功" in confirmed["reply"]
    [frame] = ws_frames(ws)
    assert frame["status"] == "confirmed"
    redeemed = browser.redeem(frame["code"])
    assert redeemed.status_code == 200
    assert redeemed.json()["openid"] == phone.openid
    assert browser.me().json()["openid"] == phone.openid


@pytest.mark.parametrize("app_overrides", [ALWAYS], ids=["always"])
def test_answering_0_cancels_and_signs_nobody_in(new_browser, new_phone, open_socket, redis_client):
    browser, phone = new_browser(), new_phone()
    attempt, ws, _ = scanned_while_waiting(browser, phone, open_socket)

    cancelled = phone.says("0")

    assert "已取消" in cancelled["reply"]
    assert ws_frames(ws) == [{"status": "cancelled"}]
    assert browser.me().status_code == 401
    assert not redis_client.exists(f"user:{phone.openid}")
    assert redis_client.hget(f"login:attempt:{attempt['scene']}", "code") is None
    # Too late to change one's mind: the cancelled QR code is dead.
    assert phone.says("1")["reply"] == NOTHING_PENDING_REPLY


@pytest.mark.parametrize("app_overrides", [ALWAYS], ids=["always"])
@pytest.mark.parametrize(
    ("answer", "told"),
    [("1", "没有等待你确认的登录"), ("0", "没有可以退出的登录")],
    ids=["1", "0"],
)
def test_an_answer_with_nothing_pending_changes_nothing(
    new_browser, new_phone, redis_client, answer, told
):
    attempt = new_browser().start()
    key = f"login:attempt:{attempt['scene']}"
    before = redis_client.hgetall(key)

    reply = new_phone().says(answer)["reply"]

    assert told in reply
    assert redis_client.hgetall(key) == before
    assert before["status"] == "waiting"


@pytest.mark.parametrize("app_overrides", [ALWAYS], ids=["always"])
def test_another_phones_1_confirms_nothing(new_browser, new_phone, open_socket, redis_client):
    browser, scanner, stranger = new_browser(), new_phone(), new_phone()
    attempt = browser.start()
    ws = open_socket(browser, attempt)
    assert next_frame(ws)["status"] == "waiting"
    scanner.scan(attempt["scene"])
    assert next_frame(ws) == {"status": "scanned"}

    assert stranger.says("1")["reply"] == NOTHING_PENDING_REPLY

    ws.settimeout(1)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    attempt_record = redis_client.hgetall(f"login:attempt:{attempt['scene']}")
    assert (attempt_record["status"], attempt_record["openid"]) == ("scanned", scanner.openid)
    assert not redis_client.exists(f"user:{stranger.openid}")
    # The scanner's own answer still works.
    ws.settimeout(2)
    assert "登录成功" in scanner.says("1")["reply"]
    assert [frame["status"] for frame in ws_frames(ws)] == ["confirmed"]


@pytest.mark.parametrize(
    "app_overrides", [{**ALWAYS, "LOGIN_QR_EXPIRE_SECONDS": 2}], ids=["always-2s"]
)
def test_an_unanswered_confirmation_expires(new_browser, new_phone, open_socket, redis_client):
    browser, phone = new_browser(), new_phone()
    _, ws, reply = scanned_while_waiting(browser, phone, open_socket)
    assert asks_to_confirm(reply)
    ws.settimeout(5)
    assert ws_frames(ws) == [{"status": "expired"}]

    # The pending answer may outlive the QR by under a second (it is rounded up): either way
    # the late "1" is told politely and signs nobody in.
    assert phone.says("1")["reply"] in (NOTHING_PENDING_REPLY, UNKNOWN_REPLY)
    assert not redis_client.exists(f"user:{phone.openid}")


# LOGIN_CONFIRM=new_device


def sign_in(browser: Browser, phone: Phone, redis_client) -> None:
    """A whole login of ``browser`` by ``phone``, confirming if asked."""
    scene = browser.start()["scene"]
    if asks_to_confirm(phone.scan(scene)["reply"]):
        assert "登录成功" in phone.says("1")["reply"]
    code = redis_client.hget(f"login:attempt:{scene}", "code")
    assert browser.redeem(code).status_code == 200


@pytest.mark.parametrize("app_overrides", [NEW_DEVICE], ids=["new_device"])
@pytest.mark.parametrize(
    ("same_browser", "same_phone", "asks"),
    [(True, True, False), (False, True, True), (True, False, True)],
    ids=["known-browser", "other-browser", "other-phone"],
)
def test_new_device_asks_only_for_a_browser_new_to_the_scanner(
    new_browser, new_phone, redis_client, same_browser, same_phone, asks
):
    browser, phone = new_browser(), new_phone()
    first = browser.start()
    assert asks_to_confirm(phone.scan(first["scene"])["reply"])
    phone.says("1")
    code = redis_client.hget(f"login:attempt:{first['scene']}", "code")
    assert browser.redeem(code).status_code == 200

    second_browser = browser if same_browser else new_browser(FIREFOX_ON_MAC)
    second_phone = phone if same_phone else new_phone()
    scene = second_browser.start()["scene"]
    reply = second_phone.scan(scene)["reply"]

    assert asks_to_confirm(reply) is asks
    assert ("登录成功" in reply) is not asks
    status = redis_client.hget(f"login:attempt:{scene}", "status")
    assert status == ("scanned" if asks else "confirmed")


# LOGIN_CONFIRM=off


def test_scan_signs_in_and_0_ends_the_session_at_once(
    new_browser, new_phone, open_socket, redis_client
):
    browser, phone = new_browser(), new_phone()
    attempt = browser.start()
    ws = open_socket(browser, attempt)
    assert next_frame(ws)["status"] == "waiting"

    reply = phone.scan(attempt["scene"])["reply"]

    assert "登录成功" in reply
    assert "回复 0" in reply
    [frame] = ws_frames(ws)
    assert frame["status"] == "confirmed"
    assert browser.redeem(frame["code"]).status_code == 200
    assert browser.me().status_code == 200
    session_id = browser.session.cookies["session"]
    assert redis_client.exists(f"session:{session_id}")

    ended = phone.says("0")

    assert "已退出" in ended["reply"]
    assert browser.me().status_code == 401
    assert not redis_client.exists(f"session:{session_id}")
    assert "没有可以退出的登录" in phone.says("0")["reply"]


def test_0_before_the_redeem_makes_the_code_useless(new_browser, new_phone, redis_client):
    browser, phone = new_browser(), new_phone()
    scene = browser.start()["scene"]
    phone.scan(scene)
    code = redis_client.hget(f"login:attempt:{scene}", "code")

    assert "已退出" in phone.says("0")["reply"]

    assert browser.redeem(code).status_code == 400
    assert browser.me().status_code == 401


def test_0_ends_only_the_scanners_own_login(new_browser, new_phone, redis_client):
    alice, bob = new_browser(), new_browser(FIREFOX_ON_MAC)
    alice_phone, bob_phone = new_phone(), new_phone()
    sign_in(alice, alice_phone, redis_client)
    sign_in(bob, bob_phone, redis_client)

    assert "已退出" in bob_phone.says("0")["reply"]

    assert bob.me().status_code == 401
    assert alice.me().json()["openid"] == alice_phone.openid


# The phone in each of the account's encryption modes.


@pytest.mark.parametrize(
    ("app_overrides", "mode", "signs_in"),
    [
        ({"WECHAT_ENCODING_AES_KEY": KEY, "WECHAT_ENCRYPT_MODE": "compatible"}, "plaintext", True),
        ({"WECHAT_ENCODING_AES_KEY": KEY, "WECHAT_ENCRYPT_MODE": "compatible"}, "compatible", True),
        ({"WECHAT_ENCODING_AES_KEY": KEY, "WECHAT_ENCRYPT_MODE": "compatible"}, "safe", True),
        ({"WECHAT_ENCODING_AES_KEY": KEY, "WECHAT_ENCRYPT_MODE": "safe"}, "safe", True),
        ({"WECHAT_ENCODING_AES_KEY": KEY, "WECHAT_ENCRYPT_MODE": "safe"}, "plaintext", False),
    ],
    ids=[
        "compatible-server-plaintext",
        "compatible-server-compatible",
        "compatible-server-safe",
        "safe-server-safe",
        "safe-server-plaintext",
    ],
)
def test_the_phone_sends_in_every_mode(new_browser, new_phone, redis_client, mode, signs_in):
    browser, phone = new_browser(), new_phone()
    scene = browser.start()["scene"]

    scanned = phone.scan(scene, mode=mode)

    assert scanned["mode"] == mode
    if signs_in:
        assert scanned["status"] == 200
        assert "登录成功" in scanned["reply"]
        assert redis_client.hget(f"login:attempt:{scene}", "openid") == phone.openid
    else:
        assert scanned["status"] == 400
        assert scanned["reply"] is None
        assert redis_client.hget(f"login:attempt:{scene}", "status") == "waiting"
