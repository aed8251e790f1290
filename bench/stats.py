"""Percentiles, and the CPU used by the server, Redis and this process over a window."""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil
import redis


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]


@dataclass(frozen=True)
class Latency:
    """A latency distribution, in milliseconds (NaN when there were no samples)."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Latency":
        """Summarise durations given in seconds."""
        return cls(
            count=len(seconds),
            p50_ms=percentile(seconds, 50) * 1000,
            p99_ms=percentile(seconds, 99) * 1000,
            max_ms=max(seconds, default=math.nan) * 1000,
        )


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds at one moment (``wall`` is ``time.monotonic()``)."""

    wall: float
    server: float
    redis: float
    client: float
    wechat: float
    machine: float
    redis_commands: int
    sweep_commands: int


@dataclass(frozen=True)
class CpuUsage:
    """CPU used over a window, in cores (CPU seconds per wall second), and Redis's work.

    Attributes:
        seconds: the window, wall-clock seconds.
        server, redis, client: cores used by gunicorn (master and workers), by Redis, and by
            this load generator.
        wechat: cores used by the server that plays WeChat (the emulator, out of process):
            WeChat's work, not ours.
        machine: cores busy on the whole machine (anything but idle, I/O wait and steal).
        redis_commands: commands Redis processed in the window.
        sweep_commands: those that were HGETs: the hubs' status sweeps issue nothing else, and
            no request path issues any.
    """

    seconds: float
    server: float
    redis: float
    client: float
    wechat: float
    machine: float
    redis_commands: int
    sweep_commands: int

    @property
    def request_commands(self) -> int:
        """Redis commands in the window other than the sweeps'."""
        return self.redis_commands - self.sweep_commands

    @property
    def others(self) -> float:
        """Cores used by everything else on the machine (other processes, the kernel)."""
        return max(self.machine - self.server - self.redis - self.client - self.wechat, 0.0)


class CpuMeter:
    """Samples the CPU time of the server, Redis and this process.

    Args:
        server_cpu: returns the server's cumulative CPU seconds (``Server.cpu_seconds``).
        redis_client: asked for Redis's own CPU time (``INFO``), so Redis may run anywhere.
        wechat_cpu: returns the cumulative CPU seconds of the server playing WeChat, if one
            runs apart (``Server.cpu_seconds``).
    """

    def __init__(
        self,
        server_cpu: Callable[[], float],
        redis_client: redis.Redis,
        wechat_cpu: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._server_cpu = server_cpu
        self._wechat_cpu = wechat_cpu
        self._redis = redis_client
        self._client = psutil.Process()

    def sample(self) -> CpuSample:
        """Take the cumulative figures now."""
        info = self._redis.info()
        hget = self._redis.info("commandstats").get("cmdstat_hget", {"calls": 0})
        client = self._client.cpu_times()
        return CpuSample(
            wall=time.monotonic(),
            server=self._server_cpu(),
            redis=info["used_cpu_sys"] + info["used_cpu_user"],
            client=client.user + client.system,
            wechat=self._wechat_cpu(),
            machine=busy_seconds(),
            redis_commands=info["total_commands_processed"],
            sweep_commands=hget["calls"],
        )

    def since(self, start: CpuSample) -> CpuUsage:
        """What was used between ``start`` and now."""
        end = self.sample()
        wall = end.wall - start.wall
        return CpuUsage(
            seconds=wall,
            server=(end.server - start.server) / wall,
            redis=(end.redis - start.redis) / wall,
            client=(end.client - start.client) / wall,
            wechat=(end.wechat - start.wechat) / wall,
            machine=(end.machine - start.machine) / wall,
            redis_commands=end.redis_commands - start.redis_commands,
            sweep_commands=end.sweep_commands - start.sweep_commands,
        )


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq
