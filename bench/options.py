"""The benchmark's command line."""

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

#: The database the benchmark owns (emptied at the start of a run).
DEFAULT_REDIS_DB = 10


@dataclass(frozen=True)
class Options:
    """What one run measures, and how much of it.

    Attributes:
        sockets: waiting sockets to hold (the target is 10,000).
        scans: scans posted while they wait, for scan-to-push latency.
        scan_rate: scans posted per second.
        idle_seconds: the window over which idle CPU is measured, in seconds.
        connect_rate: new websockets opened per second.
        floor_samples: round trips measured for each half of the floor.
        burst_callbacks: signed callbacks in each burst.
        burst_concurrency: requests in flight during a burst.
        qrcodes: QR codes created through ``POST /api/login/qrcode``.
        pollers: browsers simulated by the polling comparison.
        poll_seconds: how long they poll at each interval, in seconds.
        oidc_codes: authorization codes exchanged (and userinfo reads) at the OpenID provider.
        compare_sockets: sockets held by each worker model in the comparison.
        redis_db: the Redis database on 127.0.0.1:6379 the run owns and empties.
        output: the Markdown report written at the end.
        quick: a smoke run with small numbers (its figures say little).
    """

    sockets: int = 10_000
    scans: int = 500
    scan_rate: float = 50.0
    idle_seconds: float = 30.0
    connect_rate: float = 500.0
    floor_samples: int = 500
    burst_callbacks: int = 10_000
    burst_concurrency: int = 64
    qrcodes: int = 300
    pollers: int = 1_000
    poll_seconds: float = 20.0
    oidc_codes: int = 2_000
    compare_sockets: int = 1_000
    redis_db: int = DEFAULT_REDIS_DB
    output: Path = Path("docs/benchmarks.md")
    quick: bool = False

    @property
    def redis_url(self) -> str:
        """The URL of the run's database, ``redis_db`` on 127.0.0.1:6379."""
        return f"redis://127.0.0.1:6379/{self.redis_db}"


#: What ``--quick`` changes (options given explicitly still win).
QUICK = {
    "sockets": 500,
    "scans": 50,
    "idle_seconds": 3.0,
    "floor_samples": 100,
    "burst_callbacks": 1_000,
    "qrcodes": 50,
    "pollers": 100,
    "poll_seconds": 3.0,
    "oidc_codes": 100,
    "compare_sockets": 100,
}


def parse_args(argv: list[str] | None = None) -> Options:
    """Read the command line (``sys.argv[1:]`` when ``argv`` is None) into ``Options``."""
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the deployment (gunicorn.conf.py) on loopback; write the report.",
    )
    parser.add_argument("--sockets", type=int, help=f"waiting sockets (default {defaults.sockets})")
    parser.add_argument("--scans", type=int, help=f"scans to time (default {defaults.scans})")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        help=f"idle CPU window, seconds (default {defaults.idle_seconds:g})",
    )
    parser.add_argument(
        "--pollers", type=int, help=f"polling browsers (default {defaults.pollers})"
    )
    parser.add_argument(
        "--redis-db", type=int, help=f"Redis database to own and empty (default {DEFAULT_REDIS_DB})"
    )
    parser.add_argument("--output", type=Path, help=f"report path (default {defaults.output})")
    parser.add_argument("--quick", action="store_true", help="a smoke run with small numbers")
    args = parser.parse_args(argv)
    options = replace(defaults, **QUICK, quick=True) if args.quick else defaults
    given = {
        name: value for name, value in vars(args).items() if name != "quick" and value is not None
    }
    return replace(options, **given)
