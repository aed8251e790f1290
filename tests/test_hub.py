"""The cross-worker push on a real Redis: each LoginHub plays one worker process."""

import queue

import pytest
import redis

from app.login.hub import LoginHub


@pytest.fixture
def make_hub(redis_url):
    """Hubs with their own Redis connections, as separate worker processes would have; on the
    test database unless given another Redis's URL."""
    hubs = []

    def make(url: str = redis_url) -> LoginHub:
        hub = LoginHub(redis.Redis.from_url(url, decode_responses=True))
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


def settle(hub: LoginHub, *waiters: queue.SimpleQueue) -> None:
    """Wait for the hub's subscription, and take the wake-up it gives every waiter (a publish
    before it could not reach them, so they must re-read)."""
    assert hub.subscribed.wait(5)
    for wakeups in waiters:
        assert wakeups.get(timeout=2)


def test_publish_on_one_worker_wakes_the_waiter_on_another(make_hub):
    worker_a, worker_b = make_hub(), make_hub()
    with worker_a.waiting("scene-1") as wakeups, worker_a.waiting("scene-2") as other:
        settle(worker_a, wakeups, other)
        worker_b.publish("scene-1")
        assert wakeups.get(timeout=2) == "scene-1"
        with pytest.raises(queue.Empty):
            other.get(timeout=0.3)


def test_waiter_is_forgotten_when_it_leaves(make_hub):
    hub = make_hub()
    with hub.waiting("scene-1"):
        assert hub.waiting_count() == 1
    assert hub.waiting_count() == 0


def test_malformed_messages_are_ignored_and_the_listener_carries_on(make_hub, redis_client):
    hub = make_hub()
    with hub.waiting("scene-1") as wakeups:
        settle(hub, wakeups)
        for garbage in ("not json", "[1, 2]", '{"type": "other", "scene": "scene-1"}', "{}"):
            redis_client.publish("login:attempts", garbage)
        hub.publish("scene-1")
        assert wakeups.get(timeout=2) == "scene-1"
        with pytest.raises(queue.Empty):
            wakeups.get(timeout=0.3)


def test_killed_subscription_reconnects_and_wakes_every_waiter(redis_server, make_hub):
    # On a Redis of its own: killing every pub/sub client of the shared one would knock off
    # the other test runs and a developer's running app too.
    own_redis = redis_server()
    hub = make_hub(own_redis.url)
    with hub.waiting("scene-1") as wakeups:
        settle(hub, wakeups)
        with redis.Redis.from_url(own_redis.url) as admin:
            assert admin.client_kill_filter(_type="pubsub") == 1
        # Whatever was published while it was away is lost: every waiter is woken to re-read.
        assert wakeups.get(timeout=5) == "scene-1"
        assert hub.subscribed.wait(5)
        hub.publish("scene-1")
        assert wakeups.get(timeout=2) == "scene-1"
