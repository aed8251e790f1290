"""Which clients got tokens in which OP session, so that ending the session can tell them.

OpenID Connect Back-Channel Logout 1.0, section 2.3 ("Remembering Logged-In RPs"): the OP keeps,
per session (``sid``), the RPs it issued tokens to, so that when the session ends each of them is
sent a logout token. We also keep the ids of the tokens issued in it, so that they can be
revoked at the same moment.
https://openid.net/specs/openid-connect-backchannel-1_0.html

Keys (each after ``REDIS_KEY_PREFIX``):

- ``oidc:session:<sid>``: hash ``{sub}``; ``oidc:session:<sid>:clients`` and
  ``oidc:session:<sid>:tokens``: sets of client ids and token ids. They live until the session's
  expiry plus ``RECORD_GRACE_SECONDS``, so an expiry noticed late still finds them.
- ``oidc:sessions:expiry``: sorted set of sids by their expiry (epoch seconds), read by
  ``expired()``; a sid leaves it when it is ended.
- ``oidc:session:<sid>:ended``: a tombstone, so that no token is recorded (and so kept alive)
  in a session that has already ended.

Each of ``record`` and ``end`` is one Lua script, so Redis runs it alone: a record racing an end
either lands before it (and is taken by it) or is refused after it, never lost in between.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

#: How long the record of a session outlives its expiry, in seconds: time for ``expired()`` to
#: notice it (and its clients to be told) even after the sweep was down for a while.
RECORD_GRACE_SECONDS = 86400

#: How long an ended sid refuses new records beyond its expiry, in seconds (from the end, for a
#: sid never recorded). Covers what can still arrive for it: a code exchanged (codes live 60 s)
#: or a refresh sent just before the end.
ENDED_GRACE_SECONDS = 3600


class SessionEndedError(Exception):
    """Tokens were to be recorded in a session that has already ended: do not hand them out.

    Attributes:
        sid: the session.
    """

    def __init__(self, sid: str) -> None:
        super().__init__(f"session {sid!r} has ended")
        self.sid = sid


@dataclass(frozen=True)
class EndedSession:
    """Everything recorded for a session, taken by the one ``end`` that won.

    Attributes:
        sid: the session id, as sent in the ``sid`` claim.
        sub: the user, as sent in the ``sub`` claim.
        client_ids: the clients that got tokens in it, sorted.
        token_ids: the ids of the tokens issued in it, sorted: revoke them all.
    """

    sid: str
    sub: str
    client_ids: tuple[str, ...]
    token_ids: tuple[str, ...]


#: KEYS: session, clients, tokens, ended, expiry. ARGV: sid, sub, client_id, expires_at, now,
#: grace, token ids... Returns "ok", "ended" (refused) or "other_sub" (refused).
_RECORD = """
if redis.call('exists', KEYS[4]) == 1 then return 'ended' end
local sub = redis.call('hget', KEYS[1], 'sub')
if sub and sub ~= ARGV[2] then return 'other_sub' end
-- Several records of one session (a second client, a refresh) keep the latest expiry named.
local expires_at = tonumber(ARGV[4])
local known = redis.call('zscore', KEYS[5], ARGV[1])
if known and tonumber(known) > expires_at then expires_at = tonumber(known) end
local ttl = math.max(math.ceil(expires_at - tonumber(ARGV[5])), 0) + tonumber(ARGV[6])
redis.call('hset', KEYS[1], 'sub', ARGV[2])
redis.call('sadd', KEYS[2], ARGV[3])
if #ARGV > 6 then redis.call('sadd', KEYS[3], unpack(ARGV, 7)) end
redis.call('zadd', KEYS[5], expires_at, ARGV[1])
for i = 1, 3 do redis.call('expire', KEYS[i], ttl) end
return 'ok'
"""

#: KEYS: session, clients, tokens, ended, expiry. ARGV: sid, now, ended_grace. Returns
#: {sub, client_ids, token_ids}, or nil when nothing is recorded (never, or already ended).
_END = """
local sub = redis.call('hget', KEYS[1], 'sub')
local clients = redis.call('smembers', KEYS[2])
local tokens = redis.call('smembers', KEYS[3])
local expires_at = tonumber(redis.call('zscore', KEYS[5], ARGV[1]) or ARGV[2])
redis.call('del', KEYS[1], KEYS[2], KEYS[3])
redis.call('zrem', KEYS[5], ARGV[1])
local ttl = math.max(math.ceil(expires_at - tonumber(ARGV[2])), 0) + tonumber(ARGV[3])
-- An end of an ended sid keeps the tombstone's own, already long enough, life.
redis.call('set', KEYS[4], '1', 'EX', ttl, 'NX')
if not sub then return nil end
return {sub, clients, tokens}
"""


class SessionRegistry:
    """Which clients got tokens in which OP session (sid), so ending the session can tell them.

    Args:
        redis_client: a client with ``decode_responses=True``.
        prefix: put before every key (``REDIS_KEY_PREFIX``).
        clock: returns the time in epoch seconds (tests inject their own).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._clock = clock
        self._record = redis_client.register_script(_RECORD)
        self._end = redis_client.register_script(_END)

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _session_keys(self, sid: str) -> list[str]:
        """The keys both scripts take, in their order: session, clients, tokens, ended,
        expiry."""
        session = self._key(f"oidc:session:{sid}")
        return [
            session,
            f"{session}:clients",
            f"{session}:tokens",
            f"{session}:ended",
            self._key("oidc:sessions:expiry"),
        ]

    def record(
        self, sid: str, *, sub: str, client_id: str, token_ids: list[str], expires_at: float
    ) -> None:
        """Remember that ``client_id`` got tokens in session ``sid``; call it before handing
        the tokens out.

        Calls for the same session add up: every client and token id is kept, and the latest
        of the expiries given is the session's.

        Args:
            sid: the OP session id (the ``sid`` claim).
            sub: the user signed in to it (the ``sub`` claim); the same on every call for a sid.
            client_id: the client the tokens went to.
            token_ids: ids of the tokens issued (access, refresh), to be revoked when the
                session ends; may be empty.
            expires_at: when the session ends unless ended earlier, epoch seconds.

        Raises:
            SessionEndedError: the session has already ended: the tokens must not be issued
                (or be revoked at once), since nothing would ever end them.
            ValueError: ``sid`` was recorded for another ``sub``.
            redis.RedisError: Redis could not be reached.
        """
        outcome = self._record(
            keys=self._session_keys(sid),
            args=[
                sid,
                sub,
                client_id,
                repr(float(expires_at)),
                repr(float(self._clock())),
                RECORD_GRACE_SECONDS,
                *token_ids,
            ],
        )
        if outcome == "ended":
            raise SessionEndedError(sid)
        if outcome == "other_sub":
            raise ValueError(f"session {sid!r} belongs to another sub")

    def end(self, sid: str) -> EndedSession | None:
        """Take everything recorded for ``sid``, atomically: of concurrent callers only one
        gets it; from then on the sid refuses new records.

        Args:
            sid: the session that ended (signed out, "0" in WeChat, RP-initiated, expired).

        Returns:
            The ``EndedSession``: revoke its tokens and tell its clients. None if nothing was
            recorded for it, or another caller ended it first.

        Raises:
            redis.RedisError: Redis could not be reached.
        """
        taken = self._end(
            keys=self._session_keys(sid),
            args=[sid, repr(float(self._clock())), ENDED_GRACE_SECONDS],
        )
        if taken is None:
            return None
        sub, client_ids, token_ids = taken
        return EndedSession(sid, sub, tuple(sorted(client_ids)), tuple(sorted(token_ids)))

    def expired(self, limit: int = 100) -> list[str]:
        """The sessions whose expiry has passed and which are not ended yet, oldest first.

        Read only: the caller ends each (``end(sid)``), and whichever caller wins acts, so
        every worker may sweep at once.

        Args:
            limit: the most sids returned.

        Returns:
            Up to ``limit`` sids.

        Raises:
            redis.RedisError: Redis could not be reached.
        """
        return self._redis.zrangebyscore(
            self._key("oidc:sessions:expiry"), "-inf", self._clock(), start=0, num=limit
        )
