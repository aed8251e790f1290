"""The WeChat emulator: its API answers as WeChat does, and its phone posts real callbacks."""

import re
from urllib.parse import urlsplit

import pytest
import requests

from app.emulator import EMULATOR_SETTINGS
from app.emulator.state import MAX_LISTED_TICKETS, EmulatorState

APP_ID = EMULATOR_SETTINGS["WECHAT_APP_ID"]
APP_SECRET = EMULATOR_SETTINGS["WECHAT_APP_SECRET"]
API = "/_emulator/cgi-bin"


def classic_token(client, appid: str, secret: str):
    query = {"grant_type": "client_credential", "appid": appid, "secret": secret}
    return client.get(f"{API}/token", query_string=query)


def stable_token(client, appid: str, secret: str):
    body = {"grant_type": "client_credential", "appid": appid, "secret": secret}
    return client.post(f"{API}/stable_token", json={**body, "force_refresh": False})


@pytest.fixture
def access_token(client) -> str:
    return stable_token(client, APP_ID, APP_SECRET).get_json()["access_token"]


def create_qrcode(client, body: dict, access_token: str | None):
    query = {} if access_token is None else {"access_token": access_token}
    return client.post(f"{API}/qrcode/create", query_string=query, json=body)


def str_scene(scene_str: str, expire_seconds: int = 300) -> dict:
    return {
        "expire_seconds": expire_seconds,
        "action_name": "QR_STR_SCENE",
        "action_info": {"scene": {"scene_str": scene_str}},
    }


def live_scenes(client) -> list[str]:
    return [qrcode["scene_str"] for qrcode in client.get("/_emulator/api/qrcodes").json["qrcodes"]]


@pytest.mark.parametrize("fetch", [classic_token, stable_token])
@pytest.mark.parametrize(
    ("appid", "secret", "errcode"),
    [
        ("wx1234567890abcdef", APP_SECRET, 40013),
        ("", APP_SECRET, 40013),
        (APP_ID, "not-the-secret", 40125),
        (APP_ID, "", 40125),
    ],
    ids=["wrong-appid", "no-appid", "wrong-secret", "no-secret"],
)
def test_token_with_wrong_credentials_is_refused(client, fetch, appid, secret, errcode):
    answer = fetch(client, appid, secret)

    assert answer.status_code == 200  # like WeChat: failures are in the JSON
    assert answer.get_json()["errcode"] == errcode
    assert "access_token" not in answer.get_json()


@pytest.mark.parametrize("fetch", [classic_token, stable_token])
def test_token_with_good_credentials(client, fetch):
    answer = fetch(client, APP_ID, APP_SECRET).get_json()

    assert answer["expires_in"] == 7200
    assert len(answer["access_token"]) >= 64
    assert "errcode" not in answer


@pytest.mark.parametrize(("token", "errcode"), [(None, 41001), ("", 41001), ("not-a-token", 40001)])
def test_qrcode_create_needs_a_valid_token(client, token, errcode):
    answer = create_qrcode(client, str_scene("abc"), token)

    assert answer.get_json()["errcode"] == errcode
    assert live_scenes(client) == []


def opened_ticket(page: str) -> str:
    """The ticket a phone page was opened for (its ``data-ticket``; "" for all of them)."""
    return re.search(r'<body class="phone-page" data-ticket="([^"]*)"', page)[1]


def test_qrcode_create_answers_ticket_and_a_url_shaped_as_wechats(client, access_token):
    answer = create_qrcode(client, str_scene("my-scene", 300), access_token).get_json()

    assert answer["expire_seconds"] == 300
    # WeChat's: http://weixin.qq.com/q/ and 22 characters; ours is on this site.
    assert re.fullmatch(r"http://localhost/_emulator/q/[A-Za-z0-9_-]{22}", answer["url"])
    assert live_scenes(client) == ["my-scene"]
    [listed] = client.get("/_emulator/api/qrcodes").json["qrcodes"]
    assert (listed["ticket"], listed["url"]) == (answer["ticket"], answer["url"])


