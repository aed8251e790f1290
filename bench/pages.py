"""Simulated browsers: login attempts seeded in Redis, and the pages waiting on them.

Attempts are stored with the app's own ``LoginStore.create_attempt``, as ``POST
/api/login/qrcode`` stores them, minus the QR image, whose rendering would otherwise be most of
what seeding 10,000 of them measured (``qrcodes`` measures that endpoint on its own).
"""

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from app.login.store import LoginStore, hash_secret, new_scene
from app.views.cookies import BROWSER_COOKIE, issue_binding

from .server import SECRET_KEY

#: Waits before each reconnect after a failed or closed socket, in seconds, as the login page
#: does (``RECONNECT_DELAYS_MS`` in static/login.js); a page gives up after these.
RECONNECT_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0, 5.0)
#: Connections a page tries at most.
OPEN_ATTEMPTS = len(RECONNECT_DELAYS_SECONDS) + 1
#: How long the handshake, and then the first frame, may take, in seconds.
OPEN_TIMEOUT_SECONDS = 10.0
#: How long closing a socket may take, in seconds.
CLOSE_TIMEOUT_SECONDS = 2.0
#: Frames after which the server closes the socket.
TERMINAL_STATUSES = frozenset({"confirmed", "cancelled", "expired"})


@dataclass(frozen=True)
class Browser:
    """A simulated browser: its binding secret and the scene of its login attempt."""

    secret: str
    scene: str

    @property
    def cookie(self) -> str:
        """The ``Cookie`` header its pages send."""
        return f"{BROWSER_COOKIE}={self.secret}"


def seed_browsers(store: LoginStore, count: int, expire_seconds: int) -> list[Browser]:
    """Store ``count`` waiting attempts, each bound to a browser of its own.

    Args:
        store: the app's store, on the server's Redis database.
        count: browsers to make.
        expire_seconds: life of each attempt, in seconds.
    """
    browsers = []
    for _ in range(count):
        browser = Browser(issue_binding(SECRET_KEY), new_scene(time.time()))
        store.create_attempt(browser.scene, hash_secret(browser.secret), expire_seconds)
        browsers.append(browser)
    return browsers


