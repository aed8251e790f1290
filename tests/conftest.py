"""Shared fixtures: a real Redis, the app, a live threaded server, signed WeChat callbacks.

Redis is real wherever it is the subject: ``TEST_REDIS_URL`` (default db 15 on 127.0.0.1:6379),
emptied before each test. CI starts the server; a missing one fails the run, never skips it.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template

import pytest
import redis
import requests
import websocket
from werkzeug.serving import make_server

from app import create_app
from app.wechat.signature import sign
from config import TestingConfig

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

#: The Token the emulator signs with unless WECHAT_TOKEN is set.
TOKEN = "emulatortoken"


@pytest.fixture
def redis_url() -> str:
    """A real, empty Redis database."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    client.close()
    return TEST_REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def app_overrides() -> dict:
    """Settings a test module may override by redefining this fixture."""
    return {}


@pytest.fixture
def app(redis_url: str, app_overrides: dict):
    """The app in emulator mode on the real Redis."""
    application = create_app(TestingConfig, {"REDIS_URL": redis_url, **app_overrides})
    yield application
    application.extensions["wechat_login"].hub.close()


def page_client(app):
    """A test client that, like our pages in a browser, sends its own ``Origin``."""
    test_client = app.test_client()
    test_client.environ_base["HTTP_ORIGIN"] = "http://localhost"
    return test_client


@pytest.fixture
def client(app):
    return page_client(app)


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app served by a threaded werkzeug server on a free loopback port: its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def ws_frames(ws: websocket.WebSocket) -> list[dict]:
    """Every text frame until the server's close frame, whose code is checked to be 1000."""
    received = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            received.append(json.loads(data))
        elif opcode == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(data[:2], "big") == 1000
            return received


def fixture_xml(name: str, **values: object) -> bytes:
    """A real-format WeChat XML fixture with ``$openid``, ``$scene``, ``$create_time`` filled."""
    values.setdefault("openid", "oABCD1234openid")
    values.setdefault("create_time", int(time.time()))
    values.setdefault("scene", "")
    text = Template((FIXTURES / f"{name}.xml").read_text()).safe_substitute(values)
    return text.encode()


def signed_query(token: str = TOKEN, **extra: str) -> dict[str, str]:
    """The ``signature``/``timestamp``/``nonce`` query WeChat adds to a callback."""
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    return {
        "signature": sign(token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        **extra,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server_process(redis_url: str) -> Iterator[Callable[..., str]]:
    """Start separate gunicorn server processes on the same Redis; returns their base URLs.

    Each call starts one process (its own worker, its own hub listener) and waits until it
    answers; all are stopped at the end of the test.
    """
    processes: list[subprocess.Popen] = []

    def start(**env: str) -> str:
        port = free_port()
        environment = {
            **os.environ,
            "APP_ENV": "development",
            "REDIS_URL": redis_url,
            "SECRET_KEY": "shared-between-test-workers",
            **env,
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--worker-class",
                "gthread",
                "--threads",
                "16",
                "--bind",
                f"127.0.0.1:{port}",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                requests.get(base + "/api/me", timeout=1)
                return base
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"server on port {port} did not start")

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
