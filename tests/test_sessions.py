"""Ending a session is final: sign-out and the scanner's "0" hold in every worker, against
requests already in flight, and against a redeem racing the "0"."""

import random
import threading
import time

import pytest
import requests
import websocket
from flask import session

from app.views.cookies import browser_hash
from tests.conftest import SCANNER, confirmed_code, page_client, say, scan, sign_in, ws_frames

#: Many sign-ins from one address: the QR-creation limit is not what these tests are about.
UNLIMITED = {"LOGIN_RATE_LIMIT": "off"}
NEW_DEVICE = {"LOGIN_CONFIRM": "new_device", **UNLIMITED}


@pytest.fixture
def app_overrides() -> dict:
    return UNLIMITED


def session_keys(redis_client) -> list[str]:
    return [
        key for key in redis_client.scan_iter("session:*") if not key.startswith("session:ended:")
    ]


# Nothing in flight writes an ended session back.


@pytest.mark.parametrize("changed", [False, True], ids=["unchanged", "changed"])
def test_a_request_in_flight_cannot_write_an_ended_session_back(app, client, redis_client, changed):
    session_id = sign_in(client, redis_client)
    sessions = app.session_interface
    # A slow request of the same browser, begun while the session was live...
    with app.test_request_context("/api/me", headers={"Cookie": f"session={session_id}"}):
        assert session["openid"] == SCANNER
        # ...meanwhile the browser signs out, on another worker.
        assert client.post("/api/logout").status_code == 200
        if changed:
            session["visited"] = "yes"
        sessions.save_session(app, session, app.response_class())

    assert not redis_client.exists(f"session:{session_id}")
    replayed = page_client(app)
    replayed.set_cookie("session", session_id)
    assert replayed.get("/api/me").status_code == 401


def test_a_socket_closing_after_sign_out_does_not_bring_the_session_back(
    app, live_server, redis_client
):
    with requests.Session() as browser:
        browser.headers["Origin"] = live_server
        attempt = browser.post(live_server + "/api/login/qrcode", timeout=5).json()
        scan(page_client(app), attempt["scene"])
        code = redis_client.hget(f"login:attempt:{attempt['scene']}", "code")
        assert browser.post(live_server + "/api/login/redeem", json={"code": code}).ok
        session_id = browser.cookies["session"]
        # The signed-in browser waits on a socket for another login, holding its session.
        waiting = browser.post(live_server + "/api/login/qrcode", timeout=5).json()
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        ws = websocket.create_connection(waiting["ws"], header=[f"Cookie: {cookie}"], timeout=5)
        try:
            assert ws.recv()
            assert browser.post(live_server + "/api/logout", timeout=5).json() == {"ok": True}
            scan(page_client(app), waiting["scene"], "oSomeoneElse")  # the socket now ends
            ws_frames(ws)
        finally:
            ws.shutdown()  # not close(): after the server's close frame it leaves the socket open
        # The socket's request finished after the sign-out: it must not have saved the session.
        replayed = requests.get(live_server + "/api/me", cookies={"session": session_id}, timeout=5)

    assert replayed.status_code == 401
    assert not redis_client.exists(f"session:{session_id}")


def test_an_ended_session_id_is_never_valid_again(app, client, redis_client):
    session_id = sign_in(client, redis_client)
    assert client.post("/api/logout").status_code == 200

    # Even written back by hand into the store through the app's own save path.
    with app.test_request_context("/"):
        app.session_interface.start(session, session_id, {"openid": SCANNER})
        app.session_interface.save_session(app, session, app.response_class())

    assert not redis_client.exists(f"session:{session_id}")


def test_sign_out_deletes_what_it_no_longer_needs(client, redis_client):
    sign_in(client, redis_client)

    assert client.post("/api/logout").status_code == 200

    assert list(redis_client.scan_iter("login:signin*")) == []
    assert list(redis_client.scan_iter("login:session:*")) == []
    assert session_keys(redis_client) == []


# "0" ends every recent login of the scanner.


