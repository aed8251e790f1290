"""Shared fixtures: a real Redis, the app, a live threaded server, signed WeChat callbacks.

Redis is real wherever it is the subject: ``TEST_REDIS_URL`` (default db 15 on 127.0.0.1:6379),
emptied before each test. CI starts the server; a missing one fails the run, never skips it.
"""

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template

import pytest
import redis
import requests
import websocket
from playwright.sync_api import Browser, Page, sync_playwright
from werkzeug.serving import BaseWSGIServer, make_server

from app import create_app
from app.emulator import EMULATOR_SETTINGS, EMULATOR_TOKEN
from app.wechat import signature
from app.wechat.delivery import push, push_request, scan_event, text_message
from bench.server import Server, free_port
from config import TestingConfig

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

#: The Token the emulator signs with unless WECHAT_TOKEN is set.
TOKEN = EMULATOR_TOKEN
#: The emulated account, as WeChat names it in ``ToUserName``.
ACCOUNT_ID = EMULATOR_SETTINGS["EMULATOR_ACCOUNT_ID"]


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
    # What the app runs in the background, as built (a test may stand another in).
    background = [application.extensions["wechat_login"], application.extensions["oidc"]]
    yield application
    for work in background:
        work.close()


def page_client(app):
    """A test client that, like our pages in a browser, sends its own ``Origin``."""
    test_client = app.test_client()
    test_client.environ_base["HTTP_ORIGIN"] = "http://localhost"
    return test_client


@pytest.fixture
def client(app):
    return page_client(app)


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Returns a function: serve a WSGI app with a threaded werkzeug server on a free loopback
    port (https with ``ssl_context``); its base URL. Every server stops at the test's end."""
    running: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(wsgi_app, ssl_context=None) -> str:
        server = make_server("127.0.0.1", 0, wsgi_app, threaded=True, ssl_context=ssl_context)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        scheme = "https" if ssl_context else "http"
        return f"{scheme}://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in running:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def live_server(app, serve) -> str:
    """The app served on a free loopback port: its base URL."""
    return serve(app)


def ws_frames(ws: websocket.WebSocket, code: int = 1000) -> list[dict]:
    """Every text frame until the server's close frame, whose code is checked to be ``code``."""
    received = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            received.append(json.loads(data))
        elif opcode == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(data[:2], "big") == code
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
    return {**signature.signed_query(token), **extra}


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright (one per test module)."""
    if not Path(CHROMIUM).exists():
        # CI installs Debian's chromium, so there a missing browser is a failure, never a skip.
        if os.environ.get("CI"):
            raise RuntimeError(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """Returns a function: a page in a fresh context, i.e. a separate browser with its own
    cookies."""
    contexts = []

    def make() -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@dataclass
class Provider:
    """The app served on a port known before it was built (its issuer names the port)."""

    app: object
    base: str


@pytest.fixture
def oidc_overrides() -> dict:
    """Settings a test adds (parametrize to change)."""
    return {}


@pytest.fixture
def provider(redis_url, oidc_overrides) -> Iterator[Provider]:
    """The app as an OpenID provider, served on a loopback port chosen before it was built:
    its issuer (``PUBLIC_BASE_URL``) names that port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(
        TestingConfig,
        {
            "REDIS_URL": redis_url,
            "PUBLIC_BASE_URL": base,
            "LOGIN_RATE_LIMIT": "off",
            **oidc_overrides,
        },
    )
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Provider(app, base)
    server.shutdown()
    thread.join(5)
    app.extensions["wechat_login"].close()
    app.extensions["oidc"].close()


#: The WeChat user who scans in tests that do not name one.
SCANNER = "oTestScanner00000000000000001"


def post_message(client, message: dict[str, str | int]) -> str:
    """Post a message (``app.wechat.delivery``'s ``scan_event``, ``text_message``) to the
    callback through a test client, signed as WeChat signs it, in plaintext: the reply text."""
    query, body = push_request(message, TOKEN, None, "plaintext")
    answer = client.post("/wechat/callback", query_string=query, data=body, content_type="text/xml")
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


def deliver(base: str, message: dict[str, str | int]) -> requests.Response:
    """Post a message to the callback of the server at ``base`` over HTTP, as WeChat's servers
    do: signed afresh, in plaintext, given up on after WeChat's 5 s."""
    return push(base + "/wechat/callback", message, TOKEN, None, "plaintext")


def scan(client, scene: str, openid: str = SCANNER) -> str:
    """WeChat's scan event for ``scene`` by ``openid``, posted to the callback: the reply text."""
    return post_message(client, scan_event(ACCOUNT_ID, openid, scene))


def say(client, content: str, openid: str = SCANNER) -> str:
    """A text message from ``openid`` to the account (a fresh MsgId): the reply text."""
    return post_message(client, text_message(ACCOUNT_ID, openid, content))


