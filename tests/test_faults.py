"""Faults with real worker processes and a real Redis: no login lost, none duplicated.

Servers are gunicorn with ``gunicorn.conf.py`` (the production gevent worker), one process
per server on its own port, so which worker holds which browser is known; one test runs two
workers behind one port, as deployed. Two races too narrow to hit from outside are made
certain in-process instead, at the hub: a scan landing between a socket's handshake and its
registering, and one landing before a worker's first subscription. Each test counts, per
browser: exactly one terminal frame, ``confirmed`` with a code; the code redeems once, only
for that browser, as the openid that scanned it, with a login count of one.

Most servers run with the sweep turned down to once a minute (``PUSH_ONLY``): the sweep would
otherwise hide a lost push within a second, and the test could not see it. With it turned
down, a missed wake leaves the browser waiting and the test fails at its deadline.

Servers run on a private ``redis-server`` (``own_redis``) wherever a test counts the workers
listening, kills their connections or crashes Redis: the shared one belongs to other tests
and to people, and its subscribers are theirs too. Before scanning, such a test waits until
every worker holding a socket listens (``wait_listening``): the gap before a worker's first
subscription is a fault of its own, tested on its own.
"""

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psutil
import pytest
import redis
import requests
import websocket

from app.login.hub import LoginHub, Waiter
from app.wechat.delivery import scan_event
from app.wechat.messages import parse_fields
from tests.conftest import ACCOUNT_ID, RedisServer, ServerProcesses, deliver

#: Every server: no rate limit on QR codes, since all the browsers here share one IP; keys
#: and the hub's channel under a prefix of the tests' own.
SETTINGS = {"LOGIN_RATE_LIMIT": "off", "REDIS_KEY_PREFIX": "faults:"}
#: The sweep once a minute: only the push, and the read after registering, deliver in time.
PUSH_ONLY = {**SETTINGS, "LOGIN_RECHECK_SECONDS": "60"}

#: How long a browser waits for what a test expects; far beyond what any of it should take.
PATIENCE_SECONDS = 10

SIGNED_IN = "登录成功"

#: The hub's pub/sub channel.
CHANNEL = "faults:login:attempts"


class Browser:
    """A browser on our login page: its cookies, its login attempt, the socket it waits on.

    Args:
        base: the server whose page asked for the QR code.
        openid: the WeChat user who is going to scan it.
    """

    def __init__(self, base: str, openid: str) -> None:
        self.openid = openid
        self.session = requests.Session()
        with self.session.post(
            base + "/api/login/qrcode", headers={"Origin": base}, timeout=5
        ) as response:
            assert response.status_code == 200, response.text
            self.scene = response.json()["scene"]
        self.ws: websocket.WebSocket | None = None
        #: The text frames of the current socket, and whether the server closed it.
        self.frames: list[dict] = []
        self.closed = False

    def connect(self, base: str) -> dict:
        """Open the login socket on ``base`` as the page there would; returns the first frame."""
        self.close_socket()
        cookie = "; ".join(f"{name}={value}" for name, value in self.session.cookies.items())
        self.ws = websocket.create_connection(
            base.replace("http://", "ws://") + f"/ws/login/{self.scene}",
            header=[f"Cookie: {cookie}"],
            origin=base,
            timeout=PATIENCE_SECONDS,
        )
        self.frames, self.closed = [], False
        opcode, data = self.ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_TEXT
        self.frames.append(json.loads(data))
        return self.frames[0]

    def read_to_close(self, deadline: float, code: int = 1000) -> list[dict]:
        """Read text frames until the server's close frame (with ``code``), by ``deadline``
        (``time.monotonic()``); returns every frame of this socket (at once if it is closed)."""
        for _ in range(10):  # far more frames than a login has
            if self.closed:
                return self.frames
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                raise AssertionError(f"scene {self.scene}: nothing after {self.frames}") from None
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.frames.append(json.loads(data))
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                assert int.from_bytes(data[:2], "big") == code
                self.closed = True
        raise AssertionError(f"no close after {self.frames}")

    def read_until_dropped(self) -> list[dict]:
        """Read until the connection is lost (its server died); returns the text frames seen
        on the way. A close frame or a timeout fails: a dead server says nothing."""
        received = []
        for _ in range(10):
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                return received
            assert opcode != websocket.ABNF.OPCODE_CLOSE, "closed by a server that was killed"
            if opcode == websocket.ABNF.OPCODE_TEXT:
                received.append(json.loads(data))
        raise AssertionError(f"still connected after {received}")

    def redeem(self, base: str, code: str) -> requests.Response:
        """Spend ``code`` as this browser's page on ``base`` would."""
        with self.session.post(
            base + "/api/login/redeem", json={"code": code}, headers={"Origin": base}, timeout=5
        ) as response:
            return response

    def close_socket(self) -> None:
        if self.ws is not None:
            # shutdown(), not close(): after the server's close frame close() leaves it open.
            self.ws.shutdown()
            self.ws = None

    def close(self) -> None:
        self.close_socket()
        self.session.close()