class WaitingPage:
    """A login page: its websocket, and every frame it received, with arrival times.

    Args:
        browser: whose page it is.
        origin: the site's origin (sent as ``Origin``; the server refuses any other).
        open_timeout: seconds allowed for the handshake and for the first frame.
    """

    def __init__(
        self, browser: Browser, origin: str, open_timeout: float = OPEN_TIMEOUT_SECONDS
    ) -> None:
        self.browser = browser
        self._origin = origin
        self._open_timeout = open_timeout
        #: ``(time.perf_counter() seconds, frame)`` for each frame, in order.
        self.frames: list[tuple[float, dict]] = []
        #: Failed tries, by reason: ``"closed 1013"`` (a worker at its cap), ``"HTTP 503"``,
        #: ``"TimeoutError"``...
        self.failed_tries: Counter[str] = Counter()
        #: Why the page never got its "waiting" frame, if it gave up.
        self.failure: str | None = None
        #: Set when a terminal frame arrives.
        self.finished = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._closing = False

    @property
    def url(self) -> str:
        """The page's socket URL."""
        return f"ws{self._origin.removeprefix('http')}/ws/login/{self.browser.scene}"

    @property
    def local_port(self) -> int | None:
        """The socket's client-side port once open."""
        return self._ws.local_address[1] if self._ws else None

    @property
    def waiting(self) -> bool:
        """Open, told "waiting", and nothing final yet."""
        return self._reader is not None and not self._reader.done() and not self.finished.is_set()

    @property
    def terminal_frames(self) -> list[tuple[float, dict]]:
        """The frames that ended the login (exactly one when all is well)."""
        return [(at, frame) for at, frame in self.frames if frame["status"] in TERMINAL_STATUSES]

    @property
    def dropped(self) -> bool:
        """Once waiting, the socket ended with no final frame and without our closing it."""
        return (
            self._reader is not None
            and self._reader.done()
            and not self.finished.is_set()
            and not self._closing
        )

    async def open(self, attempts: int = OPEN_ATTEMPTS) -> None:
        """Connect and wait for the "waiting" frame, reconnecting as the login page does.

        Args:
            attempts: connections tried at most (1: no reconnect).

        Sets ``failure`` instead of raising, and counts each failed try in ``failed_tries``.
        """
        for delay in (*RECONNECT_DELAYS_SECONDS[: attempts - 1], None):
            failure = await self._try_open()
            if failure is None:
                return
            self.failed_tries[failure] += 1
            if delay is None:
                self.failure = failure
                return
            await asyncio.sleep(delay)

    async def _try_open(self) -> str | None:
        """One connection: None once "waiting" has come, else why not."""
        try:
            ws = await connect(
                self.url,
                origin=self._origin,
                additional_headers={"Cookie": self.browser.cookie},
                user_agent_header="Mozilla/5.0 (bench)",
                proxy=None,  # loopback only, whatever the environment says
                ping_interval=None,  # browsers answer pings but send none
                open_timeout=self._open_timeout,
                close_timeout=CLOSE_TIMEOUT_SECONDS,
            )
        except InvalidStatus as exc:
            return f"HTTP {exc.response.status_code}"
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return type(exc).__name__
        try:
            first = await asyncio.wait_for(ws.recv(), self._open_timeout)
        except TimeoutError:
            await ws.close()
            return "no first frame"
        except ConnectionClosed as exc:
            return f"closed {exc.rcvd.code}" if exc.rcvd else "closed abnormally"
        self._ws = ws
        self._record(first)
        self._reader = asyncio.create_task(self._read())
        return None

    async def close(self) -> None:
        """Close the socket as a browser leaving the page does."""
        if self._ws is not None:
            self._closing = True
            await self._ws.close()
            await self._reader

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                self._record(message)
        except ConnectionClosed:
            pass

    def _record(self, message: str | bytes) -> None:
        frame = json.loads(message)
        self.frames.append((time.perf_counter(), frame))
        if frame["status"] in TERMINAL_STATUSES:
            self.finished.set()


@dataclass(frozen=True)
class OpenResult:
    """How opening many pages went.

    Attributes:
        asked: pages asked to open.
        held: pages that got their "waiting" frame.
        failed_tries: tries that failed (then retried, or given up), by reason.
        failures: pages that gave up, by the reason of their last try.
        seconds: wall-clock time taken.
    """

    asked: int
    held: int
    failed_tries: dict[str, int]
    failures: dict[str, int]
    seconds: float


async def open_pages(
    pages: Sequence[WaitingPage], rate: float, attempts: int = OPEN_ATTEMPTS
) -> OpenResult:
    """Open ``pages``, starting ``rate`` new ones per second, and wait for all of them; each
    tries ``attempts`` connections at most."""
    started = time.monotonic()
    tasks = []
    for index, page in enumerate(pages):
        await sleep_until(started + index / rate)
        tasks.append(asyncio.create_task(page.open(attempts)))
    await asyncio.gather(*tasks)
    failed_tries: Counter[str] = Counter()
    for page in pages:
        failed_tries.update(page.failed_tries)
    return OpenResult(
        asked=len(pages),
        held=sum(page.failure is None for page in pages),
        failed_tries=dict(failed_tries),
        failures=dict(Counter(page.failure for page in pages if page.failure)),
        seconds=time.monotonic() - started,
    )


async def close_pages(pages: Sequence[WaitingPage], batch: int = 1000) -> None:
    """Close every page's socket, ``batch`` at a time."""
    for start in range(0, len(pages), batch):
        await asyncio.gather(*(page.close() for page in pages[start : start + batch]))


async def sleep_until(moment: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment`` (at once if it has)."""
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
