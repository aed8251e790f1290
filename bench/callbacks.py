"""Signed callbacks per second: a burst of WeChat callbacks at a fixed concurrency."""

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .httpclient import HttpConnection
from .stats import CpuMeter, CpuUsage, Latency
from .wechat import CallbackSigner


@dataclass(frozen=True)
class BurstResult:
    """A burst of callbacks.

    Attributes:
        kind: what was posted, for the report.
        sent: callbacks posted.
        failed: callbacks not answered 200 with the expected reply (or not at all).
        seconds: wall-clock time from the first POST to the last answer.
        latency: POST to answer, for answered callbacks.
        cpu: CPU used during the burst (the load generator's own share included).
    """

    kind: str
    sent: int
    failed: int
    seconds: float
    latency: Latency
    cpu: CpuUsage

    @property
    def rate(self) -> float:
        """Callbacks answered correctly per second."""
        return (self.sent - self.failed) / self.seconds


async def callback_burst(
    port: int,
    kind: str,
    bodies: Sequence[bytes],
    expected: bytes,
    concurrency: int,
    meter: CpuMeter,
) -> BurstResult:
    """Post every one of ``bodies``, signed, ``concurrency`` at a time.

    Args:
        port: the server's port.
        kind: a label for the report.
        bodies: callback XML bodies.
        expected: bytes a correct answer contains.
        concurrency: requests in flight (each on its own keep-alive connection).
        meter: measures the CPU used.
    """
    connections = [HttpConnection(port) for _ in range(concurrency)]
    for connection in connections:
        await connection.request("GET", "/api/me")  # connected before the clock starts
    signer = CallbackSigner()
    queue = iter(bodies)
    cpu_start = meter.sample()
    started = time.perf_counter()
    answers = await asyncio.gather(
        *(_post_all(connection, signer, queue, expected) for connection in connections)
    )
    seconds = time.perf_counter() - started
    cpu = meter.since(cpu_start)
    for connection in connections:
        await connection.close()
    latencies = [latency for answered in answers for latency in answered]
    return BurstResult(
        kind=kind,
        sent=len(bodies),
        failed=len(bodies) - len(latencies),
        seconds=seconds,
        latency=Latency.of(latencies),
        cpu=cpu,
    )


async def _post_all(
    connection: HttpConnection, signer: CallbackSigner, queue: Iterator[bytes], expected: bytes
) -> list[float]:
    """Post bodies from the shared ``queue`` until it is empty; the latencies of those answered
    correctly, in seconds."""
    latencies = []
    for body in queue:
        try:
            response = await signer.post(connection, body)
        except (ConnectionError, TimeoutError):
            continue
        if response.status == 200 and expected in response.body:
            latencies.append(response.seconds)
    return latencies
