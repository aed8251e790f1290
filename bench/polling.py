"""The peers' way of waiting, as a stand-in measured in the same run: browsers polling a status
endpoint every second, and every 3 seconds (Casdoor's interval).

The product has no polling endpoint; the stand-in is ``GET /api/me`` with a signed-in session:
one request per browser per interval that reads Redis (the session, then the user) and answers
JSON, as a status endpoint would. Each browser polls on its own keep-alive connection at its own
phase in the interval. The delay such a design adds is measured by placing a "scan" at a random
moment for each browser and taking the end of the first poll that starts after it.
"""

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass

from .httpclient import HttpConnection
from .pages import sleep_until
from .stats import CpuMeter, CpuUsage, Latency

#: How often the peers' browsers poll, in seconds: the best-known peers poll every 0.8 to 3 s.
POLL_INTERVALS_SECONDS = (1.0, 3.0)


@dataclass(frozen=True)
class PollingResult:
    """Polling browsers.

    Attributes:
        interval: seconds between one browser's polls.
        browsers: browsers polling.
        requests: polls sent.
        failures: polls not answered 200, by reason (``"HTTP 500"``, ``"ConnectionError"``...).
        seconds: the polling window, seconds.
        latency: one poll's round trip, for those answered 200.
        delay: from a scan to the end of the first poll that would see it, one per browser.
        cpu: CPU used meanwhile.
    """

    interval: float
    browsers: int
    requests: int
    failures: dict[str, int]
    seconds: float
    latency: Latency
    delay: Latency
    cpu: CpuUsage

    @property
    def failed(self) -> int:
        """Polls not answered 200."""
        return sum(self.failures.values())

    @property
    def rate(self) -> float:
        """Polls per second."""
        return self.requests / self.seconds


@dataclass(frozen=True)
class _Poll:
    """One poll: sent and answered at (``time.monotonic()`` seconds), and how it went (``"ok"``,
    or why not)."""

    sent: float
    received: float
    outcome: str


async def measure_polling(
    port: int, cookie: str, browsers: int, interval: float, seconds: float, meter: CpuMeter
) -> PollingResult:
    """Let ``browsers`` poll ``GET /api/me`` with ``cookie`` every ``interval`` seconds for
    ``seconds`` (at least two intervals and a half, so that every scan placed finds a poll)."""
    chance = random.Random(0)
    seconds = max(seconds, 2.5 * interval)
    cpu_start = meter.sample()
    started = time.monotonic()
    polls = await asyncio.gather(
        *(
            _poll(port, cookie, started + chance.uniform(0, interval), started + seconds, interval)
            for _ in range(browsers)
        )
    )
    cpu = meter.since(cpu_start)
    # Scans after every browser's first poll, and early enough for a poll to follow.
    delays = [
        _delay(
            browser_polls, chance.uniform(started + interval, started + seconds - 1.5 * interval)
        )
        for browser_polls in polls
    ]
    every_poll = [poll for browser_polls in polls for poll in browser_polls]
    answered = [poll for poll in every_poll if poll.outcome == "ok"]
    return PollingResult(
        interval=interval,
        browsers=browsers,
        requests=len(every_poll),
        failures=dict(Counter(poll.outcome for poll in every_poll if poll.outcome != "ok")),
        seconds=seconds,
        latency=Latency.of([poll.received - poll.sent for poll in answered]),
        delay=Latency.of([delay for delay in delays if delay is not None]),
        cpu=cpu,
    )


async def _poll(port: int, cookie: str, first: float, end: float, interval: float) -> list[_Poll]:
    """Poll from ``first`` until ``end`` (``time.monotonic()`` seconds), every ``interval``
    seconds."""
    connection = HttpConnection(port)
    polls = []
    moment = first
    while moment < end:
        await sleep_until(moment)
        sent = time.monotonic()
        try:
            response = await connection.request("GET", "/api/me", headers={"Cookie": cookie})
            outcome = "ok" if response.status == 200 else f"HTTP {response.status}"
        except (ConnectionError, TimeoutError) as exc:
            outcome = type(exc).__name__
        polls.append(_Poll(sent, time.monotonic(), outcome))
        moment += interval
    await connection.close()
    return polls


def _delay(polls: list[_Poll], scanned_at: float) -> float | None:
    """From ``scanned_at`` to the end of the first answered poll sent after it, in seconds."""
    for poll in polls:
        if poll.sent >= scanned_at and poll.outcome == "ok":
            return poll.received - scanned_at
    return None