@pytest.fixture
def app_overrides() -> dict:
    """The in-process app, where a test has one, shares the servers' prefix."""
    return {"REDIS_KEY_PREFIX": SETTINGS["REDIS_KEY_PREFIX"]}


@pytest.fixture
def new_browser() -> Iterator[Callable[[str], Browser]]:
    """Returns a function: a new browser that has asked ``base`` for a QR code. Each is
    scanned by its own openid. All are closed at the end of the test."""
    browsers: list[Browser] = []

    def new(base: str) -> Browser:
        browser = Browser(base, openid=f"oFaults{len(browsers):021d}")
        browsers.append(browser)
        return browser

    yield new
    for browser in browsers:
        browser.close()


def two_workers(server_process: ServerProcesses, **settings: str) -> tuple[str, str]:
    """Two production servers (one gevent worker each) on one Redis: their base URLs."""
    return server_process(production=True, **settings), server_process(production=True, **settings)


def scan_event_of(browser: Browser) -> dict[str, str | int]:
    """The SCAN event WeChat posts when the browser's openid scans its QR code. WeChat's
    retries resend this same body (same ``CreateTime``), under a fresh signature."""
    return scan_event(ACCOUNT_ID, browser.openid, browser.scene)


def post_callback(base: str, message: dict[str, str | int]) -> requests.Response:
    """Post a callback as WeChat would: freshly signed, given up on after WeChat's 5 s."""
    with deliver(base, message) as response:
        return response


def reply_content(response: requests.Response) -> str:
    """The text of our passive reply (its envelope's ``CreateTime`` is the time of replying)."""
    return parse_fields(response.content)["Content"]


def scan(base: str, browser: Browser) -> None:
    response = post_callback(base, scan_event_of(browser))
    assert response.status_code == 200
    assert SIGNED_IN in response.text


def assert_each_signed_in_once(browsers: list[Browser], base: str) -> None:
    """Each browser's socket said waiting, then confirmed with a code, then closed; each code
    is its own, redeems once (at ``base``) as its scanner, whose first and only login it is."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    for browser in browsers:
        frames = browser.read_to_close(deadline)
        assert [frame["status"] for frame in frames] == ["waiting", "confirmed"], frames
    codes = [browser.frames[-1]["code"] for browser in browsers]
    assert len(set(codes)) == len(browsers)
    for browser, code in zip(browsers, codes, strict=True):
        redeemed = browser.redeem(base, code)
        assert redeemed.status_code == 200
        assert redeemed.json()["openid"] == browser.openid
        assert redeemed.json()["login_count"] == 1
        assert browser.redeem(base, code).status_code == 400


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@pytest.fixture
def own_redis(redis_server) -> RedisServer:
    """A private Redis that saves nothing (ask for it before ``server_process``)."""
    return redis_server()


def listening(redis_url: str) -> int:
    """How many workers hold a subscription to the hub's channel on this Redis."""
    with redis.Redis.from_url(redis_url) as admin:
        return dict(admin.pubsub_numsub(CHANNEL))[CHANNEL.encode()]


def wait_listening(redis_url: str, workers: int) -> None:
    """Wait until exactly ``workers`` workers listen (a worker subscribes when its first
    socket waits, and unsubscribes when it dies)."""
    wait_until(lambda: listening(redis_url) == workers, f"{workers} worker(s) listen")


def waiting_on(new_browser: Callable[[str], Browser], base: str, count: int) -> list[Browser]:
    """``count`` new browsers whose sockets wait on ``base``."""
    browsers = [new_browser(base) for _ in range(count)]
    for browser in browsers:
        assert browser.connect(base)["status"] == "waiting"
    return browsers


