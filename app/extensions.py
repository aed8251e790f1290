"""Extensions created unbound and bound in ``create_app``, and accessors for per-app state.

Per-app objects live in ``app.extensions``: ``"redis"`` (the text client every part shares),
``"wechat_login"`` (the ``LoginService``), ``"wechat_crypto"`` (a ``WeChatCrypto``, or
None in plaintext mode), ``"wechat_signatures"`` (the ``SignatureLedger`` of used callback
signatures), ``"wechat_forwarder"`` (a ``Forwarder``, or None) and ``"limiter"``
(Flask-Limiter, one per app).
"""

import ipaddress
import logging

import redis
from flask import Flask, current_app, request
from flask_sock import Sock
from redis.sentinel import Sentinel

from .login.service import LoginService

log = logging.getLogger(__name__)

#: Redis connections one process opens at most per client, and how long a caller waits for one
#: (seconds) before the call fails.
POOL_SIZE = 64
POOL_WAIT_SECONDS = 5

sock = Sock()


def client_address() -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address (from a trusted proxy's header only when ``TRUSTED_PROXIES``).

    Returns:
        The address, or None when there is none or it is not an IP address: ``ProxyFix``
        copies whatever the trusted hop's ``X-Forwarded-For`` holds, unchecked.
    """
    try:
        return ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return None


def client_network() -> str:
    """Who a per-client limit counts: the client's IPv4 address, or the /64 network of its
    IPv6 address (one subscriber's usual allotment: its 2**64 addresses cost nothing to
    spread over), or ``"unknown"``."""
    address = client_address()
    if address is None:
        return "unknown"
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.ip_network((address, 64), strict=False))


def client_ip() -> str:
    """The client's address as text (``"unknown"`` when ``client_address`` has none), for
    rate-limit keys and the scanner's message."""
    address = client_address()
    return str(address) if address is not None else "unknown"


def init_redis(app: Flask) -> tuple[redis.Redis, redis.Redis]:
    """Connect to Redis: through Sentinel (``REDIS_SENTINELS``), at ``REDIS_URL``, or, with
    neither, to an in-process stand-in.

    Returns:
        ``(text, raw)``: a client with ``decode_responses=True`` (also stored as
        ``app.extensions["redis"]``), and one returning bytes, for the session store. Through
        Sentinel both follow the current master across failovers.
    """
    options = {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 15}
    sentinels = app.config["REDIS_SENTINELS"]
    url = app.config["REDIS_URL"]
    if sentinels:
        sentinel = Sentinel(sentinels, socket_connect_timeout=2, socket_timeout=2)
        master, db = app.config["REDIS_SENTINEL_MASTER"], app.config["REDIS_SENTINEL_DB"]
        text = sentinel.master_for(master, db=db, decode_responses=True, **options)
        raw = sentinel.master_for(master, db=db, **options)
    elif url:
        # A bounded pool per client: thousands of greenlets wait their turn for a connection
        # instead of each opening one (Redis refuses clients past its maxclients, 10,000).
        def bounded(**decoding: bool) -> redis.Redis:
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=POOL_SIZE, timeout=POOL_WAIT_SECONDS, **options, **decoding
            )
            return redis.Redis(connection_pool=pool)

        text, raw = bounded(decode_responses=True), bounded()
    else:
        import fakeredis  # only needed for the stand-in

        log.warning(
            "REDIS_URL is unset: using an in-process Redis stand-in (fakeredis). "
            "State is lost on restart; run a single process only."
        )
        server = fakeredis.FakeServer()
        text = fakeredis.FakeRedis(server=server, decode_responses=True)
        raw = fakeredis.FakeRedis(server=server)
    app.extensions["redis"] = text
    return text, raw


def key_prefix(app: Flask) -> str:
    """What every Redis key and the pub/sub channel of this deployment begin with.

    ``REDIS_KEY_PREFIX`` when set (even empty); else ``wxlogin:<db>:``, after the database in
    use. Keys in different databases never meet, but pub/sub channels ignore the database:
    without the prefix, staging in database 1 and production in database 0 of one server
    would wake each other's sockets. Two deployments in one database need prefixes of
    their own.
    """
    if app.config["REDIS_KEY_PREFIX"] is not None:
        return app.config["REDIS_KEY_PREFIX"]
    if app.config["REDIS_SENTINELS"]:
        db = app.config["REDIS_SENTINEL_DB"]
    elif app.config["REDIS_URL"]:
        db = redis.connection.parse_url(app.config["REDIS_URL"]).get("db", 0)
    else:
        db = 0
    return f"wxlogin:{db}:"


def limiter_storage_uri(app: Flask) -> str:
    """Where Flask-Limiter keeps its counters: the same Redis as everything else."""
    sentinels = app.config["REDIS_SENTINELS"]
    if sentinels:
        hosts = ",".join(f"{host}:{port}" for host, port in sentinels)
        return f"redis+sentinel://{hosts}/{app.config['REDIS_SENTINEL_MASTER']}"
    return app.config["REDIS_URL"] or "memory://"


def login_service() -> LoginService:
    """The current app's ``LoginService``."""
    return current_app.extensions["wechat_login"]
