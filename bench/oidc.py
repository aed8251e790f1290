"""The OpenID provider's hot path: authorization-code exchange and userinfo, per second.

What an app signing people in costs us once the person is back from the scan: its server posts
the code to ``/oidc/token`` (client authentication, the code spent once, tokens stored, the
session recorded, an ID token signed), then reads ``/oidc/userinfo`` with the access token.

The codes are issued for a real signed-in session (the one ``qrcodes.sign_in`` made through
every public step), written with the app's own stores as its authorization endpoint writes them,
rather than by driving a browser through ``/oidc/authorize`` per code; the client is registered
as ``flask oidc add-client`` registers it.
"""

import base64
import functools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import redis

from app.oidc.clients import ClientStore
from app.oidc.server import session_sid
from app.oidc.tokens import AuthorizationCode, TokenStore

from .bursts import BurstResult, burst
from .httpclient import HttpConnection, Response
from .server import SECRET_KEY
from .stats import CpuMeter

#: Where the registered client says its answers go (never visited: codes are seeded).
REDIRECT_URI = "http://127.0.0.1/bench/callback"
#: What the codes grant: the ID token and the WeChat claims, as the README's examples ask.
SCOPE = "openid wechat"
#: Flask's session cookie over plain http (``SESSION_COOKIE_NAME``; ``__Host-`` over https).
SESSION_COOKIE = "session"


@dataclass(frozen=True)
class OidcResult:
    """The provider's hot path.

    Attributes:
        exchanges: ``POST /oidc/token`` with a fresh code each.
        userinfo: ``GET /oidc/userinfo`` with the access tokens the exchanges gave.
    """

    exchanges: BurstResult
    userinfo: BurstResult


async def measure_oidc(
    port: int,
    redis_client: redis.Redis,
    prefix: str,
    cookie: str,
    count: int,
    concurrency: int,
    meter: CpuMeter,
) -> OidcResult:
    """Exchange ``count`` codes, then read userinfo with each token, ``concurrency`` at a time.

    Args:
        port: the server's port.
        redis_client: the server's Redis database (``decode_responses=True``).
        prefix: the server's ``REDIS_KEY_PREFIX`` (``server.key_prefix``).
        cookie: the ``Cookie`` header of a signed-in browser (``qrcodes.sign_in``).
        count: codes to exchange (and userinfo reads).
        concurrency: requests in flight.
        meter: measures the CPU used.

    Raises:
        RuntimeError: the browser is not signed in, or no code could be exchanged.
    """
    user_id, session_id = await _signed_in(port, cookie)
    client, client_secret = ClientStore(redis_client, prefix=prefix).add(
        name="bench", redirect_uris=[REDIRECT_URI], trusted=True
    )
    basic = base64.b64encode(f"{client.client_id}:{client_secret}".encode()).decode()
    codes = _seed_codes(redis_client, prefix, client.client_id, user_id, session_id, count)
    tokens: list[str] = []
    exchanges = await burst(
        port,
        "code exchanges (POST /oidc/token)",
        [functools.partial(_exchange, code=code, basic=basic) for code in codes],
        _collect_token(tokens),
        concurrency,
        meter,
    )
    if not tokens:
        raise RuntimeError("oidc: no code was exchanged for a token")
    userinfo = await burst(
        port,
        "userinfo (GET /oidc/userinfo)",
        [functools.partial(_userinfo, token=token) for token in tokens],
        lambda response: response.status == 200 and b'"sub"' in response.body,
        concurrency,
        meter,
    )
    return OidcResult(exchanges=exchanges, userinfo=userinfo)


async def _signed_in(port: int, cookie: str) -> tuple[str, str]:
    """The person signed in with ``cookie`` and the id of its session.

    Raises:
        RuntimeError: ``GET /api/me`` does not know it.
    """
    connection = HttpConnection(port)
    try:
        response = await connection.request("GET", "/api/me", headers={"Cookie": cookie})
    finally:
        await connection.close()
    session = SimpleCookie(cookie).get(SESSION_COOKIE)
    if response.status != 200 or session is None:
        raise RuntimeError(f"oidc: the browser is not signed in ({response.status})")
    return json.loads(response.body)["id"], session.value


def _seed_codes(
    redis_client: redis.Redis,
    prefix: str,
    client_id: str,
    user_id: str,
    session_id: str,
    count: int,
) -> list[str]:
    """Store ``count`` authorization codes for the session, as ``/oidc/authorize`` stores
    the code it sends back (60 s each: the burst must start at once)."""
    tokens = TokenStore(redis_client, prefix=prefix)
    sid = session_sid(SECRET_KEY, session_id)
    codes = [secrets.token_urlsafe(32) for _ in range(count)]
    for code in codes:
        tokens.save_code(
            AuthorizationCode(
                code=code,
                client_id=client_id,
                redirect_uri=REDIRECT_URI,
                scope=SCOPE,
                user_id=user_id,
                sid=sid,
                auth_time=int(time.time()),
            )
        )
    return codes


async def _exchange(connection: HttpConnection, *, code: str, basic: str) -> Response:
    """The client's server exchanging ``code``, authenticated with HTTP Basic."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    return await connection.request(
        "POST",
        "/oidc/token",
        headers={
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=urlencode(form).encode(),
    )


async def _userinfo(connection: HttpConnection, *, token: str) -> Response:
    """The client's server reading the person's claims with an access token."""
    return await connection.request(
        "GET", "/oidc/userinfo", headers={"Authorization": f"Bearer {token}"}
    )


def _collect_token(tokens: list[str]) -> Callable[[Response], bool]:
    """A check of token answers that keeps each access token given in ``tokens``."""

    def check(response: Response) -> bool:
        if response.status != 200:
            return False
        answer = json.loads(response.body)
        if "access_token" not in answer or "id_token" not in answer:
            return False
        tokens.append(answer["access_token"])
        return True

    return check
