"""The login websocket against a live threaded server, with a real websocket client."""

import json
import socket
import time

import pytest
import requests
import websocket

from app.views.ws import REPLACED_CLOSE_CODE
from app.wechat.delivery import scan_event
from tests.conftest import ACCOUNT_ID, deliver, ws_frames


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
    """Returns a function: open the login socket with a browser's cookies (and, behind a
    trusted proxy, the client address it forwards)."""

    def open_(
        browser: requests.Session, url: str, forwarded_for: str | None = None
    ) -> websocket.WebSocket:
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        header = [f"Cookie: {cookie}"]
        if forwarded_for is not None:  # the client's address, as our trusted proxy says
            header.append(f"X-Forwarded-For: {forwarded_for}")
        ws = websocket.create_connection(url, header=header, timeout=5)
        # shutdown(), not close(): after the server's close frame close() leaves the socket open.
        closing(ws.shutdown)
        return ws

    return open_


def scan(base: str, scene: str, openid: str = "oScanner000000000000000000001") -> str:
    """Post a signed new-follower scan to the callback, as WeChat would; returns the reply."""
    with deliver(base, scan_event(ACCOUNT_ID, openid, scene, new_follower=True)) as response:
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
    # Confirmed and announced, but on a channel nobody listens to: as if the pub/sub message
    # were lost. The change is still in the stream the sweep reads.
    service = app.extensions["wechat_login"]
    _, message, stream = service.hub.announcement(attempt["scene"])
    service.store.confirm(
        attempt["scene"], "oLostPush0000000000000000001", announce=("nobody", message, stream)
    )
    ws.settimeout(2)
    assert [frame["status"] for frame in ws_frames(ws)] == ["confirmed"]


