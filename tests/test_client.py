"""WeChatClient against a scripted WeChat API (a requests transport adapter) and the real Redis."""

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter

from app.login.unionids import UnionidLookups
from app.wechat.client import BUSY_RETRY_SECONDS, MAX_USERS_INFO, QRCode, WeChatClient
from app.wechat.errors import InvalidCredentialError, WeChatAPIError, WeChatTransportError

API_BASE = "https://api.weixin.test"
APP_ID = "wx0000000000test"
APP_SECRET = "0123456789abcdef0123456789secret"
TIMEOUT = 3.0
STABLE = "/cgi-bin/stable_token"
CLASSIC = "/cgi-bin/token"
QRCODE = "/cgi-bin/qrcode/create"
USER_INFO = "/cgi-bin/user/info/batchget"
SCENE = "1714036504000-5f1d3c9a8b7e6d5c4b3a2910"
QR_ANSWER = {
    "ticket": "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJ+/==",
    "expire_seconds": 300,
    "url": "http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI",
}


def token_answer(access_token: str = "TOKEN-1", expires_in: int = 7200) -> dict:
    return {"access_token": access_token, "expires_in": expires_in}


def stale(errcode: int = 40001) -> dict:
    return {"errcode": errcode, "errmsg": "invalid credential, access_token is invalid"}


@dataclass(frozen=True)
class Raw:
    """An answer that is not a JSON object: any status and body."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Call:
    """One request the client sent."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    timeout: Any
    proxies: dict[str, str]
    verify: Any


class FakeWeChat(BaseAdapter):
    """The WeChat HTTP API, scripted per path; records every request.

    An answer is a dict (200 JSON), a ``Raw``, a ``requests.RequestException`` subclass (raised
    with the full URL in its message, as requests does), or a callable taking the ``Call`` and
    returning one of those. Answers for a path are used in order; the last one repeats.
    """

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, list] = {}
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def script(self, path: str, *answers: Any) -> None:
        self.answers[path] = list(answers)

    def paths(self) -> list[str]:
        return [call.path for call in self.calls]

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        url = urlsplit(request.url)
        body = json.loads(request.body) if request.body else None
        query = dict(parse_qsl(url.query))
        call = Call(request.method, url.path, query, body, timeout, proxies or {}, verify)
        with self._lock:
            self.calls.append(call)
            queue = self.answers[url.path]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(answer) and not isinstance(answer, type):
            answer = answer(call)
        if isinstance(answer, type) and issubclass(answer, requests.RequestException):
            raise answer(f"Max retries exceeded with url: {request.url}", request=request)
        if isinstance(answer, dict):
            answer = Raw(200, json.dumps(answer).encode())
        response = requests.Response()
        response.status_code = answer.status
        response._content = answer.body
        response.headers["Content-Type"] = "application/json; encoding=utf-8"
        response.encoding = "utf-8"
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def wechat() -> FakeWeChat:
    fake = FakeWeChat()
    fake.script(STABLE, token_answer())
    fake.script(CLASSIC, token_answer())
    fake.script(QRCODE, QR_ANSWER)
    fake.script(USER_INFO, {"user_info_list": [{"subscribe": 1, "openid": "oScanner"}]})
    return fake


@pytest.fixture
def sleeps() -> list[float]:
    """The pauses clients asked for: recorded, never slept."""
    return []


@pytest.fixture
def make_client(redis_client, wechat, sleeps) -> Callable[..., WeChatClient]:
    """Build clients (one per simulated worker) on the fake API and the shared Redis."""

    def make(**kwargs: Any) -> WeChatClient:
        session = requests.Session()
        session.mount(API_BASE, wechat)
        kwargs.setdefault("sleep", sleeps.append)
        return WeChatClient(
            APP_ID,
            APP_SECRET,
            redis_client=redis_client,
            api_base=API_BASE,
            session=session,
            timeout=TIMEOUT,
            **kwargs,
        )

    return make


@pytest.fixture
def client(make_client) -> WeChatClient:
    return make_client()


@pytest.mark.parametrize(("expires_in", "ttl"), [(7200, 7140), (300, 240)])
def test_token_is_fetched_once_then_cached_in_redis(client, wechat, redis_client, expires_in, ttl):
    wechat.script(STABLE, token_answer(expires_in=expires_in))

    assert client.access_token() == "TOKEN-1"
    assert client.access_token() == "TOKEN-1"

    assert wechat.paths() == [STABLE]
    [key] = redis_client.keys()
    assert redis_client.get(key) == "TOKEN-1"
    assert ttl - 1 <= redis_client.ttl(key) <= ttl