def waiting_on_both(
    new_browser: Callable[[str], Browser], workers: tuple[str, str], count: int, redis_url: str
) -> list[Browser]:
    """``count`` browsers whose sockets wait, the first on ``workers[0]``, then alternately;
    both workers listening."""
    browsers = [new_browser(workers[i % 2]) for i in range(count)]
    for i, browser in enumerate(browsers):
        assert browser.connect(workers[i % 2])["status"] == "waiting"
    wait_listening(redis_url, 2)
    return browsers


def test_scans_cross_workers_both_ways_and_retries_change_nothing(
    own_redis, server_process, new_browser
):
    worker_a, worker_b = two_workers(server_process, redis_url=own_redis.url, **PUSH_ONLY)
    pairs = [(worker_a, worker_b), (worker_b, worker_a)] * 4  # (socket's worker, scan's)
    browsers = [new_browser(held_by) for held_by, _ in pairs]
    for browser, (held_by, _) in zip(browsers, pairs, strict=True):
        assert browser.connect(held_by)["status"] == "waiting"
    wait_listening(own_redis.url, 2)

    for browser, (held_by, scanned_on) in zip(browsers, pairs, strict=True):
        body = scan_event_of(browser)
        first = post_callback(scanned_on, body)
        assert first.status_code == 200
        assert SIGNED_IN in first.text
        # WeChat's retry of the same event, on the other worker: the same answer, nothing new.
        retry = post_callback(held_by, body)
        assert retry.status_code == 200
        assert reply_content(retry) == reply_content(first)

    assert_each_signed_in_once(browsers, worker_a)


def test_scan_before_the_socket_registers_is_delivered_on_connecting(server_process, new_browser):
    worker_a, worker_b = two_workers(server_process, **PUSH_ONLY)
    browser = new_browser(worker_a)
    # Written and published before any socket waits for it: the push reaches nobody.
    scan(worker_b, browser)

    assert browser.connect(worker_a)["status"] == "waiting"
    assert_each_signed_in_once([browser], worker_a)


class LateHub(LoginHub):
    """A hub whose first waiter registers only after ``before_register(scene)`` ran, so that
    whatever that publishes reaches nobody. No sweep: only the socket's own reads deliver."""

    def __init__(self, redis_client: redis.Redis, before_register: Callable[[str], None]):
        super().__init__(redis_client, channel=CHANNEL)
        self._before_register: Callable[[str], None] | None = before_register

    @contextmanager
    def waiting(
        self, scene: str, client: str = "", wake: threading.Event | None = None
    ) -> Iterator[Waiter]:
        before_register, self._before_register = self._before_register, None
        if before_register is not None:
            before_register(scene)
        with super().waiting(scene, client, wake) as waiter:
            yield waiter


def test_scan_landing_between_the_handshake_and_registering_is_delivered(
    app, live_server, server_process, new_browser
):
    # The narrowest window, made certain: the handshake has read the attempt (waiting), and
    # the scan is written and published on another worker before the socket registers.
    worker_b = server_process(production=True, **PUSH_ONLY)
    browser = new_browser(live_server)
    service = app.extensions["wechat_login"]
    service.close()
    service.hub = LateHub(app.extensions["redis"], lambda scene: scan(worker_b, browser))

    assert browser.connect(live_server)["status"] == "waiting"
    assert_each_signed_in_once([browser], live_server)


def test_publish_before_a_workers_first_subscription_wakes_its_waiters(own_redis):
    # A worker's first socket registers and reads "waiting"; the scan lands on another worker
    # before this worker's listener has subscribed (it starts with that first socket). The
    # push is lost, as it is during a reconnect, so the subscription that begins must wake
    # every waiter to re-read, as a resubscription does. No sweep here: it would hide the
    # loss for LOGIN_RECHECK_SECONDS, and a lost push is all this test looks for.
    # The listener's Redis pool has one connection; while the test holds it, the listener
    # cannot subscribe.
    pool = redis.BlockingConnectionPool.from_url(
        own_redis.url, max_connections=1, timeout=PATIENCE_SECONDS, decode_responses=True
    )
    hub = LoginHub(redis.Redis(connection_pool=pool), channel=CHANNEL)
    held = pool.get_connection()
    try:
        with hub.waiting("scene-1") as waiter:
            with redis.Redis.from_url(own_redis.url) as other_worker:
                other_worker.publish(CHANNEL, json.dumps({"type": "attempt", "scene": "scene-1"}))
            assert not hub.subscribed.is_set()
            pool.release(held)
            held = None
            assert hub.subscribed.wait(PATIENCE_SECONDS)
            assert waiter.wake.wait(PATIENCE_SECONDS)
    finally:
        if held is not None:
            pool.release(held)
        hub.close()
        wait_until(lambda: not hub.subscribed.is_set(), "the listener stopped")
        pool.disconnect()


