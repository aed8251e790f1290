"""The cross-worker push: wake the socket waiting for a scene, on whichever process holds it.

Modelled on python-socketio's ``PubSubManager``: one Redis subscription per process, opened by a
listener thread started on first use (so after gunicorn forks), and a local registry of which
waiters wait for which scene. Messages are JSON ``{"type": "attempt", "scene": str}``, to which
the store's transition adds the attempt's new ``status`` (and ``code`` and ``confirmed_at`` once
confirmed), so that the waiter need not read it.

Pub/sub delivers at most once, so it only ever wakes a waiter: the result itself is written to
Redis before the publish, and a waiter registers, then reads, then waits. Every announcement
also adds the scene to a capped Redis stream, which each process sweeps about once a second,
waking the waiters of the scenes added since its last sweep: a message it missed costs at most
a sweep, never a login, and a sweep reads what changed rather than every socket's status (it
reads every status at start, when it lost its place, and every ``FULL_SWEEP_EVERY`` sweeps).
"""

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from ..metrics import WAITING_SOCKETS
from .store import CHANGES_KEPT

log = logging.getLogger(__name__)

#: Reconnect delays of the listener, in seconds: quick at first, capped low.
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)

#: Statuses read per pipeline by the sweep: small enough that reading and parsing a batch
#: holds the worker for well under a millisecond, since it yields between batches.
SWEEP_BATCH = 200


#: Every this many sweeps, the sweep reads every waiter's status even when the stream says
#: nothing changed: a write that announced nothing (made by hand, or a restored backup) is
#: still found within this many sweeps.
FULL_SWEEP_EVERY = 30

#: Waiters one process keeps per scene: two tabs of a browser share its attempt; a third
#: sends the oldest away, so no browser can hold sockets without end on one QR code.
MAX_WAITERS_PER_SCENE = 2


@dataclass(eq=False, slots=True)
class Waiter:
    """One waiter's registration with the hub.

    Attributes:
        wake: set each time its attempt may have changed, and when it is sent away; the waiter
            clears it, then re-reads the attempt.
        replaced: True once a newer waiter on its scene took its place: it should leave for
            good.
        pushed: the attempt's state as the last wake's push carried it (``{"status": str,
            "code": str, "confirmed_at": str}``, the last two once confirmed), which the waiter
            may take instead of re-reading; None when that wake carried none (a sweep, a push
            without state): then it re-reads. The waiter takes it (sets it to None).
    """

    wake: threading.Event = field(default_factory=threading.Event)
    replaced: bool = False
    pushed: dict[str, str] | None = None


