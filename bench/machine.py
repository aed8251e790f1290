"""The machine, the software versions, and this process's open-file limit."""

import platform
import resource
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import psutil
import redis

#: Packages whose versions the report names.
PACKAGES = ("gunicorn", "gevent", "flask-sock", "simple-websocket", "redis", "websockets")


@dataclass(frozen=True)
class Machine:
    """What the figures were measured on.

    Attributes:
        cores: logical CPUs (``nproc``).
        memory_gb: physical memory, GiB.
        kernel: ``uname -r``.
        cpu_model: ``model name`` from ``/proc/cpuinfo``.
        python: the Python version.
        packages: name -> version, for ``PACKAGES``.
        redis_server: the Redis server's version.
    """

    cores: int
    memory_gb: float
    kernel: str
    cpu_model: str
    python: str
    packages: dict[str, str]
    redis_server: str


def describe_machine(redis_client: redis.Redis) -> Machine:
    """Collect the ``Machine`` facts; ``redis_client`` is asked for the server's version."""
    return Machine(
        cores=psutil.cpu_count() or 0,
        memory_gb=psutil.virtual_memory().total / 2**30,
        kernel=platform.release(),
        cpu_model=_cpu_model(),
        python=platform.python_version(),
        packages={name: version(name) for name in PACKAGES},
        redis_server=redis_client.info("server")["redis_version"],
    )


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft open-file limit to its hard limit.

    Returns:
        ``(soft, hard)`` after raising. The server's own limit is raised by gunicorn.conf.py.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)
