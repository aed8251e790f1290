"""A Redis server shared with others: keys and the pub/sub channel are named after the
deployment (``REDIS_KEY_PREFIX``, by default after the database), so two deployments on one
server never meet."""

import pytest
import redis

from app import create_app
from app.login.hub import Waiter
from config import TestingConfig
from tests.conftest import TEST_REDIS_URL, page_client, say, sign_in

#: A second database on the test server, for a second deployment.
OTHER_DB_URL = TEST_REDIS_URL.rsplit("/", 1)[0] + "/14"
#: Keys that are not the deployment's: per AppID on purpose (one access_token per account),
#: and the emulator's, which stands in for WeChat itself.
NOT_THE_DEPLOYMENTS = (
    "wechat:access_token:",
    "wechat:access_token_lock:",
    "wechat:cooldown:",
    "emulator:",
)


def deployment(redis_url: str, **settings):
    """An app on ``redis_url`` with the default prefix unless ``settings`` name one."""
    return create_app(TestingConfig, {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": None, **settings})


@pytest.mark.parametrize(
    ("settings", "prefix"),
    [
        ({"REDIS_URL": "redis://127.0.0.1:6379/3"}, "wxlogin:3:"),
        ({"REDIS_URL": "redis://127.0.0.1:6379"}, "wxlogin:0:"),
        (
            {"REDIS_URL": "", "REDIS_SENTINELS": [("127.0.0.1", 1)], "REDIS_SENTINEL_DB": 5},
            "wxlogin:5:",
        ),
        ({"REDIS_URL": ""}, "wxlogin:0:"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/3", "REDIS_KEY_PREFIX": "staging:"}, "staging:"),
    ],
    ids=["db-3", "no-db", "sentinel-db-5", "in-process", "configured"],
)
def test_the_prefix_is_named_after_the_database_unless_configured(settings, prefix):
    app = create_app(TestingConfig, {"REDIS_KEY_PREFIX": None, **settings})

    assert app.config["REDIS_KEY_PREFIX"] == prefix


@pytest.fixture
def two_deployments(redis_url):
    """Production and staging on one Redis server, in two databases, with default prefixes."""
    redis.Redis.from_url(OTHER_DB_URL).flushdb()
    # No periodic re-read: only a publish can wake a waiter here.
    quiet = {"LOGIN_RECHECK_SECONDS": 60}
    production, staging = deployment(redis_url, **quiet), deployment(OTHER_DB_URL, **quiet)
    yield production, staging
    for app in (production, staging):
        app.extensions["wechat_login"].close()


def woken(waiter: Waiter, seconds: float) -> bool:
    if not waiter.wake.wait(seconds):
        return False
    waiter.wake.clear()
    return True


def test_deployments_in_two_databases_do_not_wake_each_other(two_deployments):
    production, staging = (app.extensions["wechat_login"].hub for app in two_deployments)
    scene = "1714036504000-5f1d3c9a8b7e6d5c4b3a2910"
    with staging.waiting(scene) as waiter:
        assert staging.subscribed.wait(5)
        while woken(waiter, 0.2):  # the wake-up every waiter gets once subscribed
            pass

        production.publish(scene)
        crossed = woken(waiter, 1.0)
        staging.publish(scene)  # the same publish in its own deployment does wake it
        own = woken(waiter, 5.0)

    assert not crossed
    assert own


def test_every_key_a_deployment_writes_carries_its_prefix(redis_url, redis_client):
    app = deployment(redis_url, REDIS_KEY_PREFIX="siteA:", LOGIN_CONFIRM="new_device")
    try:
        client = page_client(app)
        sign_in(client, redis_client)
        say(client, "0")
        sign_in(client, redis_client)
        assert client.post("/api/logout").status_code == 200
        keys = list(redis_client.scan_iter("*"))
    finally:
        app.extensions["wechat_login"].close()

    assert any(key.startswith("siteA:user:") for key in keys)
    assert any(key.startswith("siteA:session:") for key in keys)
    # Flask-Limiter's storage puts its own name first.
    own = ("siteA:", "LIMITS:LIMITER/siteA:ratelimit/")
    assert any(key.startswith(own[1]) for key in keys)
    stray = [key for key in keys if not key.startswith(own + NOT_THE_DEPLOYMENTS)]
    assert stray == []
