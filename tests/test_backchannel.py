"""Back-channel logout: the session registry on real Redis, and logout tokens posted to a real
(small) relying party that verifies them as OpenID Connect Back-Channel Logout 1.0, section 2.6,
asks."""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from prometheus_client import REGISTRY
from werkzeug.wrappers import Request, Response

from app.oidc.backchannel import LOGOUT_EVENT, BackchannelSender
from app.oidc.sessions import (
    ENDED_GRACE_SECONDS,
    RECORD_GRACE_SECONDS,
    EndedSession,
    SessionEndedError,
    SessionRegistry,
)
from tests.conftest import free_port

ISSUER = "https://op.example.test"
CLIENT_ID = "rp-client-1"
SUB = "u-4f1Qm2bX7nWcT0aZ"
SID = "sid-9e8d7c6b5a"
START = 1_800_000_000.0


class Clock:
    """A clock that moves only when told."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the session registry ---------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(redis_client, clock) -> SessionRegistry:
    return SessionRegistry(redis_client, prefix="t:", clock=clock)


def test_end_takes_every_client_and_token_recorded(registry):
    registry.record(SID, sub=SUB, client_id="c1", token_ids=["a1", "r1"], expires_at=START + 60)
    registry.record(SID, sub=SUB, client_id="c2", token_ids=["a2"], expires_at=START + 60)
    registry.record(SID, sub=SUB, client_id="c1", token_ids=["a3"], expires_at=START + 60)

    assert registry.end(SID) == EndedSession(SID, SUB, ("c1", "c2"), ("a1", "a2", "a3", "r1"))
    assert registry.end(SID) is None


def test_end_of_an_unknown_session_is_none(registry):
    assert registry.end("never-recorded") is None


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "never-recorded"])
def test_an_ended_session_refuses_new_tokens(registry, recorded):
    # A code exchanged, or a refresh, racing the sign-out must not mint tokens nothing will end.
    if recorded:
        registry.record(SID, sub=SUB, client_id="c1", token_ids=["a1"], expires_at=START + 60)
    registry.end(SID)

    with pytest.raises(SessionEndedError) as refused:
        registry.record(SID, sub=SUB, client_id="c2", token_ids=["a2"], expires_at=START + 60)
    assert refused.value.sid == SID
    assert registry.end(SID) is None


def test_a_session_belongs_to_one_sub(registry):
    registry.record(SID, sub=SUB, client_id="c1", token_ids=[], expires_at=START + 60)
    with pytest.raises(ValueError, match="another sub"):
        registry.record(SID, sub="someone-else", client_id="c2", token_ids=[], expires_at=START)
    assert registry.end(SID).client_ids == ("c1",)


def test_end_is_won_by_exactly_one_of_concurrent_callers(registry):
    callers = 8
    with ThreadPoolExecutor(callers) as pool:
        for round_ in range(20):
            sid = f"{SID}-{round_}"
            registry.record(sid, sub=SUB, client_id="c1", token_ids=["t"], expires_at=START + 9)
            barrier = threading.Barrier(callers)

            def end(sid=sid, barrier=barrier):
                barrier.wait(5)
                return registry.end(sid)

            results = list(pool.map(lambda _: end(), range(callers)))
            winners = [result for result in results if result is not None]
            assert winners == [EndedSession(sid, SUB, ("c1",), ("t",))]


def test_no_token_recorded_survives_a_concurrent_end(registry):
    # Every record either lands before the end (and is taken by it) or is refused: a token id
    # is never left behind in a session nobody will end again.
    writers = 6
    recorded: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    some_recorded = threading.Event()

    def write(writer: int) -> None:
        for n in range(10_000):  # until the end refuses this writer
            token_id = f"t{writer}-{n}"
            try:
                registry.record(
                    SID, sub=SUB, client_id=f"c{writer}", token_ids=[token_id], expires_at=START
                )
            except SessionEndedError:
                with lock:
                    refused.append(token_id)
                return
            with lock:
                recorded.append(token_id)
                if len(recorded) >= 50:
                    some_recorded.set()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    assert some_recorded.wait(10)
    ended = registry.end(SID)
    for thread in threads:
        thread.join(10)

    assert ended is not None
    assert sorted(ended.token_ids) == sorted(recorded)
    assert len(refused) == writers
    assert registry.end(SID) is None


def test_expired_lists_sessions_past_their_expiry_by_the_clock(registry, clock):
    for n, life in enumerate((10, 20, 30), start=1):
        registry.record(f"s{n}", sub=SUB, client_id="c", token_ids=[], expires_at=START + life)
    assert registry.expired() == []

    clock.now = START + 15
    assert registry.expired() == ["s1"]
    clock.now = START + 25
    assert registry.expired() == ["s1", "s2"]
    assert registry.expired(limit=1) == ["s1"]
    assert registry.expired() == ["s1", "s2"], "expired() is read only"

    assert registry.end("s1") is not None
    assert registry.expired() == ["s2"]


def test_a_session_keeps_the_latest_expiry_named(registry, clock):
    registry.record(SID, sub=SUB, client_id="c1", token_ids=[], expires_at=START + 100)
    registry.record(SID, sub=SUB, client_id="c2", token_ids=[], expires_at=START + 10)
    clock.now = START + 50
    assert registry.expired() == []
    clock.now = START + 101
    assert registry.expired() == [SID]


def test_an_expired_session_whose_record_is_gone_leaves_the_index(registry, redis_client, clock):
    registry.record(SID, sub=SUB, client_id="c1", token_ids=["a"], expires_at=START + 10)
    # As if the sweep had been down past the grace and the record's TTL had run out.
    redis_client.delete(*redis_client.keys(f"t:oidc:session:{SID}*"))
    clock.now = START + 11

    assert registry.expired() == [SID]
    assert registry.end(SID) is None
    assert registry.expired() == []


@pytest.mark.parametrize("prefix", ["", "tenant-a:"])
def test_keys_carry_the_prefix_and_expire(redis_client, clock, prefix):
    registry = SessionRegistry(redis_client, prefix=prefix, clock=clock)
    registry.record(SID, sub=SUB, client_id="c1", token_ids=["a"], expires_at=START + 600)

    session = f"{prefix}oidc:session:{SID}"
    index = f"{prefix}oidc:sessions:expiry"
    records = {session, f"{session}:clients", f"{session}:tokens"}
    assert set(redis_client.keys("*")) == records | {index}
    for key in records:
        assert redis_client.ttl(key) == 600 + RECORD_GRACE_SECONDS

    registry.end(SID)
    assert set(redis_client.keys("*")) == {f"{session}:ended"}
    assert redis_client.ttl(f"{session}:ended") == 600 + ENDED_GRACE_SECONDS


# -- the sender and a relying party ----------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "op-key-1"})


@pytest.fixture
def sign(key):
    """The OP's signer as the lead wires it: RS256, ``typ: logout+jwt``, the key's ``kid``."""

    def sign(claims: dict) -> str:
        return jwt.encode({"alg": "RS256", "typ": "logout+jwt", "kid": key.kid}, claims, key)

    return sign


class RelyingParty:
    """A client's back-channel logout endpoint: validates each logout token (section 2.6)
    against the OP's public key, answers 400 to a bad one, else the next scripted status (the
    last repeats). Every request is kept in ``received``.

    Args:
        public_key: the OP's public JWK.
        statuses: what to answer valid tokens, in order.
        gate: when given, every request waits for it to be set.
    """

    def __init__(self, public_key: RSAKey, statuses=(200,), gate: threading.Event | None = None):
        self.received: list[dict] = []
        self._key = public_key
        self._statuses = list(statuses)
        self._gate = gate
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        if self._gate is not None:
            self._gate.wait(10)
        seen = {"method": request.method, "path": request.path, "mimetype": request.mimetype}
        try:
            seen["token"] = request.form["logout_token"]
            token = jwt.decode(seen["token"], self._key, algorithms=["RS256"])
            self.validate(token)
            seen["header"], seen["claims"] = token.header, token.claims
            with self._lock:
                status = self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]
        except (KeyError, ValueError, JoseError) as exc:
            seen["error"] = repr(exc)
            status = 400
        with self._lock:
            self.received.append(seen)
        headers = {"Location": "/elsewhere"} if 300 <= status < 400 else {}
        return Response(status=status, headers=headers)(environ, start_response)

    @staticmethod
    def validate(token: jwt.Token) -> None:
        """Section 2.6, steps 3 to 7 (the signature was checked by ``jwt.decode``)."""
        if token.header.get("typ") != "logout+jwt":
            raise ValueError(f"typ {token.header.get('typ')!r}")
        jwt.JWTClaimsRegistry(
            leeway=5,
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": CLIENT_ID},
            iat={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
            sub={"essential": True, "value": SUB},
            sid={"essential": True, "value": SID},
        ).validate(token.claims)
        if token.claims.get("events") != {LOGOUT_EVENT: {}}:
            raise ValueError(f"events {token.claims.get('events')!r}")
        if "nonce" in token.claims:
            raise ValueError("a logout token must not carry a nonce")


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(4, thread_name_prefix="test-backchannel")
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def slept() -> list[float]:
    """The delays the sender waited, recorded instead of slept."""
    return []


@pytest.fixture
def sender(sign, executor, slept):
    with requests.Session() as session:
        yield BackchannelSender(
            issuer=ISSUER,
            sign=sign,
            session=session,
            executor=executor,
            retry_delays=(1, 2, 5),
            sleep=slept.append,
        )


@pytest.fixture
def rp_at(serve, key):
    """Returns a function: serve a ``RelyingParty`` with these statuses; (it, its logout URI)."""

    def start(statuses=(200,), gate=None) -> tuple[RelyingParty, str]:
        rp = RelyingParty(RSAKey.import_key(key.as_dict(private=False)), statuses, gate)
        return rp, serve(rp) + "/logout"

    return start


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("wechat_login_oidc_logout_tokens_total", {"outcome": outcome})
    return value or 0.0


@pytest.fixture
def counts():
    """Returns a function: how much each outcome was counted since the test began."""
    before = {outcome: counted(outcome) for outcome in ("sent", "retried", "failed")}
    return lambda: {outcome: counted(outcome) - value for outcome, value in before.items()}


def send(sender, uri: str):
    return sender.send(client_id=CLIENT_ID, backchannel_logout_uri=uri, sub=SUB, sid=SID)


@pytest.mark.parametrize("status", [200, 204])
def test_the_client_receives_a_valid_logout_token(sender, rp_at, counts, slept, status):
    rp, uri = rp_at((status,))
    before = int(time.time())

    assert send(sender, uri).result(10) is True

    [seen] = rp.received
    assert "error" not in seen, seen["error"]
    assert (seen["method"], seen["path"]) == ("POST", "/logout")
    assert seen["mimetype"] == "application/x-www-form-urlencoded"
    assert seen["header"] == {"alg": "RS256", "typ": "logout+jwt", "kid": "op-key-1"}
    claims = seen["claims"]
    assert set(claims) == {"iss", "aud", "iat", "exp", "jti", "sub", "sid", "events"}
    assert (claims["iss"], claims["aud"], claims["sub"], claims["sid"]) == (
        ISSUER,
        CLIENT_ID,
        SUB,
        SID,
    )
    assert before <= claims["iat"] <= time.time()
    assert claims["exp"] == claims["iat"] + 120
    assert len(claims["jti"]) >= 16
    assert claims["events"] == {LOGOUT_EVENT: {}}
    assert slept == []
    assert counts() == {"sent": 1, "retried": 0, "failed": 0}


def test_claims_are_fresh_and_follow_the_clock(sign, executor):
    clock = Clock(START + 0.9)
    with requests.Session() as session:
        sender = BackchannelSender(
            issuer=ISSUER, sign=sign, session=session, executor=executor, clock=clock
        )
    first = sender.logout_claims(client_id=CLIENT_ID, sub=SUB, sid=SID)
    second = sender.logout_claims(client_id=CLIENT_ID, sub=SUB, sid=SID)

    assert (first["iat"], first["exp"]) == (int(START), int(START) + 120)
    assert first["jti"] != second["jti"]
    assert "nonce" not in first


@pytest.mark.parametrize(
    "statuses", [(500, 200), (429, 204), (503, 502, 200)], ids=["500", "429", "503-502"]
)
def test_a_busy_or_failing_client_is_retried_with_backoff(sender, rp_at, counts, slept, statuses):
    rp, uri = rp_at(statuses)

    assert send(sender, uri).result(10) is True

    assert len(rp.received) == len(statuses)
    assert all("error" not in seen for seen in rp.received)
    assert slept == [1, 2][: len(statuses) - 1]
    # Each attempt is signed afresh, so a late retry never carries an expired token.
    assert len({seen["claims"]["jti"] for seen in rp.received}) == len(statuses)
    assert counts() == {"sent": 1, "retried": len(statuses) - 1, "failed": 0}


@pytest.mark.parametrize("status", [400, 401, 404, 302])
def test_a_refusal_is_final(sender, rp_at, counts, slept, status):
    rp, uri = rp_at((status,))

    assert send(sender, uri).result(10) is False

    # One request: nothing retried, and a redirect (to /elsewhere) not followed.
    assert [seen["path"] for seen in rp.received] == ["/logout"]
    assert slept == []
    assert counts() == {"sent": 0, "retried": 0, "failed": 1}


def test_the_sender_gives_up_after_the_last_delay(sender, rp_at, counts, slept):
    rp, uri = rp_at((500,))

    assert send(sender, uri).result(10) is False

    assert len(rp.received) == 4
    assert slept == [1, 2, 5]
    assert counts() == {"sent": 0, "retried": 3, "failed": 1}


def test_an_unreachable_client_is_retried(sender, counts, slept):
    uri = f"http://127.0.0.1:{free_port()}/logout"  # nothing listens there

    assert send(sender, uri).result(10) is False

    assert slept == [1, 2, 5]
    assert counts() == {"sent": 0, "retried": 3, "failed": 1}


def test_send_never_blocks_the_caller(sender, rp_at):
    gate = threading.Event()
    rp, uri = rp_at((200,), gate)
    try:
        started = time.monotonic()
        future = send(sender, uri)
        assert time.monotonic() - started < 0.2
        time.sleep(0.2)
        assert not future.done(), "the client has not answered yet"
    finally:
        gate.set()
    assert future.result(10) is True
    assert len(rp.received) == 1


def test_a_failing_signer_ends_as_a_logged_failure(executor, counts, caplog):
    def sign(claims: dict) -> str:
        raise RuntimeError("no signing key")

    with requests.Session() as session:
        sender = BackchannelSender(issuer=ISSUER, sign=sign, session=session, executor=executor)
        assert send(sender, "http://127.0.0.1:9/logout").result(10) is False

    assert counts() == {"sent": 0, "retried": 0, "failed": 1}
    assert "no signing key" in caplog.text


def test_outcomes_are_logged_but_never_the_token(sender, rp_at, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3's request lines too
    rp, uri = rp_at((500, 200))

    assert send(sender, uri).result(10) is True

    assert "retrying in 1 s" in caplog.text
    assert f"delivered to client {CLIENT_ID}" in caplog.text
    for seen in rp.received:
        assert seen["token"] not in caplog.text
        assert seen["token"].split(".")[2] not in caplog.text