def confirmed_code(client, redis_client, openid: str = SCANNER) -> str:
    """A new attempt of ``client``, scanned (and confirmed if asked) by ``openid``: its code."""
    scene = client.post("/api/login/qrcode").get_json()["scene"]
    if "回复 1" in scan(client, scene, openid):
        assert "登录成功" in say(client, "1", openid)
    prefix = client.application.config["REDIS_KEY_PREFIX"]
    return redis_client.hget(f"{prefix}login:attempt:{scene}", "code")


def sign_in(client, redis_client, openid: str = SCANNER) -> str:
    """A whole login of ``client`` by ``openid``: the session id it ends with."""
    code = confirmed_code(client, redis_client, openid)
    assert client.post("/api/login/redeem", json={"code": code}).status_code == 200
    return client.get_cookie("session").value


class ServerProcesses:
    """Starts separate gunicorn server processes (``bench.server.Server``, the launcher the
    benchmark uses too); each call starts one and returns its base URL.

    Each is the leader of its own process group (arbiter and workers), so a test can freeze or
    kill a whole server at once, and nothing of it outlives the test. Its log (the app's and
    gunicorn's) goes to a file, read back with ``log()``.
    """

    def __init__(self, redis_url: str, log_dir: Path) -> None:
        self._redis_url = redis_url
        self._log_dir = log_dir
        self._servers: dict[str, Server] = {}

    def __call__(
        self,
        *,
        production: bool = False,
        workers: int = 1,
        redis_url: str | None = None,
        **env: str,
    ) -> str:
        """Start a server and wait until it answers.

        Args:
            production: serve with ``gunicorn.conf.py`` as it is (the gevent worker, its
                connection and open-file settings) instead of the threaded worker.
            workers: worker processes behind the one port.
            redis_url: the Redis to use (default: the test's database).
            env: further environment variables, e.g. ``LOGIN_RECHECK_SECONDS="60"``.

        Returns:
            The base URL, ``http://127.0.0.1:<port>``.

        Raises:
            RuntimeError: it did not start (the message holds its log).
        """
        settings = {
            "APP_ENV": "development",
            "REDIS_URL": redis_url or self._redis_url,
            "SECRET_KEY": "shared-between-test-workers",
            **env,
        }
        worker_args = () if production else ("--worker-class", "gthread", "--threads", "16")
        log_path = self._log_dir / f"server-{len(self._servers)}.log"
        server = Server(log_path, settings, workers=workers, worker_args=worker_args)
        server.start()
        self._servers[server.origin] = server
        return server.origin

    def signal(self, base: str, signum: int) -> None:
        """Send ``signum`` to the whole server at ``base`` (``Server.signal``)."""
        self._servers[base].signal(signum)

    def pid(self, base: str) -> int:
        """The process id of the server at ``base`` (gunicorn's arbiter; its workers are its
        children)."""
        return self._servers[base].pid

    def bases(self) -> list[str]:
        """The base URLs of every server started, in order."""
        return list(self._servers)

    def log(self, base: str) -> str:
        """What the server at ``base`` has logged so far."""
        return self._servers[base].log()

    def stop_all(self) -> None:
        # Quick shutdown: a graceful one waits out idle keep-alive connections, and no test
        # here is about stopping.
        for server in self._servers.values():
            server.stop(quick=True)


@pytest.fixture
def server_process(redis_url: str, tmp_path: Path) -> Iterator[ServerProcesses]:
    """Start separate gunicorn server processes on the same Redis; returns their base URLs.

    Each call starts one process (its own worker, its own hub listener) and waits until it
    answers; all are stopped at the end of the test. See ``ServerProcesses``.
    """
    servers = ServerProcesses(redis_url, tmp_path)
    yield servers
    servers.stop_all()
    for base in servers.bases():
        print(f"--- log of the server at {base} ---\n{servers.log(base)}")  # shown on failure


class RedisServer:
    """A private ``redis-server`` on a free loopback port, for tests that crash or restart
    Redis (never the shared one). Its data lives in its own directory.

    Args:
        directory: its working directory (append-only file, log).
        persistent: keep an append-only file, fsynced on every write, so that a restart
            (even after a crash) finds every acknowledged write; otherwise it saves nothing
            and a restart starts empty.
    """

    def __init__(self, directory: Path, *, persistent: bool) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if persistent
            else ["--appendonly", "no"]
        )
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it (again, on the same port and directory) and wait until it answers."""
        log_file = self._directory / "redis.log"
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--dir", str(self._directory), "--logfile", str(log_file), "--save", ""]
            + self._persistence,
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def crash(self) -> None:
        """Kill it (SIGKILL): clients see their connections drop and new ones refused."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Returns a function: start a private Redis (``persistent=``, see ``RedisServer``).

    Ask for it before ``server_process``, so that it is stopped after the servers using it.
    """
    servers: list[RedisServer] = []

    def start(*, persistent: bool = False) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory, persistent=persistent)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.crash()