@pytest.mark.parametrize("app_overrides", [{"LOGIN_WS_PING_SECONDS": 1}])
def test_server_keeps_the_connection_alive_with_pings(live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    opcode, _ = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PING


@pytest.mark.parametrize("app_overrides", [{"LOGIN_WS_PING_SECONDS": 1}])
def test_a_browser_that_answers_pings_is_kept(app, live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    for _ in range(3):  # each read answers the ping it returns, as a browser does
        opcode, _ = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PING
    assert app.extensions["wechat_login"].hub.waiting_count() == 1


@pytest.mark.parametrize("app_overrides", [{"LOGIN_WS_PING_SECONDS": 1}])
def test_a_dead_peer_is_closed_and_its_socket_freed(app, live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    time.sleep(2.5)  # reads nothing, so answers no ping: as a peer that vanished
    ws.settimeout(3)
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PING  # the one it never answered
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1008
    wait_until_no_socket_waits(app)


def test_a_browser_that_left_is_noticed_at_once(app, live_server, start_login, open_socket):
    # Long before any ping (25 s): the socket's reader wakes it when the connection ends.
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    ws.sock.shutdown(socket.SHUT_RDWR)  # gone without a close frame, as a closed laptop lid
    wait_until_no_socket_waits(app)


def test_a_browser_that_talks_is_closed_with_1008(app, live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    ws.send("hello")  # our page never sends anything
    ws.settimeout(2)
    assert ws_frames(ws, code=1008) == []
    wait_until_no_socket_waits(app)


# Two tabs of one browser share its attempt (its live QR code)

#: A sweep that never comes within a test: only the push can deliver.
SLOW_SWEEP = {"LOGIN_RECHECK_SECONDS": 60}


@pytest.mark.parametrize("app_overrides", [SLOW_SWEEP])
def test_two_tabs_on_one_attempt_both_get_confirmed_by_the_push(
    live_server, start_login, open_socket
):
    browser, attempt = start_login()
    tabs = [open_socket(browser, attempt["ws"]) for _ in range(2)]
    for tab in tabs:
        assert json.loads(tab.recv())["status"] == "waiting"

    scan(live_server, attempt["scene"])

    codes = []
    for tab in tabs:
        tab.settimeout(2)  # well before the sweep: the push woke both
        [confirmed] = ws_frames(tab)
        assert confirmed["status"] == "confirmed"
        codes.append(confirmed["code"])
    assert codes[0] == codes[1]


@pytest.mark.parametrize("app_overrides", [SLOW_SWEEP])
def test_going_away_closes_both_tabs_of_one_attempt_with_1001(
    app, live_server, start_login, open_socket
):
    browser, attempt = start_login()
    tabs = [open_socket(browser, attempt["ws"]) for _ in range(2)]
    for tab in tabs:
        assert json.loads(tab.recv())["status"] == "waiting"

    app.extensions["wechat_login"].hub.go_away()

    for tab in tabs:
        tab.settimeout(1)
        assert ws_frames(tab, code=1001) == []


# Fair limits: no client can take the slots another needs


def test_a_third_socket_on_one_attempt_sends_the_oldest_away(live_server, start_login, open_socket):
    browser, attempt = start_login()
    oldest, *others = [open_socket(browser, attempt["ws"]) for _ in range(2)]
    for ws in (oldest, *others):
        assert json.loads(ws.recv())["status"] == "waiting"

    newest = open_socket(browser, attempt["ws"])
    assert json.loads(newest.recv())["status"] == "waiting"

    # A code the page does not reconnect on: two tabs never take turns sending each other away.
    oldest.settimeout(2)
    assert ws_frames(oldest, code=REPLACED_CLOSE_CODE) == []
    scan(live_server, attempt["scene"])
    for ws in (*others, newest):
        assert [frame["status"] for frame in ws_frames(ws)] == ["confirmed"]


def wait_until_no_socket_waits(app) -> None:
    """Until the server's side of every socket has ended (it runs on its own thread)."""
    hub = app.extensions["wechat_login"].hub
    deadline = time.monotonic() + 5
    while hub.waiting_count():
        assert time.monotonic() < deadline, "a socket is still held"
        time.sleep(0.05)


#: Two sockets per client address, three per worker: a client reaches its own cap first.
SMALL_CAPS = {"TRUSTED_PROXIES": 1, "LOGIN_MAX_SOCKETS_PER_IP": 2, "LOGIN_MAX_SOCKETS": 3}


@pytest.mark.parametrize("app_overrides", [SMALL_CAPS])
@pytest.mark.parametrize(
    ("attacker", "neighbour"),
    [("203.0.113.5", "203.0.113.5"), ("2001:db8:1:2::5", "2001:db8:1:2:ffff::6")],
    ids=["ipv4", "ipv6-same-64"],
)
def test_one_client_cannot_fill_the_sockets_of_a_worker(
    live_server, start_login, open_socket, attacker, neighbour
):
    bots = [start_login() for _ in range(2)]
    for browser, attempt in bots:
        ws = open_socket(browser, attempt["ws"], forwarded_for=attacker)
        assert json.loads(ws.recv())["status"] == "waiting"

    # Over its cap, the same client (or another address of its IPv6 /64) is refused before
    # the upgrade, and costs the worker no socket...
    browser, attempt = start_login()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_socket(browser, attempt["ws"], forwarded_for=neighbour)
    assert refused.value.status_code == 429

    # ... so a victim elsewhere still gets in, not a 1013.
    victim, victim_attempt = start_login()
    ws = open_socket(victim, victim_attempt["ws"], forwarded_for="198.51.100.7")
    assert json.loads(ws.recv())["status"] == "waiting"


@pytest.mark.parametrize("app_overrides", [{**SMALL_CAPS, "LOGIN_MAX_SOCKETS_PER_IP": 1}])
def test_a_client_gets_its_slot_back_when_its_socket_ends(
    app, live_server, start_login, open_socket
):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"], forwarded_for="203.0.113.9")
    assert json.loads(ws.recv())["status"] == "waiting"
    scan(live_server, attempt["scene"])
    assert [frame["status"] for frame in ws_frames(ws)] == ["confirmed"]

    wait_until_no_socket_waits(app)
    again, again_attempt = start_login()
    ws = open_socket(again, again_attempt["ws"], forwarded_for="203.0.113.9")
    assert json.loads(ws.recv())["status"] == "waiting"


# The close path


def test_a_page_that_closed_first_is_let_go_without_an_error(
    app, live_server, start_login, open_socket, caplog
):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"
    ws.send_close()
    assert ws_frames(ws) == []  # our close, answered

    app.extensions["wechat_login"].hub.go_away()  # the server now closes what is closed

    wait_until_no_socket_waits(app)
    assert not [record for record in caplog.records if record.exc_info]


@pytest.mark.parametrize("app_overrides", [{"LOGIN_MAX_SOCKETS": 1}])
def test_a_full_worker_closes_new_sockets_with_1013(live_server, start_login, open_socket):
    browser, attempt = start_login()
    ws = open_socket(browser, attempt["ws"])
    assert json.loads(ws.recv())["status"] == "waiting"

    other, other_attempt = start_login()
    assert ws_frames(open_socket(other, other_attempt["ws"]), code=1013) == []