class LoginHub:
    """Publishes attempt changes and routes them to local waiters.

    Args:
        redis_client: a client with ``decode_responses=True``.
        statuses: reads the status of many scenes at once (``LoginStore.statuses``); None
            turns the sweep off.
        sweep_seconds: how often the sweep runs, in seconds.
        channel: the pub/sub channel shared by every worker.
        stream: the Redis stream every change is also added to (capped at
            ``CHANGES_KEPT``), so that the sweep reads what changed rather than every status.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        statuses: Callable[[list[str]], list[str | None]] | None = None,
        sweep_seconds: float = 1.0,
        channel: str = "login:attempts",
        stream: str = "login:changes",
    ) -> None:
        self._redis = redis_client
        self._statuses = statuses
        self._sweep_seconds = sweep_seconds
        self._channel = channel
        self._stream = stream
        # Oldest first, so that a third waiter on a scene can send the oldest away.
        self._waiters: dict[str, list[Waiter]] = {}
        self._per_client: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._listener_pid: int | None = None
        self._stopping = threading.Event()
        self._going_away = threading.Event()
        #: Set while the listener holds a live subscription (for readiness checks and tests).
        self.subscribed = threading.Event()

    def publish(self, scene: str) -> None:
        """Tell every worker that the attempt for ``scene`` changed. Write the state first.

        Raises:
            redis.RedisError: Redis could not be reached.
        """
        channel, message, stream = self.announcement(scene)
        with self._redis.pipeline() as pipe:
            pipe.xadd(stream, {"scene": scene}, maxlen=CHANGES_KEPT, approximate=True)
            pipe.publish(channel, message)
            pipe.execute()

    def announcement(self, scene: str) -> tuple[str, str, str]:
        """``(channel, message, stream)`` telling every worker that ``scene``'s attempt
        changed, for a writer that announces it itself, after its write and in the same step
        (``LoginStore.confirm``): publish ``message`` on ``channel``, and add ``{"scene":
        scene}`` to ``stream`` (capped at ``CHANGES_KEPT``)."""
        return self._channel, json.dumps({"type": "attempt", "scene": scene}), self._stream

    @contextmanager
    def waiting(
        self, scene: str, client: str = "", wake: threading.Event | None = None
    ) -> Iterator[Waiter]:
        """Register a waiter for ``scene`` for the duration of the ``with`` block.

        Args:
            scene: the attempt waited on.
            client: who waits (the client's address or network), counted by
                ``waiting_count(client)`` until the block ends.
            wake: the event to set on each wake; None: a new one. A socket passes the event its
                reader already sets when the browser talks or leaves, so that one wait covers
                both and no other object is kept per socket.

        Yields:
            The ``Waiter``: its ``wake`` is set each time the attempt may have changed, and once
            it is ``replaced`` by a newer waiter on the scene (the ``MAX_WAITERS_PER_SCENE``
            newest are kept). The caller must read the state after entering the block, and
            again after every wake or timeout.
        """
        waiter = Waiter(wake) if wake is not None else Waiter()
        with self._lock:
            waiters = self._waiters.setdefault(scene, [])
            waiters.append(waiter)
            replaced = waiters[:-MAX_WAITERS_PER_SCENE]
            del waiters[:-MAX_WAITERS_PER_SCENE]
            self._per_client[client] += 1
        for oldest in replaced:
            oldest.replaced = True
            oldest.wake.set()
        WAITING_SOCKETS.inc()
        try:
            # Registered first: a listener that starts now wakes this waiter once subscribed.
            self._ensure_listener()
            yield waiter
        finally:
            WAITING_SOCKETS.dec()
            with self._lock:
                self._per_client[client] -= 1
                if not self._per_client[client]:
                    del self._per_client[client]
                waiters = self._waiters.get(scene)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[scene]

    def start(self) -> None:
        """Start this process's listener (and sweep) now rather than at the first waiter."""
        self._ensure_listener()

    def waiting_count(self, client: str | None = None) -> int:
        """How many waiters this process holds: all, or those of ``client`` (as passed to
        ``waiting``), including any sent away but not yet gone."""
        with self._lock:
            if client is not None:
                return self._per_client[client]
            return sum(self._per_client.values())

    def go_away(self) -> None:
        """Wake every waiter for good: this process is shutting down (``going_away`` is True),
        so each closes its socket at once and its page reconnects to another worker."""
        self._going_away.set()
        self._wake_all()

    @property
    def going_away(self) -> bool:
        """True once ``go_away`` was called: waiters should leave, new ones not start."""
        return self._going_away.is_set()

    def close(self) -> None:
        """Stop the listener thread (within about a second)."""
        self._stopping.set()

    def _ensure_listener(self) -> None:
        with self._lock:
            # A forked child inherits the attribute but not the thread: start its own.
            if self._listener is not None and self._listener_pid == os.getpid():
                return
            self._listener_pid = os.getpid()
            self._listener = threading.Thread(
                target=self._listen, name="login-hub-listener", daemon=True
            )
            self._listener.start()
            if self._statuses is not None:
                threading.Thread(target=self._sweep, name="login-hub-sweep", daemon=True).start()

    def _listen(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                # Confirmed by Redis: from here on every publish reaches us.
                pubsub.get_message(timeout=1.0)
                # Anything published before now (while we were away, or before the very first
                # subscription) never reached us: let every waiter re-read. Done before
                # ``subscribed`` is set, so that whoever sees it set has had that wake-up.
                self._wake_all()
                self.subscribed.set()
                if failures:
                    log.info("login hub resubscribed to %s", self._channel)
                failures = 0
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message.get("data"))
            except redis.RedisError as exc:
                self.subscribed.clear()
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                log.warning("login hub lost Redis (%s); retrying in %.1f s", exc, delay)
                self._stopping.wait(delay)
            finally:
                pubsub.close()
        self.subscribed.clear()

    def _dispatch(self, data: object) -> None:
        try:
            message = json.loads(data)  # type: ignore[arg-type]
            scene = message["scene"] if message["type"] == "attempt" else None
        except (TypeError, ValueError, KeyError):
            log.warning("login hub ignored a malformed message: %.100r", data)
            return
        if scene is None:
            log.warning("login hub ignored a message of unknown type: %.100r", data)
            return
        self._wake(scene, _state_of(message))

    def _sweep(self) -> None:
        """Wake the waiters whose attempt changed since the last sweep: those the stream of
        changes names, or (the first time, after an error, when the stream was trimmed past
        the last change seen, and every ``FULL_SWEEP_EVERY`` sweeps) those whose status
        moved on. A push that never arrived costs a sweep, and a sweep costs a read of what
        changed, not of every socket."""
        last_id: str | None = None  # the last change seen; None: read every status
        sweeps = 0
        while not self._stopping.wait(self._sweep_seconds):
            try:
                last_id, changed = self._changes_since(last_id)
                if changed is None or sweeps % FULL_SWEEP_EVERY == 0:
                    self._sweep_statuses()
                else:
                    for scene in changed:
                        self._wake(scene)
                sweeps += 1
            except redis.RedisError as exc:
                last_id = None
                log.warning("login hub sweep could not read Redis: %s", exc)

    def _changes_since(self, last_id: str | None) -> tuple[str, list[str] | None]:
        """``(the newest change's id, the scenes changed after last_id)``, in one round trip;
        the scenes are None when they cannot be known (no last id, the stream lost, or trimmed
        past it): then every status must be read."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(self._stream, count=1)
            pipe.xrevrange(self._stream, count=1)
            if last_id is not None:
                pipe.xrange(self._stream, min=f"({last_id}", count=CHANGES_KEPT)
            oldest, newest, *since = pipe.execute()
        newest_id = newest[0][0] if newest else "0-0"
        if last_id is None:
            return newest_id, None
        if last_id != "0-0" and (not oldest or _stream_id(oldest[0][0]) > _stream_id(last_id)):
            return newest_id, None  # the stream lost (Redis lost it), or trimmed past last_id
        entries = since[0]
        return (entries[-1][0] if entries else last_id), [
            fields.get("scene", "") for _, fields in entries
        ]

    def _sweep_statuses(self) -> None:
        with self._lock:
            scenes = list(self._waiters)
        for start in range(0, len(scenes), SWEEP_BATCH):
            batch = scenes[start : start + SWEEP_BATCH]
            for scene, status in zip(batch, self._statuses(batch), strict=True):
                if status != "waiting":  # moved on, or gone (expired)
                    self._wake(scene)
            # Let the sockets and callbacks run between batches: under gevent this thread is
            # a greenlet, and a sweep of thousands would otherwise hold the whole worker for
            # tens of ms every second.
            time.sleep(0)

    def _wake(self, scene: str, pushed: dict[str, str] | None = None) -> None:
        with self._lock:
            waiters = list(self._waiters.get(scene, ()))
        for waiter in waiters:
            # A wake without state clears what an earlier push carried: whatever changed since
            # (a login ended by "0", say) is then read, not taken from that push.
            waiter.pushed = pushed
            waiter.wake.set()

    def _wake_all(self) -> None:
        with self._lock:
            scenes = list(self._waiters)
        for scene in scenes:
            self._wake(scene)


def _stream_id(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry id (``"<ms>-<seq>"``) as a comparable tuple."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _state_of(message: dict) -> dict[str, str] | None:
    """The attempt's state a push carries (the store's Lua step adds it), if well-formed."""
    state = {
        name: message[name]
        for name in ("status", "code", "confirmed_at")
        if isinstance(message.get(name), str)
    }
    return state if "status" in state else None
