"""The login websocket against a live threaded server, with a real websocket client."""

import json
import time

import pytest
import requests
import websocket

from tests.conftest import fixture_xml, signed_query, ws_frames


@pytest.fixture
def closing():
    """Collects the close methods of what a test opens, and calls them at its end."""
    closers = []
    yield closers.append
    for close in closers:
        close()


@pytest.fixture
def start_login(live_server, closing):
    """Returns a function: a new browser (a cookie jar) that has asked for a QR code."""

    def start() -> tuple[requests.Session, dict]:
        browser = requests.Session()
        browser.headers["Origin"] = live_server  # as our page in a browser would send
        closing(browser.close)
        response = browser.post(live_server + "/api/login/qrcode")
        assert response.status_code == 200
        return browser, response.json()

    return start


@pytest.fixture
def open_socket(closing):
    """Returns a function: open the login socket with a browser's cookies."""

    def open_(browser: requests.Session, url: str) -> websocket.WebSocket:
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        ws = websocket.create_connection(url, header=[f"Cookie: {cookie}"], timeout=5)
        # shutdown(), not close(): after the server's close frame close() leaves the socket open.
        closing(ws.shutdown)
        return ws

    return open_


def scan(base: str, scene: str, openid: str = "oScanner000000000000000000001") -> str:
    """Post a signed new-follower scan to the callback, as WeChat would; returns the reply."""
    body = fixture_xml("subscribe_qrscene", scene=scene, openid=openid)
    with requests.post(
        base + "/wechat/callback", params=signed_query(), data=body, timeout=5
    ) as response:
        assert response.status_code == 200
        return response.text


def test_waiting_then_confirmed_then_clean_close(live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    first = json.loads(ws.recv())
    assert first["status"] == "waiting"
    assert 170 <= first["expires_in"] <= 180

    assert "登录成功" in scan(live_server, attempt["scene"])

    rest = ws_frames(ws)
    assert [frame["status"] for frame in rest] == ["confirmed"]
    redeemed = browser.post(live_server + "/api/login/redeem", json={"code": rest[0]["code"]})
    assert redeemed.status_code == 200
    assert redeemed.json()["openid"] == "oScanner000000000000000000001"


def test_socket_opened_after_the_scan_gets_the_result_at_once(
    live_server, start_login, open_socket
):
    browser, attempt = start_login()
    scan(live_server, attempt["scene"])
    ws = open_socket(browser, attempt["ws"])
    statuses = [frame["status"] for frame in ws_frames(ws)]
    assert statuses == ["waiting", "confirmed"]


def test_reconnecting_socket_resumes_and_gets_the_result(live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    ws.close()
    scan(live_server, attempt["scene"])
    again = open_socket(browser, attempt["ws"])
    assert [frame["status"] for frame in ws_frames(again)] == ["waiting", "confirmed"]


def test_going_away_closes_waiting_sockets_with_1001_at_once(
    app, live_server, start_login, open_socket
):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"

    started = time.monotonic()
    app.extensions["wechat_login"].hub.go_away()  # what SIGTERM does under gunicorn
    assert ws_frames(ws, code=1001) == []
    assert time.monotonic() - started < 1  # not at the QR's expiry, nor the next idle check
    # A page reconnecting to this process meanwhile is sent on too, before any frame.
    assert ws_frames(open_socket(browser, attempt["ws"]), code=1001) == []


@pytest.mark.parametrize("cookie", [None, "wxlogin_browser=" + "x" * 43])
def test_a_browser_that_did_not_ask_is_refused_without_data(live_server, cookie, start_login):
    _, attempt = start_login()
    header = [f"Cookie: {cookie}"] if cookie else []
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(attempt["ws"], header=header, timeout=5)
    assert refused.value.status_code == 403


def test_a_second_browser_never_receives_another_browsers_login(
    live_server, start_login, open_socket
):
    alice, alice_attempt = start_login()
    bob, bob_attempt = start_login()
    alice_ws = open_socket(alice, alice_attempt["ws"])
    bob_ws = open_socket(bob, bob_attempt["ws"])
    assert json.loads(alice_ws.recv())["status"] == "waiting"
    assert json.loads(bob_ws.recv())["status"] == "waiting"

    scan(live_server, alice_attempt["scene"])
    code = ws_frames(alice_ws)[0]["code"]

    bob_ws.settimeout(1)
    with pytest.raises(websocket.WebSocketTimeoutException):
        bob_ws.recv()
    # Nor can Bob's browser spend Alice's code.
    stolen = bob.post(live_server + "/api/login/redeem", json={"code": code})
    assert stolen.status_code == 400
    assert alice.post(live_server + "/api/login/redeem", json={"code": code}).status_code == 200


@pytest.mark.parametrize("app_overrides", [{"LOGIN_QR_EXPIRE_SECONDS": 1}])
def test_expired_qr_code_is_announced(live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    started = time.monotonic()
    assert [frame["status"] for frame in ws_frames(ws)] == ["waiting", "expired"]
    assert time.monotonic() - started < 3
    assert "刷新" in scan(live_server, attempt["scene"])


@pytest.mark.parametrize("app_overrides", [{"LOGIN_RECHECK_SECONDS": 0.3}])
def test_a_lost_push_costs_a_recheck_not_a_login(app, live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    # Confirm in Redis without publishing: as if the pub/sub message were lost.
    app.extensions["wechat_login"].store.confirm(attempt["scene"], "oLostPush0000000000000000001")
    ws.settimeout(2)
    assert [frame["status"] for frame in ws_frames(ws)] == ["confirmed"]


@pytest.mark.parametrize("app_overrides", [{"LOGIN_WS_PING_SECONDS": 1}])
def test_server_keeps_the_connection_alive_with_pings(live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    opcode, _ = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PING
