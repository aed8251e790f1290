"""WeChat's retries answered once (RetryLedger), on the real Redis."""

import pytest

from app.wechat.dedupe import DEDUPE_SECONDS, RetryLedger
from tests.test_store import run_together


@pytest.fixture
def ledger(redis_client) -> RetryLedger:
    return RetryLedger(redis_client)


def test_claim_callback_then_remember_reply(ledger, redis_client):
    assert ledger.claim("event:o:1:SCAN:s") is None
    assert ledger.claim("event:o:1:SCAN:s") == ""  # first delivery still processing

    ledger.remember("event:o:1:SCAN:s", "登录成功")

    assert ledger.claim("event:o:1:SCAN:s") == "登录成功"
    assert ledger.claim("event:o:2:SCAN:s") is None
    assert redis_client.ttl("wechat:dedupe:event:o:1:SCAN:s") == DEDUPE_SECONDS


def test_release_callback_lets_the_retry_be_processed(ledger):
    assert ledger.claim("msg:1") is None

    ledger.release("msg:1")

    assert ledger.claim("msg:1") is None
    assert ledger.claim("msg:1") == ""


def test_concurrent_claims_let_exactly_one_through(ledger):
    results = run_together(16, lambda i: ledger.claim("msg:1"))

    assert results.count(None) == 1
    assert results.count("") == 15
