"""Redis through Sentinel: the app finds the master by asking a real redis-sentinel."""

import subprocess
import time

import pytest
import redis

from app import create_app
from config import TestingConfig
from tests.conftest import fixture_xml, free_port, page_client, signed_query


def wait_until(check, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def sentinel(tmp_path):
    """A private Redis master and a Sentinel watching it as ``mymaster``: the Sentinel's port
    and a client of the master."""
    master_port, sentinel_port = free_port(), free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\n"
        f"bind 127.0.0.1\n"
        f"dir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
    )
    processes = [
        subprocess.Popen(
            ["redis-server", "--port", str(master_port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL),
    ]
    master = redis.Redis(port=master_port, decode_responses=True)
    watcher = redis.Redis(port=sentinel_port, decode_responses=True)
    try:
        wait_until(lambda: answers(master) and answers(watcher))
        yield sentinel_port, master
    finally:
        master.close()
        watcher.close()
        for process in processes:
            process.terminate()
            process.wait(10)


def test_the_whole_login_runs_on_the_master_that_sentinel_names(sentinel):
    sentinel_port, master = sentinel
    app = create_app(
        TestingConfig,
        {
            "REDIS_URL": "",
            "REDIS_SENTINELS": [("127.0.0.1", sentinel_port)],
            "LOGIN_RATE_LIMIT": "5/minute",
        },
    )
    try:
        browser = page_client(app)
        scene = browser.post("/api/login/qrcode").get_json()["scene"]
        assert master.hget(f"login:attempt:{scene}", "status") == "waiting"
        assert master.keys("LIMITS:LIMITER/ratelimit/*"), "the rate limits count on the same master"

        scanned = browser.post(
            "/wechat/callback",
            query_string=signed_query(),
            data=fixture_xml("scan", scene=scene, openid="oSentinel000000000000000001"),
        )
        assert "登录成功" in scanned.get_data(as_text=True)
        code = master.hget(f"login:attempt:{scene}", "code")
        assert browser.post("/api/login/redeem", json={"code": code}).status_code == 200
        assert browser.get("/api/me").get_json()["openid"] == "oSentinel000000000000000001"
    finally:
        app.extensions["wechat_login"].close()
