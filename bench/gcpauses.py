"""The workers' garbage-collection pauses, read from the server's own ``/metrics``.

Each worker times every collection into ``wechat_login_gc_pause_seconds`` (``app/metrics.py``);
``/metrics`` adds the workers up. A collection stops its whole worker, every socket included.
"""

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from .httpclient import HttpConnection

#: The histogram the app writes.
METRIC = "wechat_login_gc_pause_seconds"


@dataclass(frozen=True)
class Pauses:
    """Collections of one generation over the run, in all workers.

    Attributes:
        count: collections.
        seconds: their pauses added up, in seconds.
        over: ``(bound in seconds, collections that took longer)`` for each histogram bucket.
    """

    count: int
    seconds: float
    over: list[tuple[float, int]]

    def longer_than(self, seconds: float) -> int:
        """Collections that paused their worker for longer than ``seconds`` (a bucket bound)."""
        return dict(self.over)[seconds]


async def read_gc_pauses(port: int) -> dict[int, Pauses]:
    """Scrape ``/metrics`` once: the pauses by generation (0, 1, 2 = full).

    Raises:
        RuntimeError: ``/metrics`` did not answer 200 (it serves loopback).
        ConnectionError, TimeoutError: as ``HttpConnection.request``.
    """
    connection = HttpConnection(port)
    try:
        response = await connection.request("GET", "/metrics")
    finally:
        await connection.close()
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}")
    counts: dict[int, int] = {}
    sums: dict[int, float] = {}
    buckets: dict[int, list[tuple[float, int]]] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            generation = int(sample.labels["generation"])
            if sample.name.endswith("_count"):
                counts[generation] = int(sample.value)
            elif sample.name.endswith("_sum"):
                sums[generation] = sample.value
            elif sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                buckets.setdefault(generation, []).append(
                    (float(sample.labels["le"]), int(sample.value))
                )
    return {
        generation: Pauses(
            count,
            sums.get(generation, 0.0),
            [(bound, count - within) for bound, within in sorted(buckets.get(generation, []))],
        )
        for generation, count in counts.items()
    }