def test_sockets_opening_while_their_scans_land_are_each_signed_in_once(
    own_redis, server_process, new_browser
):
    worker_a, worker_b = two_workers(server_process, redis_url=own_redis.url, **PUSH_ONLY)
    first = [new_browser(worker_a), new_browser(worker_b)]
    for browser, base in zip(first, (worker_a, worker_b), strict=True):
        assert browser.connect(base)["status"] == "waiting"
    wait_listening(own_redis.url, 2)
    browsers = [new_browser(worker_a if i % 2 else worker_b) for i in range(24)]
    start = threading.Barrier(2 * len(browsers), timeout=PATIENCE_SECONDS)

    def open_socket(i: int) -> None:
        start.wait()
        browsers[i].connect(worker_a if i % 2 else worker_b)

    def scan_it(i: int) -> None:
        start.wait()
        scan(worker_b if i % 2 else worker_a, browsers[i])

    # Every socket and every scan at once: some scans land before their socket registers,
    # some between its registering and its first read, some while it waits.
    with ThreadPoolExecutor(2 * len(browsers)) as pool:
        futures = [
            pool.submit(task, i) for i in range(len(browsers)) for task in (open_socket, scan_it)
        ]
        for future in futures:
            future.result(timeout=2 * PATIENCE_SECONDS)
    scan(worker_b, first[0])
    scan(worker_a, first[1])

    assert_each_signed_in_once(first + browsers, worker_a)


def test_one_scan_delivered_on_both_workers_at_once_signs_in_once(
    own_redis, server_process, new_browser
):
    # WeChat gives up on a delivery after 5 s and sends it again, while the first may still
    # be running: the deliveries race, each on whichever worker the balancer picked.
    worker_a, worker_b = two_workers(server_process, redis_url=own_redis.url, **PUSH_ONLY)
    browsers = waiting_on_both(new_browser, (worker_b, worker_a), 8, own_redis.url)
    deliveries = [(browser, base) for browser in browsers for base in (worker_a, worker_b) * 2]
    start = threading.Barrier(len(deliveries), timeout=PATIENCE_SECONDS)

    def deliver(browser: Browser, base: str) -> requests.Response:
        start.wait()
        return post_callback(base, scan_event_of(browser))

    with ThreadPoolExecutor(len(deliveries)) as pool:
        futures = [pool.submit(deliver, browser, base) for browser, base in deliveries]
        answers = [future.result(timeout=2 * PATIENCE_SECONDS) for future in futures]

    for response in answers:
        assert response.status_code == 200
        assert SIGNED_IN in response.text  # the first answer, or "already signed in": the same
    assert_each_signed_in_once(browsers, worker_b)


@pytest.mark.parametrize(
    "settings",
    [SETTINGS, PUSH_ONLY],
    ids=["production-sweep", "resubscription-alone"],
)
def test_killed_pubsub_connections_lose_no_scan(own_redis, server_process, new_browser, settings):
    worker_a, worker_b = two_workers(server_process, redis_url=own_redis.url, **settings)
    browsers = waiting_on_both(new_browser, (worker_b, worker_a), 8, own_redis.url)

    with redis.Redis.from_url(own_redis.url) as admin:
        assert admin.client_kill_filter(_type="pubsub") == 2
    # Scans at once, across workers: published while nobody listens.
    first, second = browsers[:4], browsers[4:]
    for i, browser in enumerate(first):
        scan(worker_b if i % 2 else worker_a, browser)
    deadline = time.monotonic() + PATIENCE_SECONDS
    for browser in first:
        browser.read_to_close(deadline)
    # Counted once the dust settled: redis-py itself resubscribes for a moment on the way to
    # raising, so an early count could pass for a listener that then gave up.
    wait_listening(own_redis.url, 2)
    for i, browser in enumerate(second):
        scan(worker_b if i % 2 else worker_a, browser)

    assert_each_signed_in_once(browsers, worker_a)