def test_cached_token_is_shared_by_every_worker(make_client, wechat):
    assert make_client().access_token() == "TOKEN-1"
    assert make_client().access_token() == "TOKEN-1"

    assert wechat.paths() == [STABLE]


def test_stable_token_is_a_json_post_without_force_refresh(client, wechat):
    client.access_token()

    [call] = wechat.calls
    assert (call.method, call.path, call.query) == ("POST", STABLE, {})
    assert call.json == {
        "grant_type": "client_credential",
        "appid": APP_ID,
        "secret": APP_SECRET,
        "force_refresh": False,
    }


def test_classic_token_is_a_get(make_client, wechat):
    make_client(token_endpoint="classic").access_token()

    [call] = wechat.calls
    assert (call.method, call.path, call.json) == ("GET", CLASSIC, None)
    assert call.query == {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}


def test_every_request_has_the_timeout(client, wechat):
    client.create_qrcode(SCENE, 300)

    assert [call.timeout for call in wechat.calls] == [TIMEOUT, TIMEOUT]


PROXY = "http://proxy.test:3128"
PROXY_VARIABLES = ("https_proxy", "no_proxy", "requests_ca_bundle", "curl_ca_bundle")


@pytest.fixture
def environment(monkeypatch) -> Callable[..., None]:
    """Returns a function: set the proxy and CA bundle variables (any case) for this test, the
    others unset."""

    def set_environment(**variables: str) -> None:
        for name in PROXY_VARIABLES:
            for spelt in (name, name.upper()):
                if name in variables:
                    monkeypatch.setenv(spelt, variables[name])
                else:
                    monkeypatch.delenv(spelt, raising=False)

    return set_environment


def test_calls_go_through_the_environments_proxy(make_client, wechat, environment):
    environment(https_proxy=PROXY, no_proxy="localhost,.example.com")

    make_client().create_qrcode(SCENE, 300)

    assert [call.proxies.get("https") for call in wechat.calls] == [PROXY, PROXY]


@pytest.mark.parametrize("no_proxy", ["api.weixin.test", ".weixin.test", "*"])
def test_no_proxy_for_a_host_the_environment_exempts(make_client, wechat, environment, no_proxy):
    environment(https_proxy=PROXY, no_proxy=no_proxy)

    make_client().create_qrcode(SCENE, 300)

    assert [call.proxies.get("https") for call in wechat.calls] == [None, None]


def test_calls_verify_with_the_environments_ca_bundle(make_client, wechat, environment):
    environment(requests_ca_bundle="/etc/ssl/certs/our-ca.pem")

    make_client().create_qrcode(SCENE, 300)

    assert [call.verify for call in wechat.calls] == ["/etc/ssl/certs/our-ca.pem"] * 2


def test_the_environment_is_read_when_the_client_is_built(make_client, wechat, environment):
    environment(https_proxy=PROXY)
    client = make_client()
    environment(https_proxy="http://another-proxy.test:3128")

    client.create_qrcode(SCENE, 300)

    assert [call.proxies.get("https") for call in wechat.calls] == [PROXY, PROXY]


def test_a_burst_of_calls_keeps_its_connections_for_the_next(redis_client, monkeypatch):
    # Against a real loopback server, with the session the client makes itself (production's):
    # a gevent worker makes many calls at once, and each connection not kept for the next
    # burst is one more TLS handshake with WeChat.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    burst = 30
    together = threading.Barrier(burst, timeout=10)  # the burst's calls are all in flight
    connections = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self) -> None:
            super().setup()
            connections.append(self.client_address)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.startswith(QRCODE):
                together.wait()
            answer = QR_ANSWER if self.path.startswith(QRCODE) else token_answer()
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = WeChatClient(
            APP_ID,
            APP_SECRET,
            redis_client=redis_client,
            api_base=f"http://127.0.0.1:{server.server_port}",
            timeout=TIMEOUT,
        )
        client.access_token()
        with ThreadPoolExecutor(burst) as calls:
            for _ in range(2):
                list(calls.map(lambda _: client.create_qrcode(SCENE, 300), range(burst)))
    finally:
        server.shutdown()
        server.server_close()

    assert len(connections) == burst  # the first burst's, kept for the second


