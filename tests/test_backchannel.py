"""Back-channel logout: the session registry on real Redis."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.oidc.sessions import (
    ENDED_GRACE_SECONDS,
    RECORD_GRACE_SECONDS,
    EndedSession,
    SessionEndedError,
    SessionRegistry,
)

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