def test_redis_restart_while_browsers_wait_loses_no_scan(redis_server, server_process, new_browser):
    # A Redis that holds logins keeps them across a restart: an append-only file, fsynced on
    # every write so that a crash loses nothing Redis acknowledged. (Restarted empty, see
    # the next test.)
    own_redis = redis_server(persistent=True)
    worker_a, worker_b = two_workers(server_process, redis_url=own_redis.url, **PUSH_ONLY)
    browsers = waiting_on_both(new_browser, (worker_b, worker_a), 6, own_redis.url)

    own_redis.crash()
    # Not acknowledged, so WeChat delivers it again: never lost, never answered "登录成功".
    early = scan_event_of(browsers[0])
    refused = post_callback(worker_b, early)
    assert refused.status_code == 503
    assert SIGNED_IN not in refused.text
    own_redis.start()

    # WeChat's retry of the refused scan (same event, fresh signature), then everyone else's,
    # posted at once: before the workers have necessarily resubscribed.
    retried = post_callback(worker_a, early)
    assert retried.status_code == 200
    assert SIGNED_IN in retried.text
    for i, browser in enumerate(browsers[1:], start=1):
        scan(worker_b if i % 2 else worker_a, browser)

    assert_each_signed_in_once(browsers, worker_b)


def test_redis_restarted_empty_sends_every_waiting_browser_to_a_new_qr_code(
    own_redis, server_process, new_browser
):
    # Without persistence a restart forgets every attempt: no browser may wait on forever
    # for a scan that can no longer sign it in.
    worker_a, worker_b = two_workers(server_process, redis_url=own_redis.url, **PUSH_ONLY)
    browsers = waiting_on_both(new_browser, (worker_b, worker_a), 4, own_redis.url)

    own_redis.crash()
    own_redis.start()

    deadline = time.monotonic() + PATIENCE_SECONDS
    for browser in browsers:
        frames = browser.read_to_close(deadline)
        assert [frame["status"] for frame in frames] == ["waiting", "expired"], frames
    # A scan of a forgotten QR code signs nobody in; the page's new QR code does.
    stale = post_callback(worker_a, scan_event_of(browsers[0]))
    assert stale.status_code == 200
    assert SIGNED_IN not in stale.text
    again = new_browser(worker_b)
    assert again.connect(worker_b)["status"] == "waiting"
    wait_listening(own_redis.url, 2)
    scan(worker_a, again)
    assert_each_signed_in_once([again], worker_b)


def test_killed_server_loses_no_scan_its_browsers_reconnect_to_another(
    own_redis, server_process, new_browser
):
    worker_a, worker_b = two_workers(server_process, redis_url=own_redis.url, **PUSH_ONLY)
    browsers = waiting_on(new_browser, worker_a, 8)
    wait_listening(own_redis.url, 1)

    # Scans land while A is frozen and then killed: its browsers never hear of them from A.
    server_process.signal(worker_a, signal.SIGSTOP)
    scanned_before, scanned_after = browsers[:4], browsers[4:]
    for browser in scanned_before:
        scan(worker_b, browser)
    server_process.signal(worker_a, signal.SIGKILL)
    for browser in browsers:
        assert browser.read_until_dropped() == []
    wait_listening(own_redis.url, 0)

    # The pages reconnect, to B (their Origin is now B's): the scans already taken are there
    # at once; the ones still to come are pushed.
    for browser in browsers:
        assert browser.connect(worker_b)["status"] == "waiting"
    wait_listening(own_redis.url, 1)
    for browser in scanned_after:
        scan(worker_b, browser)

    assert_each_signed_in_once(browsers, worker_b)