def test_create_qrcode(client, wechat):
    qrcode = client.create_qrcode(SCENE, 300)

    assert qrcode == QRCode(QR_ANSWER["ticket"], 300, QR_ANSWER["url"])
    call = wechat.calls[-1]
    assert (call.method, call.path, call.query) == ("POST", QRCODE, {"access_token": "TOKEN-1"})
    assert call.json == {
        "expire_seconds": 300,
        "action_name": "QR_STR_SCENE",
        "action_info": {"scene": {"scene_str": SCENE}},
    }


def test_create_qrcode_returns_the_life_wechat_granted(client, wechat):
    wechat.script(QRCODE, {**QR_ANSWER, "expire_seconds": 120})

    assert client.create_qrcode(SCENE, 300).expire_seconds == 120


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
def test_stale_token_is_refreshed_once_and_the_call_retried_once(client, wechat, errcode):
    wechat.script(STABLE, token_answer("TOKEN-1"), token_answer("TOKEN-2"))
    wechat.script(QRCODE, stale(errcode), QR_ANSWER)

    assert client.create_qrcode(SCENE, 300).ticket == QR_ANSWER["ticket"]

    assert wechat.paths() == [STABLE, QRCODE, STABLE, QRCODE]
    assert [c.query["access_token"] for c in wechat.calls if c.path == QRCODE] == [
        "TOKEN-1",
        "TOKEN-2",
    ]
    assert client.access_token() == "TOKEN-2"


def test_a_second_stale_answer_raises_instead_of_looping(client, wechat):
    wechat.script(STABLE, token_answer("TOKEN-1"), token_answer("TOKEN-2"))
    wechat.script(QRCODE, stale(40001))

    with pytest.raises(InvalidCredentialError) as excinfo:
        client.create_qrcode(SCENE, 300)

    assert excinfo.value.errcode == 40001
    assert wechat.paths() == [STABLE, QRCODE, STABLE, QRCODE]


def test_a_fresher_token_found_under_the_lock_is_used(client, wechat, redis_client):
    client.access_token()
    [token_key] = redis_client.keys()

    def qrcode(call: Call) -> dict:
        if call.query["access_token"] == "TOKEN-1":
            # Another worker refreshed between our call and WeChat's refusal.
            redis_client.set(token_key, "TOKEN-2", ex=7140)
            return stale(40001)
        return QR_ANSWER

    wechat.script(QRCODE, qrcode)

    assert client.create_qrcode(SCENE, 300).ticket == QR_ANSWER["ticket"]
    assert wechat.paths() == [STABLE, QRCODE, QRCODE]
    assert wechat.calls[-1].query["access_token"] == "TOKEN-2"


def test_concurrent_workers_with_an_empty_cache_fetch_the_token_once(make_client, wechat):
    def slow_token(call: Call) -> dict:
        time.sleep(0.3)  # long enough for every worker to find the cache empty
        return token_answer()

    wechat.script(STABLE, slow_token)
    workers = [make_client() for _ in range(8)]
    barrier = threading.Barrier(len(workers))
    tokens: list[str] = []

    def run(worker: WeChatClient) -> None:
        barrier.wait()
        tokens.append(worker.access_token())

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)

    assert tokens == ["TOKEN-1"] * len(workers)
    assert wechat.paths() == [STABLE]


def cooldowns(redis_client) -> dict[str, int]:
    """Every cool-down key in Redis, with its TTL in seconds."""
    return {key: redis_client.ttl(key) for key in redis_client.keys("wechat:cooldown:*")}


@pytest.mark.parametrize("errcode", [48001, 40164])
@pytest.mark.parametrize("path", [STABLE, QRCODE])
def test_nonzero_errcode_raises_api_error(client, wechat, redis_client, sleeps, path, errcode):
    errmsg = f"error {errcode} hint: [rid: 1]"
    wechat.script(path, {"errcode": errcode, "errmsg": errmsg})

    with pytest.raises(WeChatAPIError) as excinfo:
        client.create_qrcode(SCENE, 300)

    assert type(excinfo.value) is WeChatAPIError
    assert (excinfo.value.errcode, excinfo.value.errmsg) == (errcode, errmsg)
    assert wechat.paths().count(path) == 1
    assert sleeps == []
    assert cooldowns(redis_client) == {}


@pytest.mark.parametrize("path", [STABLE, QRCODE])
def test_busy_twice_raises_after_exactly_two_calls(client, wechat, sleeps, path):
    wechat.script(path, {"errcode": -1, "errmsg": "system error"})

    with pytest.raises(WeChatAPIError) as excinfo:
        client.create_qrcode(SCENE, 300)

    assert type(excinfo.value) is WeChatAPIError
    assert (excinfo.value.errcode, excinfo.value.errmsg) == (-1, "system error")
    assert wechat.paths().count(path) == 2
    assert sleeps == [BUSY_RETRY_SECONDS]


