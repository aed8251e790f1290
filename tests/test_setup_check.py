"""``flask wechat check`` against the emulator with injected failures and against real local
servers standing at the callback URL; ``flask wechat simulate-scan`` against a live server."""

from collections.abc import Callable

import pytest
from werkzeug.wrappers import Request, Response

from app import create_app
from app.login.service import TAKEN_REPLY, UNKNOWN_REPLY
from config import TestingConfig
from tests.conftest import fixture_xml
from tests.test_callback import KEY

#: Settings of every app here: QR codes are created freely.
SETTINGS = {"LOGIN_RATE_LIMIT": "off"}


@pytest.fixture
def app_overrides() -> dict:
    return SETTINGS


def run(app, *args: str):
    """Run ``flask wechat ...`` on ``app``; the result has ``exit_code`` and ``output``."""
    return app.test_cli_runner().invoke(args=["wechat", *args])


def line(output: str, item: str) -> str:
    """The verdict line of ``item`` and its fix line, if any."""
    lines = output.splitlines()
    for index, text in enumerate(lines):
        if f"] {item}:" in text:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            return text + ("\n" + following if following.strip().startswith("fix:") else "")
    raise AssertionError(f"no line for {item} in:\n{output}")


def answering(make_response: Callable[[Request], Response]):
    """A WSGI app answering every request with ``make_response(request)``."""

    def wsgi_app(environ, start_response):
        return make_response(Request(environ))(environ, start_response)

    return wsgi_app


def test_a_working_setup_passes_with_the_port_warning(app, live_server):
    app.config["PUBLIC_BASE_URL"] = live_server

    result = run(app, "check")

    assert result.exit_code == 0, result.output
    assert line(result.output, "credentials").startswith("[ ok ]")
    assert line(result.output, "QR creation").startswith("[ ok ]")
    assert line(result.output, "Redis").startswith("[ ok ]")
    callback = line(result.output, "callback URL")
    assert callback.startswith("[warn]")  # a test server cannot have port 80
    assert "answers WeChat's verification" in callback
    assert "WeChat only calls http on port 80" in callback
    assert "0 failed" in result.output


def test_without_public_base_url_the_callback_is_a_warning_not_a_failure(app):
    result = run(app, "check")

    assert result.exit_code == 0
    assert "PUBLIC_BASE_URL is unset" in line(result.output, "callback URL")


def inject(client, api: str, errcode: int, count: int = 1) -> None:
    answer = client.post(
        "/_emulator/api/faults", json={"api": api, "errcode": errcode, "count": count}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("errcode", "fix"),
    [
        (40013, "WECHAT_APP_ID is not a valid AppID"),
        (40125, "WECHAT_APP_SECRET is wrong"),
        (40001, "WECHAT_APP_SECRET is wrong"),  # the token endpoints' word for a bad secret
        (40164, "add 127.0.0.1 to the IP whitelist"),  # the caller IP, from WeChat's errmsg
        (45009, "quota"),
    ],
)
def test_credential_failures_are_explained_and_fail_the_check(app, client, errcode, fix):
    inject(client, "stable_token", errcode)

    result = run(app, "check")

    assert result.exit_code == 1
    credentials = line(result.output, "credentials")
    assert credentials.startswith("[FAIL]")
    assert f"errcode {errcode}" in credentials
    assert fix in credentials
    assert "not tried: no access_token" in line(result.output, "QR creation")


def test_a_busy_wechat_is_tried_twice_then_explained(app, client):
    inject(client, "stable_token", -1, count=2)

    result = run(app, "check")

    assert result.exit_code == 1
    assert "WeChat is busy" in line(result.output, "credentials")


def test_an_account_that_cannot_make_parametric_qr_codes_is_told_which_can(app, client):
    inject(client, "qrcode/create", 48001)

    result = run(app, "check")

    assert result.exit_code == 1
    assert line(result.output, "credentials").startswith("[ ok ]")
    qr = line(result.output, "QR creation")
    assert qr.startswith("[FAIL]") and "errcode 48001" in qr
    assert "verified service account" in qr and "sandbox test account" in qr


