"""The cross-worker push on a real Redis: each LoginHub plays one worker process."""

import json
import secrets
import threading
import time

import pytest
import redis

from app.login.hub import FULL_SWEEP_EVERY, LoginHub, Waiter


@pytest.fixture
def make_hub(redis_url):
    """Hubs with their own Redis connections, as separate worker processes would have; on the
    test database unless given another Redis's URL; ``options`` as ``LoginHub`` takes them.

    The hubs of one test share a channel of their own: pub/sub channels span a Redis server's
    databases, and another test run on the same server publishes on ``login:attempts`` too.
    """
    hubs = []
    channel = f"test-hub-{secrets.token_hex(4)}:login:attempts"

    def make(url: str = redis_url, **options) -> LoginHub:
        options.setdefault("channel", channel)
        hub = LoginHub(redis.Redis.from_url(url, decode_responses=True), **options)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


def woken(waiter: Waiter, timeout: float) -> bool:
    """Whether the waiter is woken within ``timeout`` seconds; the wake is taken, as a socket
    takes it."""
    if not waiter.wake.wait(timeout):
        return False
    waiter.wake.clear()
    return True


def settle(hub: LoginHub, *waiters: Waiter) -> None:
    """Wait for the hub's subscription, and take the wake-up it gave the waiters registered
    before it (a publish before it could not reach them, so they must re-read); a waiter
    registered after it was not woken, and needs no wake-up: every publish reaches it."""
    assert hub.subscribed.wait(5)
    for waiter in waiters:
        waiter.wake.clear()  # the hub wakes every waiter before it reports itself subscribed


def test_publish_on_one_worker_wakes_the_waiter_on_another(make_hub):
    worker_a, worker_b = make_hub(), make_hub()
    with worker_a.waiting("scene-1") as waiter, worker_a.waiting("scene-2") as other:
        settle(worker_a, waiter, other)
        worker_b.publish("scene-1")
        assert woken(waiter, 2)
        assert not woken(other, 0.3)


def test_the_first_subscription_wakes_the_waiter_that_started_it(make_hub, monkeypatch):
    # The first waiter starts the listener, and must be registered before it: a listener
    # that subscribes (and wakes every waiter) at once must still wake this one. Here the
    # listener is made to subscribe before the waiter could register after it.
    hub = make_hub()
    start = hub._ensure_listener

    def start_and_subscribe() -> None:
        start()
        assert hub.subscribed.wait(5)

    monkeypatch.setattr(hub, "_ensure_listener", start_and_subscribe)
    with hub.waiting("scene-1") as waiter:
        assert waiter.wake.is_set()


def test_a_subscribed_hub_has_woken_its_waiters(make_hub, monkeypatch):
    # Whoever sees ``subscribed`` set has had the wake-up it brings, however slow the
    # wake-up: a waiter that takes it then is not woken again by a late one.
    hub = make_hub()
    wake_all = hub._wake_all

    def slow_wake_all() -> None:
        time.sleep(0.2)
        wake_all()

    monkeypatch.setattr(hub, "_wake_all", slow_wake_all)
    with hub.waiting("scene-1") as waiter:
        assert hub.subscribed.wait(5)
        assert waiter.wake.is_set()


def test_waiter_is_forgotten_when_it_leaves(make_hub):
    hub = make_hub()
    with hub.waiting("scene-1"):
        assert hub.waiting_count() == 1
    assert hub.waiting_count() == 0


def test_malformed_messages_are_ignored_and_the_listener_carries_on(make_hub, redis_client):
    hub = make_hub()
    with hub.waiting("scene-1") as waiter:
        settle(hub, waiter)
        for garbage in ("not json", "[1, 2]", '{"type": "other", "scene": "scene-1"}', "{}"):
            redis_client.publish(hub.announcement("scene-1")[0], garbage)
        assert not woken(waiter, 0.3)
        hub.publish("scene-1")
        assert woken(waiter, 2)


def test_killed_subscription_reconnects_and_wakes_every_waiter(redis_server, make_hub):
    # On a Redis of its own: killing every pub/sub client of the shared one would knock off
    # the other test runs and a developer's running app too.
    own_redis = redis_server()
    hub = make_hub(own_redis.url)
    with hub.waiting("scene-1") as waiter:
        settle(hub, waiter)
        with redis.Redis.from_url(own_redis.url) as admin:
            assert admin.client_kill_filter(_type="pubsub") == 1
        # Whatever was published while it was away is lost: every waiter is woken to re-read.
        assert woken(waiter, 5)
        assert hub.subscribed.wait(5)
        hub.publish("scene-1")
        assert woken(waiter, 2)


