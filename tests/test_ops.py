"""Health, readiness and metrics endpoints; log lines."""

import json
import time

import pytest
import redis

from tests.conftest import fixture_xml, signed_query
from tests.test_faults import Browser, scan

#: Nothing listens on port 1: every Redis call fails at once.
REDIS_DOWN = {"REDIS_URL": "redis://127.0.0.1:1/0"}


def metric(client, name: str) -> float:
    """One sample's value from /metrics (0 when absent)."""
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_healthz_answers_while_the_process_is_up(client):
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_when_redis_answers_and_the_listener_is_subscribed(app, client):
    response = client.get("/readyz")

    assert (response.status_code, response.get_json()) == (200, {"status": "ready"})
    assert app.extensions["wechat_login"].hub.subscribed.is_set()


@pytest.mark.parametrize("app_overrides", [REDIS_DOWN], ids=["redis-down"])
def test_readyz_is_503_when_redis_is_down(app, client):
    with pytest.raises(redis.ConnectionError):
        app.extensions["redis"].ping()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert set(response.get_json()["failing"]) == {"redis", "pubsub listener"}


def test_metrics_count_the_login_steps(client):
    created, logins = (
        metric(client, "wechat_login_qrcodes_created_total"),
        metric(client, "wechat_login_logins_total"),
    )
    returning = 'wechat_login_scans_total{kind="returning"}'
    scans = metric(client, returning)
    refused = metric(client, "wechat_login_signature_failures_total")

    scene = client.post("/api/login/qrcode").get_json()["scene"]
    body = fixture_xml("scan", scene=scene)
    client.post("/wechat/callback", query_string=signed_query(), data=body)
    client.post("/wechat/callback", query_string={"signature": "forged"}, data=body)

    assert metric(client, "wechat_login_qrcodes_created_total") == created + 1
    assert metric(client, returning) == scans + 1
    assert metric(client, "wechat_login_logins_total") == logins + 1
    assert metric(client, "wechat_login_signature_failures_total") == refused + 1


@pytest.mark.parametrize(
    ("address", "served"),
    [("127.0.0.1", True), ("10.1.2.3", True), ("192.168.0.9", True), ("8.8.8.8", False)],
)
def test_metrics_are_served_to_private_networks_only(client, address, served):
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})

    assert response.status_code == (200 if served else 403)
    assert (b"wechat_login_logins_total" in response.data) is served


@pytest.mark.parametrize("app_overrides", [{"TRUSTED_PROXIES": 1}])
def test_metrics_judge_the_client_behind_a_trusted_proxy_not_the_proxy(client):
    from_internet = client.get(
        "/metrics",
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
        headers={"X-Forwarded-For": "8.8.8.8"},
    )
    assert from_internet.status_code == 403


@pytest.mark.parametrize("app_overrides", [{"TRUSTED_PROXIES": 1}])
@pytest.mark.parametrize(
    ("forwarded_for", "status"),
    [
        ("not-an-address", 403),
        ("10.0.0.7:51234", 403),
        ("999.1.1.1", 403),
        ("unknown", 403),
        ("10.0.0.7", 200),
        ("::1", 200),
    ],
)
def test_a_malformed_forwarded_for_is_refused_not_a_500(client, forwarded_for, status):
    response = client.get(
        "/metrics",
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
        headers={"X-Forwarded-For": forwarded_for},
    )

    assert response.status_code == status


@pytest.mark.parametrize("app_overrides", [{"TRUSTED_PROXIES": 1}])
def test_a_malformed_forwarded_for_is_never_shown_to_the_scanner(app, client):
    headers = {"X-Forwarded-For": "<script>"}
    scene = client.post("/api/login/qrcode", headers=headers).get_json()["scene"]

    assert app.extensions["wechat_login"].store.get_attempt(scene).context.ip == "unknown"


# Logs


def test_json_logs_under_gunicorn_name_each_login_step_and_no_secret(server_process, redis_client):
    base = server_process(production=True, LOG_FORMAT="json", LOGIN_RATE_LIMIT="off")
    browser = Browser(base, openid="oLogs000000000000000000000001")
    assert browser.connect(base)["status"] == "waiting"
    scan(base, browser)
    [_, confirmed] = browser.read_to_close(time.monotonic() + 10)
    assert browser.redeem(base, confirmed["code"]).status_code == 200
    session_id = browser.session.cookies["session"]
    access_token = redis_client.get("wechat:access_token:wx00000000emulator")
    browser.close()

    lines = [line for line in server_process.log(base).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, gunicorn's too, is JSON
    assert {"time", "level", "logger", "pid", "message"} <= set(records[-1])
    assert any(r["logger"] == "gunicorn.error" for r in records)
    messages = [r["message"] for r in records if r["level"] == "INFO"]
    scene = browser.scene
    for step in (
        f"login attempt created scene={scene}",
        f"scan by a returning scene={scene} outcome=confirmed",
        f"login socket answered scene={scene} status=confirmed",
        f"login code redeemed scene={scene}",
    ):
        assert any(message.startswith(step) for message in messages), step
    log = server_process.log(base)
    for secret in (
        access_token,
        confirmed["code"],
        session_id,
        "shared-between-test-workers",  # SECRET_KEY
        "emulator-app-secret-not-a-secret",  # the emulator's AppSecret
        "emulatortoken",  # the Token
    ):
        assert secret and secret not in log
