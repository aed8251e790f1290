"""What the emulated WeChat remembers, in the app's Redis so every worker sees the same:
issued access_tokens, live QR tickets, followers, web-authorization codes, and injected
faults."""

import base64
import json
import secrets
import time
from dataclasses import dataclass

import redis
from flask import current_app

#: Life of an emulated access_token, in seconds (WeChat's).
TOKEN_SECONDS = 7200
#: Life of a web-authorization code, in seconds (WeChat's: 5 minutes).
OAUTH_CODE_SECONDS = 300
#: Live QR tickets the phone page lists, newest first; the record of them keeps no more.
MAX_LISTED_TICKETS = 50


@dataclass(frozen=True)
class Ticket:
    """A live emulated QR code: its ticket, ``scene_str``, expiry (epoch seconds), and the
    code that ends its ``url`` (``/q/<code>``: 22 URL-safe characters, like WeChat's)."""

    ticket: str
    scene_str: str
    expires_at: float
    code: str


class EmulatorState:
    """Reads and writes ``emulator:*`` keys.

    Args:
        redis_client: a client with ``decode_responses=True``.
    """

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client

    def issue_token(self) -> str:
        """Issue an access_token valid for ``TOKEN_SECONDS``."""
        token = secrets.token_urlsafe(96)  # real tokens are long: clients must keep 512 chars
        self._redis.set(f"emulator:token:{token}", "1", ex=TOKEN_SECONDS)
        return token

    def token_valid(self, token: str) -> bool:
        """Tell whether ``token`` was issued and has not expired."""
        return bool(token) and bool(self._redis.exists(f"emulator:token:{token}"))

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (as a refresh elsewhere would): for trying 40001."""
        for key in self._redis.scan_iter("emulator:token:*"):
            self._redis.delete(key)

    def create_ticket(self, scene_str: str, expire_seconds: int) -> Ticket:
        """Store a new QR ticket. Tickets look like WeChat's: base64 with ``+/=``; so does the
        code of its url, which ``ticket_by_code`` resolves while the ticket lives.

        The list of tickets keeps the ``MAX_LISTED_TICKETS`` that expire last: a load test
        creates them by the thousand, and nobody lists them. Off the list a ticket still scans
        until it expires (its own key carries its life).
        """
        ticket = "gQ" + base64.b64encode(secrets.token_bytes(45)).decode()
        code = secrets.token_urlsafe(16)
        expires_at = time.time() + expire_seconds
        record = json.dumps({"scene_str": scene_str, "expires_at": expires_at, "code": code})
        with self._redis.pipeline() as pipe:
            pipe.set(f"emulator:ticket:{ticket}", record, ex=expire_seconds)
            pipe.set(f"emulator:qrcode:{code}", ticket, ex=expire_seconds)
            pipe.zadd("emulator:tickets", {ticket: expires_at})
            pipe.zremrangebyrank("emulator:tickets", 0, -MAX_LISTED_TICKETS - 1)
            pipe.execute()
        return Ticket(ticket, scene_str, expires_at, code)

    def get_ticket(self, ticket: str) -> Ticket | None:
        """A live ticket, or None when unknown or expired."""
        raw = self._redis.get(f"emulator:ticket:{ticket}")
        if raw is None:
            return None
        record = json.loads(raw)
        return Ticket(ticket, record["scene_str"], record["expires_at"], record["code"])

    def ticket_by_code(self, code: str) -> Ticket | None:
        """The live ticket whose url ends in ``code``, or None when unknown or expired."""
        ticket = self._redis.get(f"emulator:qrcode:{code}")
        return self.get_ticket(ticket) if ticket is not None else None

    def live_tickets(self) -> list[Ticket]:
        """Every live ticket, newest first."""
        self._redis.zremrangebyscore("emulator:tickets", "-inf", time.time())
        tickets = (
            self.get_ticket(t)
            for t in self._redis.zrevrange("emulator:tickets", 0, MAX_LISTED_TICKETS - 1)
        )
        return [ticket for ticket in tickets if ticket is not None]

    def follow(self, openid: str, scene_str: str) -> None:
        """Record ``openid`` as a follower (scanning a QR as a new follower makes one)."""
        self._redis.hset(
            f"emulator:follower:{openid}",
            mapping={"subscribe_time": int(time.time()), "qr_scene_str": scene_str},
        )

    def follower(self, openid: str) -> dict[str, str] | None:
        """A follower's record, or None for someone who does not follow."""
        return self._redis.hgetall(f"emulator:follower:{openid}") or None

    def issue_oauth_code(self, openid: str, snapshot: bool = False, kind: str = "oauth") -> str:
        """Issue a web-authorization code for ``openid``, good for one exchange; ``snapshot``:
        the page was opened as a Moments snapshot page (``is_snapshotuser``); ``kind``:
        ``oauth`` (the official account's) or ``website`` (the website application's)."""
        code = secrets.token_hex(16)  # WeChat's codes are 32 characters
        key = f"emulator:{kind}_code:{code}"
        with self._redis.pipeline() as pipe:
            pipe.hset(key, mapping={"openid": openid, "snapshot": int(snapshot)})
            pipe.expire(key, OAUTH_CODE_SECONDS)
            pipe.execute()
        return code

    def spend_oauth_code(self, code: str, kind: str = "oauth") -> tuple[dict[str, str] | None, int]:
        """Exchange a web-authorization code (of ``kind``, see ``issue_oauth_code``).

        Returns:
            ``(record, exchanges)``: the code's ``{"openid", "snapshot": "0"|"1"}`` (None for
            a code never issued, or expired) and how many exchanges it has seen, this one
            included: above 1, it was used already.
        """
        key = f"emulator:{kind}_code:{code}"
        # One transaction: of two exchanges at once, exactly one counts first.
        with self._redis.pipeline() as pipe:
            pipe.hgetall(key)
            pipe.hincrby(key, "exchanges", 1)
            record, exchanges = pipe.execute()
        if not record:
            self._redis.delete(key)  # HINCRBY made a stray hash without a TTL
            return None, 0
        return record, exchanges

    def issue_sns_token(self, openid: str) -> str:
        """Issue a user access_token (``sns/userinfo``'s) for the website ``openid``."""
        token = secrets.token_urlsafe(64)
        self._redis.set(f"emulator:sns_token:{token}", openid, ex=TOKEN_SECONDS)
        return token

    def sns_token_openid(self, token: str) -> str | None:
        """The website openid a user access_token was issued for, or None."""
        return self._redis.get(f"emulator:sns_token:{token}") if token else None

    def inject_fault(self, api: str, errcode: int, count: int = 1) -> None:
        """Make the next ``count`` calls of ``api`` (``qrcode/create``...) fail with ``errcode``."""
        self._redis.rpush(f"emulator:fault:{api}", *([errcode] * count))

    def take_fault(self, api: str) -> int | None:
        """The errcode the next call of ``api`` must fail with, if one was injected."""
        errcode = self._redis.lpop(f"emulator:fault:{api}")
        return int(errcode) if errcode is not None else None


def emulator_state() -> EmulatorState:
    """The emulator state of the current app."""
    return EmulatorState(current_app.extensions["redis"])