def test_a_waiter_wakes_on_the_event_it_brings(make_hub):
    # A socket brings the event its reader sets when the browser talks or leaves.
    hub, event = make_hub(), threading.Event()
    with hub.waiting("scene-1", wake=event) as waiter:
        settle(hub, waiter)
        hub.publish("scene-1")
        assert event.wait(2)


def test_a_third_waiter_sends_the_oldest_away(make_hub):
    hub = make_hub()
    with hub.waiting("scene-1") as oldest, hub.waiting("scene-1") as older:
        settle(hub, oldest, older)
        with hub.waiting("scene-1") as newest:
            assert woken(oldest, 2) and oldest.replaced
            assert not older.replaced and not newest.replaced
            assert not woken(older, 0.3)


#: The sweep interval of the sweep tests, in seconds.
SWEEP_SECONDS = 0.05


@pytest.fixture
def make_sweeping_hub(make_hub):
    """Hubs that sweep every ``SWEEP_SECONDS``, reading statuses from ``statuses`` (scene ->
    status; "waiting" when unnamed), on a channel nobody publishes on."""

    def make(statuses: dict[str, str]) -> LoginHub:
        return make_hub(
            statuses=lambda scenes: [statuses.get(scene, "waiting") for scene in scenes],
            sweep_seconds=SWEEP_SECONDS,
            channel="silent",
        )

    return make


def test_a_change_whose_push_was_lost_is_found_in_the_stream(make_sweeping_hub, redis_client):
    # Every status reads "waiting": only the stream can tell this waiter its attempt changed.
    hub = make_sweeping_hub({})
    with hub.waiting("scene-1") as waiter, hub.waiting("scene-2") as other:
        settle(hub, waiter, other)
        time.sleep(3 * SWEEP_SECONDS)  # past the first sweep, which reads every status
        waiter.wake.clear()
        other.wake.clear()

        _, _, stream = hub.announcement("scene-1")
        redis_client.xadd(stream, {"scene": "scene-1"})  # its PUBLISH lost

        assert woken(waiter, 10 * SWEEP_SECONDS)
        assert not woken(other, 5 * SWEEP_SECONDS)


def test_a_change_that_announced_nothing_is_found_by_a_full_sweep(make_sweeping_hub, redis_client):
    statuses = {}
    hub = make_sweeping_hub(statuses)
    with hub.waiting("scene-1") as waiter:
        settle(hub, waiter)
        time.sleep(3 * SWEEP_SECONDS)
        waiter.wake.clear()

        statuses["scene-1"] = "confirmed"  # written by hand: no push, nothing in the stream

        assert woken(waiter, (FULL_SWEEP_EVERY + 5) * SWEEP_SECONDS)


def test_a_sweep_that_lost_its_place_in_the_stream_reads_every_status(
    make_sweeping_hub, redis_client
):
    statuses = {}
    hub = make_sweeping_hub(statuses)
    _, _, stream = hub.announcement("scene-1")
    redis_client.xadd(stream, {"scene": "elsewhere"})
    with hub.waiting("scene-1") as waiter:
        settle(hub, waiter)
        time.sleep(3 * SWEEP_SECONDS)  # the sweep now holds its place in the stream
        waiter.wake.clear()

        # A burst trims the stream past that place; this scene's change is among the lost.
        statuses["scene-1"] = "confirmed"
        redis_client.delete(stream)
        redis_client.xadd(stream, {"scene": "another"})

        assert woken(waiter, 10 * SWEEP_SECONDS)


def test_a_push_hands_the_waiter_the_state_it_carries(make_hub, redis_client):
    hub = make_hub()
    with hub.waiting("scene-1") as waiter:
        settle(hub, waiter)
        channel, message, _ = hub.announcement("scene-1")
        state = {"status": "confirmed", "code": "c0de", "confirmed_at": "1714036504.5"}
        redis_client.publish(channel, json.dumps({**json.loads(message), **state}))
        assert woken(waiter, 2)
        assert waiter.pushed == state

        # A wake without state (a sweep, a "0" that ended the login) must make it read.
        hub.publish("scene-1")
        assert woken(waiter, 2)
        assert waiter.pushed is None
