"""Scan-to-push latency, from the callback POST to the frame at the page, beside its floor.

The floor is what any design on this stack pays at least: one Redis PUBLISH reaching a
subscriber, plus one HTTP round trip to the same server.
"""

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio

from .httpclient import HttpConnection
from .pages import WaitingPage, sleep_until
from .server import Server, key_prefix
from .stats import CpuMeter, CpuUsage, Latency
from .wechat import SIGNED_IN_REPLY, post, scan

#: A scan whose page has no "confirmed" frame this long after the POST is a lost login, in s.
LOST_AFTER_SECONDS = 5.0
#: Keep-alive connections the scans are posted over (WeChat's side).
CALLBACK_CONNECTIONS = 8
#: The channel the floor's PUBLISH round trips use, after the run's key prefix (the app's is
#: ``<REDIS_KEY_PREFIX>login:attempts``).
FLOOR_CHANNEL = "floor"


@dataclass(frozen=True)
class Floor:
    """The floor under scan-to-push latency.

    Attributes:
        publish: PUBLISH on one connection to the message read on a subscribed one.
        http: ``GET /api/me`` (401, no Redis) on a keep-alive connection.
    """

    publish: Latency
    http: Latency

    @property
    def p50_ms(self) -> float:
        """The sum of the two medians, in milliseconds."""
        return self.publish.p50_ms + self.http.p50_ms


async def measure_floor(redis_url: str, port: int, samples: int) -> Floor:
    """Time ``samples`` of each half of the floor, one at a time."""
    return Floor(
        publish=Latency.of(await _publish_round_trips(redis_url, samples)),
        http=Latency.of(await _http_round_trips(port, samples)),
    )


async def _publish_round_trips(redis_url: str, samples: int) -> list[float]:
    publisher = redis.asyncio.Redis.from_url(redis_url)
    subscriber = publisher.pubsub(ignore_subscribe_messages=True)  # a connection of its own
    channel = key_prefix(redis_url) + FLOOR_CHANNEL
    await subscriber.subscribe(channel)
    seconds = []
    try:
        for sample in range(samples):
            payload = str(sample).encode()
            started = time.perf_counter()
            await publisher.publish(channel, payload)
            await _receive(subscriber, payload)
            seconds.append(time.perf_counter() - started)
    finally:
        await subscriber.aclose()
        await publisher.aclose()
    return seconds


async def _receive(subscriber: redis.asyncio.client.PubSub, payload: bytes) -> None:
    """Wait for ``payload`` on ``subscriber``.

    Raises:
        TimeoutError: it did not come within a second.
    """
    async with asyncio.timeout(1.0):
        while True:
            message = await subscriber.get_message(timeout=1.0)
            if message is not None and message["data"] == payload:
                return


async def _http_round_trips(port: int, samples: int) -> list[float]:
    connection = HttpConnection(port)
    seconds = []
    try:
        for _ in range(samples):
            seconds.append((await connection.request("GET", "/api/me")).seconds)
    finally:
        await connection.close()
    return seconds


@dataclass(frozen=True)
class PushResult:
    """Scans posted while pages wait, and what reached the pages.

    Attributes:
        scanned: scans posted.
        push: POST start to the "confirmed" frame at the page, for each delivered login.
        reply: POST start to the callback's response (what WeChat waits for).
        lost: scans with no "confirmed" frame within ``LOST_AFTER_SECONDS``.
        failed_callbacks: callbacks not answered 200 with "登录成功".
        cross_worker: scans whose POST went to another worker than the one holding the page.
        located: scans for which both workers were known (the rest reconnected meanwhile).
        cpu: CPU used while the scans ran.
    """

    scanned: int
    push: Latency
    reply: Latency
    lost: int
    failed_callbacks: int
    cross_worker: int
    located: int
    cpu: CpuUsage


@dataclass(frozen=True)
class _Scan:
    """One posted scan: when (``time.perf_counter()`` seconds), how it was answered, and the
    client port of the connection it went over."""

    page: WaitingPage
    sent_at: float
    replied_at: float
    answered: bool
    callback_port: int | None

    @property
    def push_seconds(self) -> float | None:
        """POST start to the page's "confirmed" frame; None if none came in time."""
        terminal = self.page.terminal_frames
        if not terminal or terminal[0][1]["status"] != "confirmed":
            return None
        seconds = terminal[0][0] - self.sent_at
        return seconds if seconds <= LOST_AFTER_SECONDS else None


async def measure_push(
    server: Server, pages: Sequence[WaitingPage], rate: float, meter: CpuMeter
) -> PushResult:
    """Scan each of ``pages`` (all waiting), ``rate`` per second, and time the pushes."""
    connections = [HttpConnection(server.port) for _ in range(CALLBACK_CONNECTIONS)]
    for connection in connections:
        await connection.request("GET", "/api/me")  # open it, to learn which worker has it
    owners = server.connection_owners()
    cpu_start = meter.sample()
    started = time.monotonic()
    tasks = []
    for index, (page, connection) in enumerate(zip(pages, itertools.cycle(connections))):
        await sleep_until(started + index / rate)
        tasks.append(asyncio.create_task(_scan(page, connection)))
    scans = await asyncio.gather(*tasks)
    cpu = meter.since(cpu_start)
    for connection in connections:
        await connection.close()
    delivered = [scan.push_seconds for scan in scans if scan.push_seconds is not None]
    workers = [(owners.get(scan.callback_port), owners.get(scan.page.local_port)) for scan in scans]
    located = [(post, page) for post, page in workers if post and page]
    return PushResult(
        scanned=len(scans),
        push=Latency.of(delivered),
        reply=Latency.of([scan.replied_at - scan.sent_at for scan in scans if scan.answered]),
        lost=len(scans) - len(delivered),
        failed_callbacks=sum(not scan.answered for scan in scans),
        cross_worker=sum(post != page for post, page in located),
        located=len(located),
        cpu=cpu,
    )


async def _scan(page: WaitingPage, connection: HttpConnection) -> _Scan:
    """Post the scan of ``page``'s QR code, then give its push ``LOST_AFTER_SECONDS``."""
    sent_at = time.perf_counter()
    try:
        response = await post(connection, scan(page.browser.scene))
        sent_at, replied_at = response.sent_at, response.received_at
        answered = response.status == 200 and SIGNED_IN_REPLY in response.body
    except (ConnectionError, TimeoutError):
        answered, replied_at = False, time.perf_counter()
    remaining = sent_at + LOST_AFTER_SECONDS - time.perf_counter()
    try:
        await asyncio.wait_for(page.finished.wait(), max(remaining, 0))
    except TimeoutError:
        pass
    return _Scan(page, sent_at, replied_at, answered, connection.local_port)