def test_the_qr_url_opens_the_phone_on_its_ticket(client, access_token):
    mine = create_qrcode(client, str_scene("mine"), access_token).get_json()
    create_qrcode(client, str_scene("another"), access_token)

    page = client.get(urlsplit(mine["url"]).path)

    assert page.status_code == 200
    assert opened_ticket(page.text) == mine["ticket"]


def test_an_unknown_qr_url_is_not_found(client, access_token):
    create_qrcode(client, str_scene("mine"), access_token)

    page = client.get("/_emulator/q/02Uh_NljThcGi10000g07t")

    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert "这个二维码已失效或不存在。" in page.text


def test_qrcode_create_without_the_scene_wrapper_is_scene_0(client, access_token):
    body = {"expire_seconds": 300, "action_name": "QR_SCENE", "action_info": {"scene_id": 123}}

    answer = create_qrcode(client, body, access_token).get_json()

    assert "ticket" in answer
    assert live_scenes(client) == ["0"]


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (str_scene("abc", 2592001), 40097),
        (str_scene("abc", 0), 40097),
        (str_scene("x" * 65), 40097),
        (str_scene(""), 40097),
        ({**str_scene("abc"), "action_name": "QR_LIMIT_SCENE"}, 40097),
    ],
    ids=["over-30-days", "zero-seconds", "scene-too-long", "empty-scene", "permanent"],
)
def test_qrcode_create_refuses_bad_arguments(client, access_token, body, errcode):
    assert create_qrcode(client, body, access_token).get_json()["errcode"] == errcode


def test_qrcode_create_allows_30_days(client, access_token):
    answer = create_qrcode(client, str_scene("abc", 2592000), access_token).get_json()

    assert answer["expire_seconds"] == 2592000


def test_user_info_of_a_non_follower(client, access_token):
    query = {"access_token": access_token, "openid": "oNotAFollower000000000000000"}

    answer = client.get(f"{API}/user/info", query_string=query).get_json()

    assert answer == {"subscribe": 0, "openid": "oNotAFollower000000000000000"}


def test_users_info_answers_each_user_as_user_info_does(client, access_token, redis_client):
    EmulatorState(redis_client).follow("oFollower00000000000000000001", "1-scene")
    users = [{"openid": "oFollower00000000000000000001"}, {"openid": "oNotAFollower0000000000000"}]

    answer = client.post(
        f"{API}/user/info/batchget",
        query_string={"access_token": access_token},
        json={"user_list": users},
    ).get_json()

    one = client.get(
        f"{API}/user/info",
        query_string={"access_token": access_token, "openid": "oFollower00000000000000000001"},
    ).get_json()
    assert answer["user_info_list"] == [one, {"subscribe": 0, "openid": users[1]["openid"]}]
    assert one["unionid"] == "uFollower00000000000000000001"


@pytest.mark.parametrize(
    "user_list", [[], [{"openid": ""}], ["oNotAnObject"], [{"openid": "o1"}] * 101, "o1"]
)
def test_users_info_refuses_a_bad_user_list(client, access_token, user_list):
    answer = client.post(
        f"{API}/user/info/batchget",
        query_string={"access_token": access_token},
        json={"user_list": user_list},
    ).get_json()

    assert answer["errcode"] == 40003


@pytest.mark.parametrize(
    ("api", "call"),
    [
        ("token", lambda client, _: classic_token(client, APP_ID, APP_SECRET)),
        ("stable_token", lambda client, _: stable_token(client, APP_ID, APP_SECRET)),
        ("qrcode/create", lambda client, token: create_qrcode(client, str_scene("abc"), token)),
    ],
)
def test_injected_fault_applies_once(client, access_token, api, call):
    injected = client.post("/_emulator/api/faults", json={"api": api, "errcode": 45009})
    assert injected.get_json() == {"ok": True}

    first = call(client, access_token).get_json()
    second = call(client, access_token).get_json()

    assert first["errcode"] == 45009
    assert "errcode" not in second