@pytest.mark.parametrize("path", [STABLE, QRCODE])
def test_busy_then_success_returns_the_success(client, wechat, sleeps, redis_client, path):
    success = token_answer() if path == STABLE else QR_ANSWER
    wechat.script(path, {"errcode": -1, "errmsg": "system error"}, success)

    assert client.create_qrcode(SCENE, 300) == QRCode(QR_ANSWER["ticket"], 300, QR_ANSWER["url"])

    assert wechat.paths().count(path) == 2
    assert sleeps == [BUSY_RETRY_SECONDS]
    assert cooldowns(redis_client) == {}


def test_success_never_sleeps(client, wechat, sleeps):
    client.create_qrcode(SCENE, 300)

    assert wechat.paths() == [STABLE, QRCODE]
    assert sleeps == []


@pytest.mark.parametrize(("errcode", "seconds"), [(45009, 300), (45011, 60)])
@pytest.mark.parametrize("path", [STABLE, QRCODE])
def test_quota_errcode_cools_the_path_down_for_every_worker(
    make_client, wechat, redis_client, path, errcode, seconds
):
    errmsg = f"reach max api daily quota limit ({errcode})"
    wechat.script(path, {"errcode": errcode, "errmsg": errmsg})

    with pytest.raises(WeChatAPIError) as first:
        make_client().create_qrcode(SCENE, 300)

    assert (first.value.errcode, first.value.errmsg) == (errcode, errmsg)
    key = f"wechat:cooldown:{APP_ID}:{path}"
    assert cooldowns(redis_client) == {key: pytest.approx(seconds, abs=1)}
    sent = len(wechat.calls)

    with pytest.raises(WeChatAPIError) as second:
        make_client().create_qrcode(SCENE, 300)  # another worker

    assert type(second.value) is WeChatAPIError
    assert second.value.errcode == errcode
    assert len(wechat.calls) == sent  # WeChat was not asked again
    assert wechat.paths().count(path) == 1


def test_cooled_down_qrcode_leaves_user_info_alone(client, wechat):
    wechat.script(QRCODE, {"errcode": 45009, "errmsg": "reach max api daily quota limit"})
    with pytest.raises(WeChatAPIError):
        client.create_qrcode(SCENE, 300)

    assert client.users_info(["oScanner"]) == [{"subscribe": 1, "openid": "oScanner"}]

    assert wechat.paths() == [STABLE, QRCODE, USER_INFO]


def test_cooled_down_stable_token_leaves_the_classic_token_alone(make_client, wechat):
    wechat.script(STABLE, {"errcode": 45011, "errmsg": "api minute-quota reach limit"})
    with pytest.raises(WeChatAPIError):
        make_client().access_token()

    assert make_client(token_endpoint="classic").access_token() == "TOKEN-1"

    assert wechat.paths() == [STABLE, CLASSIC]


@pytest.mark.parametrize(
    "failure", [requests.ConnectTimeout, requests.ReadTimeout, requests.ConnectionError]
)
@pytest.mark.parametrize(
    ("token_endpoint", "path"),
    [("classic", CLASSIC), ("stable", STABLE), ("classic", QRCODE), ("stable", QRCODE)],
)
def test_transport_failure_never_shows_secrets(make_client, wechat, token_endpoint, path, failure):
    wechat.script(path, failure)

    with pytest.raises(WeChatTransportError) as excinfo:
        make_client(token_endpoint=token_endpoint).create_qrcode(SCENE, 300)

    assert wechat.calls[-1].path == path
    printed = "".join(traceback.format_exception(excinfo.value))
    assert APP_SECRET not in printed
    assert "TOKEN-1" not in printed


def test_repr_never_shows_the_secret(client):
    assert APP_SECRET not in repr(client)


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        pytest.param(QRCODE, Raw(500, b"<html>Internal Server Error</html>"), id="http-500"),
        pytest.param(QRCODE, Raw(502, b'{"errcode": 0}'), id="http-502-json"),
        pytest.param(QRCODE, Raw(200, b"<html>not json</html>"), id="html"),
        pytest.param(QRCODE, Raw(200, b"[1, 2]"), id="json-array"),
        pytest.param(QRCODE, {"expire_seconds": 300}, id="no-ticket"),
        pytest.param(STABLE, Raw(500, b"busy"), id="token-http-500"),
        pytest.param(STABLE, Raw(200, b"not json"), id="token-not-json"),
        pytest.param(STABLE, {"expires_in": 7200}, id="token-missing"),
    ],
)
def test_an_answer_that_is_not_wechat_json_raises_transport_error(client, wechat, path, answer):
    wechat.script(path, answer)

    with pytest.raises(WeChatTransportError):
        client.create_qrcode(SCENE, 300)

    assert wechat.calls[-1].path == path