def test_the_token_is_fetched_from_wechat_not_read_from_the_cache(app, client, redis_client):
    # A valid token is cached, yet WeChat refusing the credentials fails the check.
    client.post("/api/login/qrcode")  # caches a token
    assert redis_client.get("wechat:access_token:wx00000000emulator")
    inject(client, "stable_token", 40125)

    assert run(app, "check").exit_code == 1

    # And a success replaces the cached token with the one just fetched.
    redis_client.set("wechat:access_token:wx00000000emulator", "stale-token")
    assert run(app, "check").exit_code == 0
    assert redis_client.get("wechat:access_token:wx00000000emulator") != "stale-token"


def check_with(settings: dict):
    """``flask wechat check`` on an app of its own, built with ``settings``."""
    own = create_app(TestingConfig, settings)
    try:
        return run(own, "check")
    finally:
        own.extensions["wechat_login"].close()


def test_an_unreachable_wechat_is_a_network_failure(redis_url):
    result = check_with(
        {
            "REDIS_URL": redis_url,
            "WECHAT_APP_ID": "wx1234567890abcdef",
            "WECHAT_APP_SECRET": "secret-of-the-test-account",
            "WECHAT_TOKEN": "tokenofthetestaccount",
            "WECHAT_API_BASE": "http://127.0.0.1:1",  # nothing listens on port 1
            "WECHAT_HTTP_TIMEOUT": 1,
        }
    )

    assert result.exit_code == 1
    assert line(result.output, "settings").startswith("[ ok ] settings: AppID wx1234567890abcdef")
    credentials = line(result.output, "credentials")
    assert "WeChat was not reached" in credentials and "firewall" in credentials
    assert "secret-of-the-test-account" not in result.output


@pytest.mark.parametrize(
    ("make_response", "expected"),
    [
        (
            lambda request: Response(f'"{request.args["echostr"]}"', mimetype="application/json"),
            "JSON-quoted",
        ),
        (
            lambda request: Response(
                "<html><h1>404 Not Found</h1></html>", 404, mimetype="text/html"
            ),
            "answered an HTML page (HTTP 404)",
        ),
        (lambda request: Response("bad signature", 403), "another Token"),
        (
            lambda request: Response("", 301, headers={"Location": "https://example.com/cb"}),
            "redirects (HTTP 301) to https://example.com/cb",
        ),
        (lambda request: Response("ok"), "answered HTTP 200 with 'ok'"),
    ],
    ids=["json-quoted", "html-error", "other-token", "redirect", "wrong-text"],
)
def test_a_callback_url_that_does_not_echo_fails_with_the_reason(
    app, serve, make_response, expected
):
    app.config["PUBLIC_BASE_URL"] = serve(answering(make_response))

    result = run(app, "check")

    assert result.exit_code == 1
    callback = line(result.output, "callback URL")
    assert callback.startswith("[FAIL]")
    assert expected in callback


def test_a_callback_on_another_token_is_refused_by_our_own_app(app, redis_url, serve):
    # The real thing: this app, deployed at the URL with another WECHAT_TOKEN.
    other = create_app(TestingConfig, {"REDIS_URL": redis_url, "WECHAT_TOKEN": "anothertoken"})
    app.config["PUBLIC_BASE_URL"] = serve(other)

    result = run(app, "check")

    other.extensions["wechat_login"].close()
    assert result.exit_code == 1
    assert "another Token" in line(result.output, "callback URL")


def echoing(received: list[dict[str, str]]):
    """A WSGI app that answers WeChat's verification and records each query it was sent."""

    def make_response(request: Request) -> Response:
        received.append(dict(request.args))
        return Response(request.args.get("echostr", ""), mimetype="text/plain")

    return answering(make_response)


def test_the_verification_query_of_the_check_opens_no_post(app, client, redis_client, serve):
    # The query went to whoever stands at PUBLIC_BASE_URL (a tunnel, a proxy logging it), not
    # to our callback: posted there with a scan, it must sign nobody in.
    received = []
    app.config["PUBLIC_BASE_URL"] = serve(echoing(received))
    scene = start_attempt(client)

    assert run(app, "check").exit_code == 0
    [query] = received
    posted = client.post(
        "/wechat/callback",
        query_string=query,
        data=fixture_xml("scan", openid="oScanner0000000000000000001", scene=scene),
        content_type="text/xml",
    )

    assert posted.status_code == 403
    assert redis_client.hget(f"login:attempt:{scene}", "status") == "waiting"
    # What it was made for, the verification, it still passes, once.
    verifications = [client.get("/wechat/callback", query_string=query) for _ in range(2)]
    assert [answer.status_code for answer in verifications] == [200, 403]
    assert verifications[0].data == query["echostr"].encode()


