"""LoginStore and UserStore on the real Redis, with a fake clock for expiry."""

import json
import re
import threading

import pytest

from app.login.store import (
    AttemptContext,
    ConfirmOutcome,
    LoginStore,
    RedeemError,
    SignIn,
    Status,
    hash_secret,
    new_scene,
)
from app.login.users import UserStore
from app.wechat.dedupe import RetryLedger

NOW = 1714036504.0  # 2024-04-25T09:15:04+00:00
EXPIRE_SECONDS = 300
CODE_TTL = 60
SCENE = "1714036504000-5f1d3c9a8b7e6d5c4b3a2910"
BROWSER = hash_secret("browser-a-secret")
OTHER_BROWSER = hash_secret("browser-b-secret")
QR_URL = "http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(redis_client, clock) -> LoginStore:
    return LoginStore(redis_client, code_ttl=CODE_TTL, clock=clock)


@pytest.fixture
def users(redis_client, clock) -> UserStore:
    return UserStore(redis_client, clock=clock)


@pytest.fixture
def attempt(store):
    return store.create_attempt(SCENE, BROWSER, EXPIRE_SECONDS)


def run_together(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released at once; return the results in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # the test inspects what each thread got
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return results


def test_new_scene_format():
    scene = new_scene(1714036504.5)

    match = re.fullmatch(r"(\d+)-([0-9a-f]+)", scene)
    assert match is not None, scene
    assert match[1] == "1714036504500"
    assert len(match[2]) * 4 >= 64
    assert len(scene) <= 64


def test_new_scenes_are_unique_within_one_millisecond():
    assert len({new_scene(NOW) for _ in range(10_000)}) == 10_000


def test_create_and_get_attempt(store, attempt, redis_client):
    assert store.get_attempt(SCENE) == attempt
    assert (attempt.status, attempt.openid, attempt.code) == (Status.WAITING, None, None)
    assert (attempt.created_at, attempt.expires_at) == (NOW, NOW + EXPIRE_SECONDS)
    assert attempt.owned_by(BROWSER) and not attempt.owned_by(OTHER_BROWSER)
    assert redis_client.ttl(f"login:attempt:{SCENE}") == EXPIRE_SECONDS


def test_unknown_attempt_is_none(store):
    assert store.get_attempt(SCENE) is None


@pytest.mark.parametrize(
    ("elapsed", "alive"), [(0, True), (EXPIRE_SECONDS - 0.001, True), (EXPIRE_SECONDS, False)]
)
def test_waiting_attempt_ends_with_its_qr(store, attempt, clock, elapsed, alive):
    clock.advance(elapsed)

    assert (store.get_attempt(SCENE) is not None) is alive
    assert (store.confirm(SCENE, "oScanner")[0] is ConfirmOutcome.CONFIRMED) is alive


def test_confirm(store, attempt, redis_client):
    outcome, confirmed = store.confirm(SCENE, "oScanner")

    assert outcome is ConfirmOutcome.CONFIRMED
    assert (confirmed.status, confirmed.openid) == (Status.CONFIRMED, "oScanner")
    assert confirmed.code
    assert store.get_attempt(SCENE) == confirmed
    assert redis_client.ttl(f"login:attempt:{SCENE}") == CODE_TTL
    assert redis_client.ttl(f"login:code:{confirmed.code}") == CODE_TTL


@pytest.mark.parametrize(
    ("openid", "outcome"),
    [("oScanner", ConfirmOutcome.ALREADY_CONFIRMED), ("oSomeoneElse", ConfirmOutcome.TAKEN)],
)
def test_second_confirm_changes_nothing(store, attempt, openid, outcome):
    _, confirmed = store.confirm(SCENE, "oScanner")

    assert store.confirm(SCENE, openid) == (outcome, confirmed)
    assert store.get_attempt(SCENE) == confirmed


def test_a_change_is_announced_in_the_same_step_after_the_write(store, attempt, redis_client):
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("attempts")
    listener.get_message(timeout=1.0)
    announce = ("attempts", json.dumps({"scene": SCENE}), "changes")

    store.mark_scanned(SCENE, "oScanner", announce=announce)
    scanned = listener.get_message(timeout=1.0)
    store.mark_scanned(SCENE, "oSomeoneElse", announce=announce)  # taken: nothing changed
    _, confirmed = store.confirm(SCENE, "oScanner", announce=announce)
    confirmation = listener.get_message(timeout=1.0)
    store.confirm(SCENE, "oScanner", announce=announce)  # already confirmed: nothing changed

    # Each push carries the state it announces, so that a waiting socket need not read it.
    assert json.loads(scanned["data"]) == {"scene": SCENE, "status": "scanned"}
    assert json.loads(confirmation["data"]) == {
        "scene": SCENE,
        "status": "confirmed",
        "code": confirmed.code,
        "confirmed_at": repr(confirmed.confirmed_at),
    }
    assert listener.get_message(timeout=0.2) is None
    listener.close()
    # The same two changes in the stream the hubs' sweeps read, should a push be lost.
    assert [fields for _, fields in redis_client.xrange("changes")] == [{"scene": SCENE}] * 2


def test_a_login_is_counted_once_however_its_record_is_completed(
    store, users, attempt, redis_client
):
    store.confirm(SCENE, "oScanner", login_count_key=users.record_key("oScanner"))
    assert users.get("oScanner") is None  # counted, not yet recorded: no user yet

    # The callback's record and the redeem's fallback, in either order, count nothing more.
    users.record_login("oScanner", count=False)
    users.record_login("oScanner", count=False)

    assert users.get("oScanner").login_count == 1
    store.confirm(SCENE, "oScanner", login_count_key=users.record_key("oScanner"))  # a retry
    assert users.get("oScanner").login_count == 1


def test_a_scan_claims_its_callback_in_the_same_step(store, attempt, redis_client):
    retries = RetryLedger(redis_client)
    claim = retries.claim_of("oScanner:1714036504")

    outcome, scanned = store.mark_scanned(SCENE, "oScanner", claim=claim)

    assert outcome is ConfirmOutcome.AWAITING_CONFIRMATION
    assert retries.claim("oScanner:1714036504") == ""  # claimed, no reply yet


def test_a_retry_while_the_first_is_handled_is_taken_again(store, attempt, redis_client):
    retries = RetryLedger(redis_client)
    assert retries.claim("oScanner:1714036504") is None  # the first delivery, still running

    outcome, confirmed = store.confirm(
        SCENE, "oScanner", claim=retries.claim_of("oScanner:1714036504")
    )

    assert outcome is ConfirmOutcome.CONFIRMED


def test_a_retry_of_an_answered_callback_changes_nothing(store, attempt, redis_client):
    retries = RetryLedger(redis_client)
    claim = retries.claim_of("oScanner:1714036504")
    store.mark_scanned(SCENE, "oScanner", claim=claim)
    retries.remember("oScanner:1714036504", "回复 1 确认登录")
    store.cancel(SCENE, "oScanner")
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("attempts")
    listener.get_message(timeout=1.0)

    retried = store.mark_scanned(
        SCENE, "oScanner", announce=("attempts", "x", "changes"), claim=claim
    )

    assert retried == (ConfirmOutcome.RETRIED, None)
    assert store.get_attempt(SCENE).status is Status.CANCELLED
    assert listener.get_message(timeout=0.2) is None
    assert not redis_client.exists("changes")
    listener.close()


def test_confirm_unknown_scene(store):
    assert store.confirm(SCENE, "oScanner") == (ConfirmOutcome.UNKNOWN, None)
    assert store.get_attempt(SCENE) is None


def test_confirmed_attempt_outlives_its_qr(store, attempt, clock):
    _, confirmed = store.confirm(SCENE, "oScanner")
    clock.advance(EXPIRE_SECONDS + 1)

    assert store.get_attempt(SCENE) == confirmed


def test_concurrent_confirms_confirm_exactly_once(store):
    scenes = [f"{SCENE}-{n}" for n in range(50)]  # many scenes: a race shows only now and then
    for scene in scenes:
        store.create_attempt(scene, BROWSER, EXPIRE_SECONDS)

    results = run_together(16, lambda i: [store.confirm(s, f"oScanner{i}") for s in scenes])

    for n, scene in enumerate(scenes):
        outcomes = [per_thread[n][0] for per_thread in results]
        assert outcomes.count(ConfirmOutcome.CONFIRMED) == 1, scene
        assert outcomes.count(ConfirmOutcome.TAKEN) == 15, scene
        winner = outcomes.index(ConfirmOutcome.CONFIRMED)
        assert store.get_attempt(scene).openid == f"oScanner{winner}"


def test_redeem_works_once(store, attempt):
    _, confirmed = store.confirm(SCENE, "oScanner")

    assert store.redeem(confirmed.code, BROWSER) == ("oScanner", SCENE)
    with pytest.raises(RedeemError):
        store.redeem(confirmed.code, BROWSER)


def test_redeem_by_another_browser_leaves_the_code_usable(store, attempt):
    _, confirmed = store.confirm(SCENE, "oScanner")

    with pytest.raises(RedeemError):
        store.redeem(confirmed.code, OTHER_BROWSER)
    assert store.redeem(confirmed.code, BROWSER) == ("oScanner", SCENE)


@pytest.mark.parametrize("code", ["", "no-such-code", SCENE])
def test_redeem_unknown_code(store, attempt, code):
    store.confirm(SCENE, "oScanner")

    with pytest.raises(RedeemError):
        store.redeem(code, BROWSER)


def test_concurrent_redeems_succeed_exactly_once(store, attempt):
    _, confirmed = store.confirm(SCENE, "oScanner")

    results = run_together(16, lambda i: store.redeem(confirmed.code, BROWSER))

    assert results.count(("oScanner", SCENE)) == 1
    assert all(isinstance(r, RedeemError) for r in results if r != ("oScanner", SCENE))


def test_record_login_counts_and_keeps_the_first_time(users, clock):
    assert users.get("oScanner") is None

    users.record_login("oScanner")
    clock.advance(3600)
    users.record_login("oScanner")

    user = users.get("oScanner")
    assert (user.openid, user.unionid, user.login_count) == ("oScanner", None, 2)
    assert (user.first_login_at, user.last_login_at) == (NOW, NOW + 3600)


def test_user_to_json(users, clock):
    users.record_login("oScanner")
    clock.advance(3600.75)
    users.record_login("oScanner")
    users.set_unionid("oScanner", "uUnion")
    user = users.get("oScanner")

    assert user.to_json() == {
        "id": user.id,
        "openid": "oScanner",
        "unionid": "uUnion",
        "first_login_at": "2024-04-25T09:15:04+00:00",
        "last_login_at": "2024-04-25T10:15:04+00:00",
        "login_count": 2,
        "nickname": None,
        "headimgurl": None,
        "identities": [{"method": "scan", "appid": "", "openid": "oScanner"}],
    }


def test_each_user_gets_a_random_id_of_their_own_once(users, redis_client):
    first = users.record_login("oScanner")
    again = users.record_login("oScanner")
    other = users.record_login("oSomeoneElse")

    assert first.id == again.id
    assert len(first.id) >= 22 and first.id != other.id
    assert "oScanner" not in first.id
    assert users.by_id(first.id) == users.get("oScanner")
    assert users.by_id("no-such-id") is None


def test_a_user_from_before_ids_gets_one_at_the_next_login(users, redis_client):
    redis_client.hset(
        "user:oScanner",
        mapping={
            "openid": "oScanner",
            "first_login_at": "1",
            "last_login_at": "1",
            "login_count": "3",
        },
    )
    assert users.get("oScanner").id is None

    user = users.record_login("oScanner")

    assert user.id and user.login_count == 4
    assert users.by_id(user.id).openid == "oScanner"


def test_set_unionid_for_a_user_who_has_no_record_leaves_nothing_behind(users, redis_client):
    users.set_unionid("oGone", "uUnion")

    assert redis_client.keys("user:*") == []
    assert users.get("oGone") is None


@pytest.mark.parametrize(
    "record",
    [
        {"unionid": "uUnion"},
        {"openid": "oScanner", "first_login_at": repr(NOW), "last_login_at": repr(NOW)},
    ],
    ids=["unionid-only", "no-login-count"],
)
def test_a_partial_user_record_is_no_user_and_the_next_sign_in_completes_it(
    users, redis_client, record
):
    redis_client.hset("user:oScanner", mapping=record)

    assert users.get("oScanner") is None
    user = users.record_login("oScanner")
    assert user.login_count >= 1
    assert users.get("oScanner") == user


def scanned(store, openid: str = "oScanner"):
    outcome, attempt = store.mark_scanned(SCENE, openid)
    assert outcome is ConfirmOutcome.AWAITING_CONFIRMATION
    return attempt


def test_create_attempt_keeps_the_qr_and_its_context(store):
    context = AttemptContext("login.example.com", "Chrome 120 / Windows 10", "203.0.113.7")

    created = store.create_attempt(
        SCENE, BROWSER, EXPIRE_SECONDS, ticket="gQH47joAAA==", qrcode_url=QR_URL, context=context
    )

    assert store.get_attempt(SCENE) == created
    assert (created.ticket, created.qrcode_url, created.context) == (
        "gQH47joAAA==",
        QR_URL,
        context,
    )


def test_mark_scanned_awaits_confirmation(store, attempt, clock, redis_client):
    clock.advance(100)

    outcome, marked = store.mark_scanned(SCENE, "oScanner")

    assert outcome is ConfirmOutcome.AWAITING_CONFIRMATION
    assert (marked.status, marked.openid, marked.code) == (Status.SCANNED, "oScanner", None)
    assert store.get_attempt(SCENE) == marked
    assert store.pending_scene("oScanner") == SCENE
    assert redis_client.ttl("login:pending:oScanner") == pytest.approx(EXPIRE_SECONDS - 100, abs=1)
    assert store.pending_scene("oSomeoneElse") is None


@pytest.mark.parametrize(
    ("openid", "outcome"),
    [("oScanner", ConfirmOutcome.AWAITING_CONFIRMATION), ("oSomeoneElse", ConfirmOutcome.TAKEN)],
)
def test_second_scan(store, attempt, openid, outcome):
    marked = scanned(store)

    assert store.mark_scanned(SCENE, openid) == (outcome, marked)
    assert store.get_attempt(SCENE) == marked
    assert store.pending_scene("oScanner") == SCENE
    assert store.pending_scene("oSomeoneElse") is None


def test_confirm_from_scanned_by_the_scanner(store, attempt, redis_client):
    scanned(store)

    outcome, confirmed = store.confirm(SCENE, "oScanner")

    assert outcome is ConfirmOutcome.CONFIRMED
    assert (confirmed.status, confirmed.openid) == (Status.CONFIRMED, "oScanner")
    assert confirmed.code
    assert store.pending_scene("oScanner") is None
    assert redis_client.zrange("login:signins:oScanner", 0, -1) == [SCENE]
    assert redis_client.hgetall(f"login:signin:{SCENE}") == {
        "openid": "oScanner",
        "browser_hash": BROWSER,
        "method": "scan",
    }
    for key in ("login:signins:oScanner", f"login:signin:{SCENE}"):
        assert redis_client.ttl(key) == pytest.approx(7 * 86400, abs=1)
    assert redis_client.ttl(f"login:attempt:{SCENE}") == CODE_TTL
    assert store.redeem(confirmed.code, BROWSER) == ("oScanner", SCENE)


def test_confirm_from_scanned_by_someone_else_is_taken(store, attempt, redis_client):
    marked = scanned(store)

    assert store.confirm(SCENE, "oSomeoneElse") == (ConfirmOutcome.TAKEN, marked)

    assert store.get_attempt(SCENE) == marked
    assert store.pending_scene("oScanner") == SCENE
    assert redis_client.exists("login:signins:oSomeoneElse", "login:signins:oScanner") == 0


def test_cancel(store, attempt, clock, redis_client):
    scanned(store)
    clock.advance(100)

    outcome, cancelled = store.cancel(SCENE, "oScanner")

    assert outcome is ConfirmOutcome.CANCELLED
    assert (cancelled.status, cancelled.openid, cancelled.code) == (
        Status.CANCELLED,
        "oScanner",
        None,
    )
    assert store.get_attempt(SCENE) == cancelled  # the browser can still read why
    assert store.pending_scene("oScanner") is None
    # Readable until the QR would have expired, no longer: the TTL is the QR's.
    assert 0 < redis_client.ttl(f"login:attempt:{SCENE}") <= EXPIRE_SECONDS


@pytest.mark.parametrize(
    ("openid", "outcome"),
    [("oScanner", ConfirmOutcome.CANCELLED), ("oSomeoneElse", ConfirmOutcome.TAKEN)],
)
def test_cancel_only_by_the_scanner(store, attempt, openid, outcome):
    scanned(store)

    assert store.cancel(SCENE, openid)[0] is outcome
    assert store.pending_scene("oScanner") == (None if openid == "oScanner" else SCENE)


def test_cancel_when_waiting_is_unknown(store, attempt):
    assert store.cancel(SCENE, "oScanner") == (ConfirmOutcome.UNKNOWN, None)
    assert store.get_attempt(SCENE) == attempt


def test_cancel_when_confirmed_changes_nothing(store, attempt):
    scanned(store)
    _, confirmed = store.confirm(SCENE, "oScanner")

    assert store.cancel(SCENE, "oScanner") == (ConfirmOutcome.ALREADY_CONFIRMED, confirmed)
    assert store.redeem(confirmed.code, BROWSER) == ("oScanner", SCENE)


@pytest.mark.parametrize("transition", ["confirm", "mark_scanned", "cancel"])
def test_nothing_happens_after_cancel(store, attempt, redis_client, transition):
    scanned(store)
    _, cancelled = store.cancel(SCENE, "oScanner")

    assert getattr(store, transition)(SCENE, "oScanner") == (ConfirmOutcome.UNKNOWN, None)

    assert store.get_attempt(SCENE) == cancelled
    assert store.pending_scene("oScanner") is None
    assert redis_client.keys("login:code:*") == []
    assert redis_client.exists("login:signins:oScanner") == 0


@pytest.mark.parametrize("transition", ["confirm", "mark_scanned", "cancel"])
def test_scanned_attempt_ends_with_its_qr(store, attempt, clock, redis_client, transition):
    scanned(store)
    clock.advance(EXPIRE_SECONDS)

    assert store.get_attempt(SCENE) is None
    assert getattr(store, transition)(SCENE, "oScanner") == (ConfirmOutcome.UNKNOWN, None)
    assert redis_client.keys("login:code:*") == []


def test_scanned_attempt_is_alive_until_the_last_moment(store, attempt, clock):
    scanned(store)
    clock.advance(EXPIRE_SECONDS - 0.001)

    assert store.get_attempt(SCENE).status is Status.SCANNED
    assert store.confirm(SCENE, "oScanner")[0] is ConfirmOutcome.CONFIRMED


def test_live_attempt_of_the_browser_that_waits(store, attempt):
    assert store.live_attempt_of(BROWSER) == attempt
    assert store.live_attempt_of(OTHER_BROWSER) is None


def test_live_attempt_of_is_the_latest(store, attempt, clock):
    clock.advance(10)
    later = store.create_attempt(f"{SCENE}-2", BROWSER, EXPIRE_SECONDS)

    assert store.live_attempt_of(BROWSER) == later


@pytest.mark.parametrize("transition", ["mark_scanned", "confirm"])
def test_no_live_attempt_once_scanned(store, attempt, transition):
    getattr(store, transition)(SCENE, "oScanner")

    assert store.live_attempt_of(BROWSER) is None


def test_no_live_attempt_past_the_qr(store, attempt, clock):
    clock.advance(EXPIRE_SECONDS)

    assert store.live_attempt_of(BROWSER) is None


def test_end_signins_gives_back_the_session(store, attempt, redis_client):
    _, confirmed = store.confirm(SCENE, "oScanner")
    store.redeem(confirmed.code, BROWSER)
    assert store.bind_session(SCENE, "oScanner", "session-1") is True

    assert store.end_signins("oScanner") == [SignIn(SCENE, BROWSER, "session-1")]

    assert redis_client.exists(f"login:signin:{SCENE}", "login:signins:oScanner") == 0
    assert store.end_signins("oScanner") == []


def test_end_signins_revokes_an_unredeemed_code(store, attempt, redis_client):
    scanned(store)
    _, confirmed = store.confirm(SCENE, "oScanner")

    assert store.end_signins("oScanner") == [SignIn(SCENE, BROWSER, None)]

    with pytest.raises(RedeemError):
        store.redeem(confirmed.code, BROWSER)
    assert store.get_attempt(SCENE) is None
    assert redis_client.keys("login:code:*") == []
    assert redis_client.exists("login:signins:oScanner") == 0


def test_end_signins_ends_every_login_in_the_window(store, clock):
    store.create_attempt(SCENE, BROWSER, EXPIRE_SECONDS)
    _, first = store.confirm(SCENE, "oScanner")
    clock.advance(10)
    store.create_attempt(f"{SCENE}-2", OTHER_BROWSER, EXPIRE_SECONDS)
    _, second = store.confirm(f"{SCENE}-2", "oScanner")

    assert store.end_signins("oScanner") == [
        SignIn(f"{SCENE}-2", OTHER_BROWSER, None),
        SignIn(SCENE, BROWSER, None),
    ]

    for code, browser in ((first.code, BROWSER), (second.code, OTHER_BROWSER)):
        with pytest.raises(RedeemError):
            store.redeem(code, browser)


def test_end_signins_leaves_logins_older_than_the_window(store, clock):
    store.create_attempt(SCENE, BROWSER, EXPIRE_SECONDS)
    store.confirm(SCENE, "oScanner")
    clock.advance(7 * 86400 + 1)

    assert store.end_signins("oScanner") == []


def test_end_signins_without_a_login(store, attempt):
    assert store.end_signins("oScanner") == []

    store.confirm(SCENE, "oScanner")

    assert store.end_signins("oSomeoneElse") == []
    assert store.get_attempt(SCENE).status is Status.CONFIRMED


def test_a_session_is_not_bound_to_a_login_its_scanner_ended(store, attempt, redis_client):
    _, confirmed = store.confirm(SCENE, "oScanner")
    store.redeem(confirmed.code, BROWSER)
    store.end_signins("oScanner")

    assert store.bind_session(SCENE, "oScanner", "session-1") is False
    assert redis_client.exists(f"login:signin:{SCENE}") == 0


def test_forget_signin_leaves_nothing(store, attempt, redis_client):
    _, confirmed = store.confirm(SCENE, "oScanner")
    store.redeem(confirmed.code, BROWSER)
    store.bind_session(SCENE, "oScanner", "session-1")

    store.forget_signin("oScanner", SCENE)

    assert redis_client.keys("login:signin*") == []


def test_devices(users):
    assert users.knows_device("oScanner", BROWSER) is False

    users.add_device("oScanner", BROWSER)
    users.add_device("oScanner", BROWSER)

    assert users.knows_device("oScanner", BROWSER) is True
    assert users.knows_device("oScanner", OTHER_BROWSER) is False
    assert users.knows_device("oSomeoneElse", BROWSER) is False