# Unionid look-ups in batches: one user/info/batchget for the sign-ins of one moment.


#: How long the tests give the look-ups to finish, in seconds.
SETTLE_SECONDS = 5.0


def unionid_of(openid: str) -> str:
    return "u" + openid[1:]


def answer_each(call) -> dict:
    """WeChat's answer: every user listed, followers with a unionid."""
    return {
        "user_info_list": [
            {"subscribe": 1, "openid": user["openid"], "unionid": unionid_of(user["openid"])}
            for user in call.json["user_list"]
        ]
    }


class Found:
    """Collects what the look-ups found, and waits for it."""

    def __init__(self) -> None:
        self.unionids: dict[str, str] = {}
        self._changed = threading.Condition()

    def __call__(self, openid: str, unionid: str) -> None:
        with self._changed:
            self.unionids[openid] = unionid
            self._changed.notify_all()

    def wait_for(self, count: int) -> dict[str, str]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.unionids) >= count, SETTLE_SECONDS)
        return self.unionids


@pytest.fixture
def found() -> Found:
    return Found()


@pytest.fixture
def lookups(make_client, wechat, found) -> Iterator[UnionidLookups]:
    wechat.script(USER_INFO, answer_each)
    lookups = UnionidLookups(make_client(), found, window_seconds=0.2)
    yield lookups
    lookups.close()


def batches(wechat: FakeWeChat) -> list[list[str]]:
    return [
        [user["openid"] for user in call.json["user_list"]]
        for call in wechat.calls
        if call.path == USER_INFO
    ]


def test_sign_ins_of_one_moment_share_one_call(lookups, wechat, found):
    openids = [f"oUser{n:023d}" for n in range(5)]

    for openid in openids:
        lookups.want(openid)

    assert found.wait_for(5) == {openid: unionid_of(openid) for openid in openids}
    assert batches(wechat) == [openids]


def test_a_call_asks_for_at_most_100_users(lookups, wechat, found):
    openids = [f"oUser{n:023d}" for n in range(MAX_USERS_INFO + 50)]

    for openid in openids:
        lookups.want(openid)

    found.wait_for(len(openids))
    assert [len(batch) for batch in batches(wechat)] == [MAX_USERS_INFO, 50]
    assert sum(batches(wechat), []) == openids


def test_one_user_asked_twice_at_once_is_asked_for_once(lookups, wechat, found):
    lookups.want("oUser00000000000000000000001")
    lookups.want("oUser00000000000000000000001")

    found.wait_for(1)
    assert batches(wechat) == [["oUser00000000000000000000001"]]


def test_a_failed_call_is_logged_and_the_next_sign_in_is_looked_up(lookups, wechat, found, caplog):
    wechat.script(USER_INFO, {"errcode": 48001, "errmsg": "api unauthorized"}, answer_each)

    with caplog.at_level(logging.WARNING, logger="app.login.unionids"):
        lookups.want("oFirst000000000000000000000001")
        deadline = time.monotonic() + SETTLE_SECONDS
        while not any("look-up failed" in record.message for record in caplog.records):
            assert time.monotonic() < deadline, "the failure was never logged"
            time.sleep(0.05)
    lookups.want("oSecond00000000000000000000001")

    assert found.wait_for(1) == {"oSecond00000000000000000000001": "uSecond00000000000000000000001"}


def test_users_info_refuses_more_than_wechat_answers(make_client):
    with pytest.raises(ValueError):
        make_client().users_info([f"o{n}" for n in range(MAX_USERS_INFO + 1)])


def test_closing_looks_up_what_was_asked_then_nothing_more(lookups, wechat, found):
    lookups.want("oUser00000000000000000000001")

    lookups.close()

    assert found.unionids == {"oUser00000000000000000000001": "uUser00000000000000000000001"}
    lookups.want("oUser00000000000000000000002")
    time.sleep(0.5)
    assert batches(wechat) == [["oUser00000000000000000000001"]]
