"""Several server processes sharing one Redis: the push crosses workers, retries dedupe across them.

Each server is a separate gunicorn process (its own hub listener and Redis connections), so
nothing is shared but Redis, as in production.
"""

import json

import requests
import websocket

from app.wechat.delivery import scan_event
from tests.conftest import ACCOUNT_ID, deliver


def post_scan(base: str, message: dict[str, str | int]) -> str:
    with deliver(base, message) as response:
        assert response.status_code == 200
        return response.text


def test_scan_on_one_worker_signs_in_the_browser_waiting_on_another(server_process):
    worker_a, worker_b = server_process(), server_process()
    with requests.Session() as browser:
        browser.headers["Origin"] = worker_a
        attempt = browser.post(worker_a + "/api/login/qrcode").json()
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        ws = websocket.create_connection(attempt["ws"], header=[f"Cookie: {cookie}"], timeout=5)
        try:
            assert json.loads(ws.recv())["status"] == "waiting"
            scan = scan_event(ACCOUNT_ID, "oWorkers00000000000000000001", attempt["scene"])
            assert "登录成功" in post_scan(worker_b, scan)
            # WeChat's retry of the same event lands on the first worker: same answer, no new login.
            assert "登录成功" in post_scan(worker_a, scan)
            confirmed = json.loads(ws.recv())
        finally:
            ws.shutdown()
        assert confirmed["status"] == "confirmed"

        # The code is redeemable on any worker; the session is valid on every worker.
        redeemed = browser.post(
            worker_b + "/api/login/redeem",
            json={"code": confirmed["code"]},
            headers={"Origin": worker_b},
        )
        assert redeemed.status_code == 200
        me = browser.get(worker_a + "/api/me").json()
    assert me["openid"] == "oWorkers00000000000000000001"
    assert me["login_count"] == 1
