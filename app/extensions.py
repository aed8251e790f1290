"""Extensions created unbound and bound in ``create_app``, and accessors for per-app state.

Per-app objects live in ``app.extensions``: ``"redis"`` (the client every part shares) and
``"wechat_login"`` (the ``LoginService``).
"""

import logging

import redis
from flask import Flask, current_app
from flask_sock import Sock

from .login.service import LoginService

log = logging.getLogger(__name__)

sock = Sock()


def init_redis(app: Flask) -> redis.Redis:
    """Connect to ``REDIS_URL``, or make an in-process stand-in when it is unset.

    Returns:
        A client with ``decode_responses=True``, also stored as ``app.extensions["redis"]``.
    """
    url = app.config["REDIS_URL"]
    if url:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=15,
        )
    else:
        import fakeredis  # only needed for the stand-in

        log.warning(
            "REDIS_URL is unset: using an in-process Redis stand-in (fakeredis). "
            "State is lost on restart; run a single process only."
        )
        client = fakeredis.FakeRedis(decode_responses=True)
    app.extensions["redis"] = client
    return client


def login_service() -> LoginService:
    """The current app's ``LoginService``."""
    return current_app.extensions["wechat_login"]