def test_without_redis_the_verification_query_is_not_sent(serve):
    received = []
    result = check_with(
        {
            **SETTINGS,
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "PUBLIC_BASE_URL": serve(echoing(received)),
        }
    )

    assert result.exit_code == 1
    callback = line(result.output, "callback URL")
    assert callback.startswith("[FAIL]") and "Redis" in callback
    assert received == []


def test_an_unreachable_callback_url_fails(app):
    app.config["PUBLIC_BASE_URL"] = "http://127.0.0.1:1"

    result = run(app, "check")

    assert result.exit_code == 1
    assert "could not be reached" in line(result.output, "callback URL")


def test_an_untrusted_certificate_fails(app, serve):
    base = serve(answering(lambda request: Response(request.args["echostr"])), "adhoc")
    app.config["PUBLIC_BASE_URL"] = base

    result = run(app, "check")

    assert result.exit_code == 1
    assert "TLS certificate is not trusted" in line(result.output, "callback URL")


def test_redis_down_fails():
    result = check_with({**SETTINGS, "REDIS_URL": "redis://127.0.0.1:1/0"})

    assert result.exit_code == 1
    assert line(result.output, "Redis").startswith("[FAIL] Redis: does not answer")
    assert "not tried: no Redis" in line(result.output, "credentials")


# simulate-scan


def start_attempt(client) -> str:
    response = client.post("/api/login/qrcode")
    assert response.status_code == 200
    return response.get_json()["scene"]


@pytest.mark.parametrize(
    ("flags", "event"), [([], "SCAN"), (["--new-follower"], "subscribe")], ids=["scan", "new"]
)
def test_simulated_scan_signs_the_waiting_browser_in(app, client, live_server, flags, event):
    scene = start_attempt(client)

    result = run(app, "simulate-scan", scene, "--url", live_server, *flags)

    assert result.exit_code == 0, result.output
    assert f"{event} " in result.output and "HTTP 200" in result.output
    assert "登录成功" in result.output
    attempt = app.extensions["wechat_login"].store.get_attempt(scene)
    assert attempt.status.value == "confirmed"
    assert attempt.openid == "oSimulatedScan00000000000001"


@pytest.mark.parametrize(
    "app_overrides", [{**SETTINGS, "WECHAT_ENCODING_AES_KEY": KEY}], ids=["safe"]
)
def test_simulated_scan_is_encrypted_in_safe_mode(app, client, live_server):
    scene = start_attempt(client)

    result = run(app, "simulate-scan", scene, "--url", live_server)

    assert result.exit_code == 0, result.output
    assert "(safe)" in result.output and "登录成功" in result.output
    assert app.extensions["wechat_login"].store.get_attempt(scene).status.value == "confirmed"


def test_simulated_scan_of_an_unknown_scene_shows_the_polite_reply_and_fails(app, live_server):
    result = run(
        app, "simulate-scan", "1700000000000-000000000000000000000000", "--url", live_server
    )

    assert result.exit_code == 1
    assert UNKNOWN_REPLY in result.output
    assert "no browser is waiting on scene 1700000000000-" in result.output


def test_simulated_scan_of_a_scene_taken_by_another_scanner_fails(app, client, live_server):
    scene = start_attempt(client)
    assert run(app, "simulate-scan", scene, "--url", live_server).exit_code == 0

    result = run(app, "simulate-scan", scene, "--url", live_server, "--openid", "oSomeoneElse")

    assert result.exit_code == 1
    assert TAKEN_REPLY in result.output


def test_simulated_scan_to_a_server_that_refuses_exits_non_zero(app, redis_url, serve):
    other = create_app(TestingConfig, {"REDIS_URL": redis_url, "WECHAT_TOKEN": "anothertoken"})
    base = serve(other)

    result = run(app, "simulate-scan", "1700000000000-000000000000000000000000", "--url", base)

    other.extensions["wechat_login"].close()
    assert result.exit_code == 1
    assert "HTTP 403" in result.output
    assert "WECHAT_TOKEN differs from the server's" in result.output


def test_simulated_scan_to_nothing_says_so(app):
    result = run(app, "simulate-scan", "abc", "--url", "http://127.0.0.1:1")

    assert result.exit_code == 1
    assert "could not be reached" in result.output