def test_phone_page_gives_the_browser_an_openid(client):
    page = client.get("/_emulator/phone")

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    openid = client.get_cookie("emulator_openid").value
    assert len(openid) == 28 and openid.startswith("o")
    client.get("/_emulator/phone")
    assert client.get_cookie("emulator_openid").value == openid


def phone_scan(base: str, follower: str, **headers: str) -> tuple[str, requests.Response]:
    """A browser asks for a QR code and the emulated phone scans it (``follower``: ``new`` or
    ``returning``), its request carrying ``headers``: ``(scene, the phone API's answer)``."""
    with requests.Session() as browser:
        browser.headers["Origin"] = base
        created = browser.post(f"{base}/api/login/qrcode", timeout=5).json()
        # What the phone does with the url its camera read: open it, scan the ticket shown.
        ticket = opened_ticket(browser.get(created["qrcode"], timeout=5).text)
        scene = created["scene"]
        answer = browser.post(
            f"{base}/_emulator/api/scan",
            json={"ticket": ticket, "follower": follower},
            headers=headers,
            timeout=10,
        )
    return scene, answer


@pytest.mark.parametrize(("follower", "event"), [("new", "subscribe"), ("returning", "SCAN")])
def test_phone_scan_signs_the_browser_in(live_server, redis_client, follower, event):
    scene, answer = phone_scan(live_server, follower)

    assert answer.status_code == 200
    scanned = answer.json()
    assert scanned["event"] == event
    assert scanned["status"] == 200
    assert "登录成功" in scanned["reply"]
    attempt = redis_client.hgetall(f"login:attempt:{scene}")
    assert attempt["status"] == "confirmed"
    assert attempt["openid"] == scanned["openid"]


@pytest.fixture
def elsewhere(serve) -> tuple[list[str], str]:
    """A server that is not ours, recording the path of each request it gets: ``(paths,
    "127.0.0.1:<port>")``."""
    paths: list[str] = []

    def wsgi_app(environ, start_response):
        paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"success"]

    return paths, serve(wsgi_app).removeprefix("http://")


@pytest.mark.parametrize(
    ("app_overrides", "header"),
    [({}, "Host"), ({"TRUSTED_PROXIES": 1}, "X-Forwarded-Host")],
    ids=["host", "forwarded-host-behind-a-proxy"],
)
def test_a_crafted_host_does_not_send_the_phone_elsewhere(
    live_server, redis_client, elsewhere, header
):
    # The phone posts signed messages: a request naming another host must not make it post
    # them there, where they could be replayed against our callback.
    paths, other_host = elsewhere
    scene, answer = phone_scan(live_server, "returning", **{header: other_host})

    assert paths == []
    assert answer.json()["status"] == 200
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "confirmed"


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            "/_emulator/api/scan",
            {"ticket": "gQnosuchticket==", "follower": "new"},
            404,
            "unknown_ticket",
        ),
        ("/_emulator/api/message", {"content": ""}, 400, "empty_message"),
        ("/_emulator/api/faults", {"errcode": 45009}, 400, "bad_request"),
    ],
    ids=["unknown-ticket", "empty-message", "fault-without-api"],
)
def test_phone_api_errors_are_json(client, path, body, status, error):
    answer = client.post(path, json=body)

    assert answer.status_code == status
    assert answer.is_json, answer.mimetype
    assert answer.get_json()["error"] == error


def test_the_record_of_qr_tickets_is_bounded(redis_client):
    # The load test creates QR codes by the thousand and nobody opens the phone page.
    state = EmulatorState(redis_client)
    tickets = [state.create_ticket(f"scene-{i}", 3600) for i in range(MAX_LISTED_TICKETS + 20)]

    assert redis_client.zcard("emulator:tickets") == MAX_LISTED_TICKETS
    listed = state.live_tickets()
    assert [ticket.scene_str for ticket in listed] == [
        ticket.scene_str for ticket in reversed(tickets[-MAX_LISTED_TICKETS:])
    ]
    # Off the list, a ticket still scans until it expires.
    assert state.get_ticket(tickets[0].ticket) == tickets[0]
