"""Requests per second: a burst of one kind of request at a fixed concurrency, and its CPU.

The kinds: signed WeChat callbacks (scans that sign in, text messages), the floor's bare HTTP
round trip (``GET /api/me`` answered 401, no Redis), and the OpenID provider's hot path (code
exchange, userinfo).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from .httpclient import HttpConnection, Response
from .stats import CpuMeter, CpuUsage, Latency

#: One request of a burst: sends itself on the connection it is given, returns the response.
Request = Callable[[HttpConnection], Awaitable[Response]]


@dataclass(frozen=True)
class BurstResult:
    """A burst of requests.

    Attributes:
        kind: what was sent, for the report.
        sent: requests sent.
        failed: requests not answered as expected (or not at all).
        seconds: wall-clock time from the first request to the last answer.
        latency: request to answer, for those answered as expected.
        cpu: CPU used during the burst (the load generator's own share included).
        concurrency: requests in flight.
    """

    kind: str
    sent: int
    failed: int
    seconds: float
    latency: Latency
    cpu: CpuUsage
    concurrency: int

    @property
    def rate(self) -> float:
        """Requests answered as expected, per second."""
        return (self.sent - self.failed) / self.seconds


async def burst(
    port: int,
    kind: str,
    requests: Sequence[Request],
    expected: Callable[[Response], bool],
    concurrency: int,
    meter: CpuMeter,
) -> BurstResult:
    """Send every one of ``requests``, ``concurrency`` at a time.

    Args:
        port: the server's port.
        kind: a label for the report.
        requests: the requests, each sent once.
        expected: tells a correct answer.
        concurrency: requests in flight (each on its own keep-alive connection).
        meter: measures the CPU used.
    """
    connections = [HttpConnection(port) for _ in range(concurrency)]
    for connection in connections:
        await connection.request("GET", "/api/me")  # connected before the clock starts
    queue = iter(requests)
    cpu_start = meter.sample()
    started = time.perf_counter()
    answers = await asyncio.gather(
        *(_send_all(connection, queue, expected) for connection in connections)
    )
    seconds = time.perf_counter() - started
    cpu = meter.since(cpu_start)
    for connection in connections:
        await connection.close()
    latencies = [latency for answered in answers for latency in answered]
    return BurstResult(
        kind=kind,
        sent=len(requests),
        failed=len(requests) - len(latencies),
        seconds=seconds,
        latency=Latency.of(latencies),
        cpu=cpu,
        concurrency=concurrency,
    )


async def _send_all(
    connection: HttpConnection, queue: Iterator[Request], expected: Callable[[Response], bool]
) -> list[float]:
    """Send requests from the shared ``queue`` until it is empty; the latencies of those
    answered as expected, in seconds."""
    latencies = []
    for request in queue:
        try:
            response = await request(connection)
        except (ConnectionError, TimeoutError):
            continue
        if expected(response):
            latencies.append(response.seconds)
    return latencies
