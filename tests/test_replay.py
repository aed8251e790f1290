"""The signature ledger: a signed query is good for one request, GET or POST, while its
timestamp is fresh; a spent one stays spent for as long as its timestamp could pass; one
reserved for a verification GET is good for that GET only. Real Redis, an injected clock."""

import secrets

import pytest

from app.wechat.errors import StaleSignatureError
from app.wechat.replay import SignatureLedger
from app.wechat.signature import sign
from tests.conftest import TOKEN

MAX_AGE = 300
NOW = 1_700_000_000


class Clock:
    """A clock that stands where the test puts it, in epoch seconds."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def ledger(redis_client, clock) -> SignatureLedger:
    return SignatureLedger(redis_client, MAX_AGE, clock=clock)


def signature_for(timestamp: int | str) -> str:
    """A signature over ``timestamp`` and a fresh nonce, as WeChat (or our checker) makes one."""
    return sign(TOKEN, str(timestamp), str(secrets.randbelow(10**10)))


# The edges of the window: a timestamp exactly MAX_AGE away passes, one second more does not.
EDGES = [-MAX_AGE, -1, 0, 1, MAX_AGE]


@pytest.mark.parametrize("offset", EDGES)
@pytest.mark.parametrize("verification", [False, True], ids=["post", "get"])
def test_a_fresh_signature_is_accepted_once_whatever_the_method(ledger, offset, verification):
    timestamp = str(NOW + offset)
    signature = signature_for(timestamp)

    ledger.spend(signature, timestamp, verification=verification)

    for again in (False, True):
        with pytest.raises(StaleSignatureError, match="replayed signature"):
            ledger.spend(signature, timestamp, verification=again)


@pytest.mark.parametrize("offset", EDGES)
def test_a_spent_signature_stays_spent_while_its_timestamp_could_pass(
    ledger, redis_client, clock, offset
):
    timestamp = NOW + offset
    signature = signature_for(timestamp)
    ledger.spend(signature, str(timestamp))
    last_fresh = timestamp + MAX_AGE  # the timestamp passes the freshness check until then

    # Redis expires keys by its own clock, not the injected one: read the record's life.
    assert redis_client.ttl(ledger.key(signature)) >= last_fresh - NOW
    for moment in range(NOW, last_fresh + 1, 60):
        clock.now = moment
        with pytest.raises(StaleSignatureError, match="replayed signature"):
            ledger.spend(signature, str(timestamp))
    clock.now = last_fresh
    with pytest.raises(StaleSignatureError, match="replayed signature"):
        ledger.spend(signature, str(timestamp))


@pytest.mark.parametrize("offset", [-MAX_AGE - 1, MAX_AGE + 1, -86400])
@pytest.mark.parametrize("verification", [False, True], ids=["post", "get"])
def test_a_stale_signature_is_refused_and_not_recorded(ledger, redis_client, offset, verification):
    timestamp = str(NOW + offset)
    signature = signature_for(timestamp)

    with pytest.raises(StaleSignatureError, match="stale timestamp"):
        ledger.spend(signature, timestamp, verification=verification)

    assert not redis_client.exists(ledger.key(signature))


@pytest.mark.parametrize("timestamp", ["", "abc", f"{NOW}.0", f"+{NOW}", "9" * 13])
def test_a_malformed_timestamp_is_refused(ledger, timestamp):
    with pytest.raises(StaleSignatureError, match="invalid timestamp"):
        ledger.spend(signature_for(timestamp), timestamp)


def test_a_signature_reserved_for_verification_is_good_for_one_get_only(ledger):
    timestamp = str(NOW)
    signature = signature_for(timestamp)

    ledger.reserve_for_verification(signature)

    with pytest.raises(StaleSignatureError, match="verification"):
        ledger.spend(signature, timestamp)
    ledger.spend(signature, timestamp, verification=True)
    for again in (False, True):
        with pytest.raises(StaleSignatureError, match="replayed signature"):
            ledger.spend(signature, timestamp, verification=again)


def test_a_reservation_lasts_the_whole_window(ledger, redis_client):
    signature = signature_for(NOW)

    ledger.reserve_for_verification(signature)

    # Reserved at NOW, signed for NOW: it could pass the freshness check until NOW + MAX_AGE.
    assert redis_client.ttl(ledger.key(signature)) >= MAX_AGE