def test_0_ends_every_session_the_openid_signed_in_and_says_how_many(app, redis_client):
    laptop, desktop, bystander = page_client(app), page_client(app), page_client(app)
    laptop_id = sign_in(laptop, redis_client)
    desktop_id = sign_in(desktop, redis_client)
    sign_in(bystander, redis_client, "oSomeoneElse")

    reply = say(laptop, "0")

    assert "已退出 2 个登录" in reply
    assert laptop.get("/api/me").status_code == 401
    assert desktop.get("/api/me").status_code == 401
    assert bystander.get("/api/me").status_code == 200
    assert not redis_client.exists(f"session:{laptop_id}", f"session:{desktop_id}")
    assert "没有可以退出的登录" in say(laptop, "0")


def test_0_also_voids_a_code_not_yet_redeemed(app, client, redis_client):
    sign_in(client, redis_client)
    other = page_client(app)
    code = confirmed_code(other, redis_client)

    assert "已退出 2 个登录" in say(client, "0")

    assert other.post("/api/login/redeem", json={"code": code}).status_code == 400
    assert other.get("/api/me").status_code == 401


@pytest.mark.parametrize("app_overrides", [NEW_DEVICE], ids=["new_device"])
def test_a_login_ended_with_0_leaves_no_known_device_trust(client, redis_client):
    sign_in(client, redis_client)  # a new browser: confirmed with "1", and now known
    assert "已退出 1 个登录" in say(client, "0")

    scene = client.post("/api/login/qrcode").get_json()["scene"]

    assert "回复 1 确认登录" in scan(client, scene)


# A redeem racing the "0".


@pytest.fixture
def service(app):
    return app.extensions["wechat_login"]


def test_0_between_the_code_spent_and_the_session_bound_refuses_the_session(
    app, client, redis_client, service
):
    code = confirmed_code(client, redis_client)
    owner = next(iter(redis_client.scan_iter("login:attempt:*")))
    browser_hash = redis_client.hget(owner, "browser_hash")
    openid, scene = service.store.redeem(code, browser_hash)  # the redeem has spent the code

    assert "已退出 1 个登录" in say(client, "0")  # the "0" lands now

    assert service.store.bind_session(scene, openid, "session-of-the-racing-redeem") is False
    assert not service.users.knows_device(openid, browser_hash)


def test_0_after_the_session_bound_ends_it_before_it_is_written(app, client, redis_client):
    code = confirmed_code(client, redis_client)
    binding = client.get_cookie("wxlogin_browser").value
    sessions, service = app.session_interface, app.extensions["wechat_login"]
    with app.test_request_context(headers={"Cookie": f"wxlogin_browser={binding}"}):
        session_id = sessions.new_session_id()
        user, scene = service.redeem(code, browser_hash(), session_id)  # bound, not yet saved
        sessions.start(session, session_id, {"openid": user.openid, "scene": scene})

        assert "已退出 1 个登录" in say(client, "0")  # the "0" lands before the response

        sessions.save_session(app, session, app.response_class())

    assert not redis_client.exists(f"session:{session_id}")


def test_redeems_racing_0_never_leave_a_live_session(app, live_server, redis_client):
    """Real requests at the same moment, many times: whichever wins, the browser ends signed
    out, never with a live session of an openid that said "0"."""
    for round_ in range(15):
        openid = f"oRacingScanner{round_:014d}"
        with requests.Session() as browser:
            browser.headers["Origin"] = live_server
            scene = browser.post(live_server + "/api/login/qrcode", timeout=5).json()["scene"]
            scan(page_client(app), scene, openid)
            code = redis_client.hget(f"login:attempt:{scene}", "code")
            start = threading.Barrier(2)

            def redeem(browser=browser, code=code, start=start) -> None:
                start.wait()
                browser.post(live_server + "/api/login/redeem", json={"code": code}, timeout=5)

            racer = threading.Thread(target=redeem)
            racer.start()
            start.wait()
            time.sleep(random.uniform(0, 0.02))  # either may come first: both orders occur
            say(page_client(app), "0", openid)
            racer.join(10)

            assert browser.get(live_server + "/api/me", timeout=5).status_code == 401
        assert not session_keys(redis_client)