def test_killed_worker_behind_one_port_loses_no_scan(own_redis, server_process, new_browser):
    # As deployed: one gunicorn, two workers on one port. The worker holding the most
    # sockets is killed; the arbiter replaces it, and its pages reconnect to the same address,
    # landing on another worker.
    base = server_process(production=True, workers=2, redis_url=own_redis.url, **PUSH_ONLY)
    arbiter = server_process.pid(base)
    browsers = waiting_on(new_browser, base, 6)
    holders = {browser: worker_holding(arbiter, browser) for browser in browsers}
    wait_listening(own_redis.url, len(set(holders.values())))
    victim = max(set(holders.values()), key=list(holders.values()).count)
    dropped = [browser for browser in browsers if holders[browser] == victim]

    psutil.Process(victim).suspend()
    for browser in dropped[::2]:
        scan(base, browser)  # taken by the other worker: the frozen one accepts nothing
    psutil.Process(victim).kill()
    for browser in dropped:
        assert browser.read_until_dropped() == []
    wait_listening(own_redis.url, len(set(holders.values())) - 1)
    for browser in dropped:
        assert browser.connect(base)["status"] == "waiting"
        holders[browser] = worker_holding(arbiter, browser)
    assert victim not in holders.values()
    wait_listening(own_redis.url, len(set(holders.values())))
    for browser in browsers:
        if browser not in dropped[::2]:
            scan(base, browser)

    assert_each_signed_in_once(browsers, base)
    # The arbiter replaced the killed worker (each worker logs this once, on loading the app).
    # Waited for also because a worker still booting ignores the signal that ends the test.
    wait_until(
        lambda: server_process.log(base).count("emulator stands in for WeChat") == 3,
        "the killed worker is replaced",
    )


def worker_holding(arbiter: int, browser: Browser) -> int:
    """The process id of the gunicorn worker that holds the browser's socket."""
    port = browser.ws.sock.getsockname()[1]
    for worker in psutil.Process(arbiter).children():
        if any(c.raddr and c.raddr.port == port for c in worker.net_connections("tcp")):
            return worker.pid
    raise AssertionError(f"no worker of {arbiter} holds the socket from port {port}")


# Graceful shutdown: a worker told to stop (SIGTERM: a stop, a restart, the old workers of a HUP
# reload) closes its sockets with 1001 "going away" at once, not after graceful_timeout (10 s).

#: Far below gunicorn's graceful_timeout (gunicorn.conf.py): the close was not waited out.
GOING_AWAY_SECONDS = 3


def reconnect(browser: Browser, base: str) -> dict:
    """Reconnect as the page does after a 1001: again and again, until a worker that is not
    going away answers (a HUP's new worker may still be booting); returns its first frame."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        try:
            return browser.connect(base)
        except (AssertionError, websocket.WebSocketException, ConnectionError):
            assert time.monotonic() < deadline, "no worker took the reconnect"
            time.sleep(0.2)


def test_hup_reload_sends_pages_to_the_new_worker_at_once_and_loses_no_scan(
    own_redis, server_process, new_browser
):
    base = server_process(production=True, redis_url=own_redis.url, **PUSH_ONLY)
    old_worker = psutil.Process(server_process.pid(base)).children()[0].pid
    browsers = waiting_on(new_browser, base, 6)

    started = time.monotonic()
    # A deploy (systemd's ExecReload): the arbiter starts new workers and stops the old ones.
    os.kill(server_process.pid(base), signal.SIGHUP)
    for browser in browsers:
        frames = browser.read_to_close(started + GOING_AWAY_SECONDS, code=1001)
        assert [frame["status"] for frame in frames] == ["waiting"]
    # Half are scanned while their pages are between workers: their state waits in Redis.
    for browser in browsers[::2]:
        scan(base, browser)
    for browser in browsers:
        assert reconnect(browser, base)["status"] == "waiting"
    for browser in browsers[1::2]:
        scan(base, browser)

    assert_each_signed_in_once(browsers, base)
    wait_until(lambda: not psutil.pid_exists(old_worker), "the old worker exits")


def test_stopped_server_closes_its_sockets_at_once_and_its_pages_sign_in_elsewhere(
    own_redis, server_process, new_browser
):
    worker_a, worker_b = two_workers(server_process, redis_url=own_redis.url, **PUSH_ONLY)
    browsers = waiting_on(new_browser, worker_a, 4)

    started = time.monotonic()
    server_process.signal(worker_a, signal.SIGTERM)  # as systemd stops its whole group
    for browser in browsers:
        frames = browser.read_to_close(started + GOING_AWAY_SECONDS, code=1001)
        assert [frame["status"] for frame in frames] == ["waiting"]
    # With its sockets gone it exits before graceful_timeout (10 s) would have ended it; only
    # idle keep-alive connections (5 s) hold it.
    psutil.Process(server_process.pid(worker_a)).wait(9)

    for browser in browsers:
        assert browser.connect(worker_b)["status"] == "waiting"
    for browser in browsers:
        scan(worker_b, browser)
    assert_each_signed_in_once(browsers, worker_b)
