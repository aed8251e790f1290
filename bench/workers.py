"""gevent against gthread: the measurement behind gunicorn.conf.py's worker model.

Each model runs as one worker process with the deployed settings otherwise. Under gthread a
flask-sock socket holds a pool thread for its whole life (plus simple-websocket's reader
thread), so the pool must be larger than the sockets; the last case gives it the README's 200
threads and 250 sockets, and times a WeChat callback arriving then.
"""

import asyncio
from dataclasses import dataclass
from pathlib import Path

from app.login.store import LoginStore

from .httpclient import HttpConnection
from .pages import OPEN_ATTEMPTS, WaitingPage, close_pages, open_pages, seed_browsers
from .server import Server, bench_settings
from .stats import Latency
from .wechat import post, text

#: Callbacks timed in each case, all at once, each on a new connection.
CALLBACKS = 5
#: Sockets and pool threads of the exhaustion case.
EXHAUSTION_SOCKETS = 250
EXHAUSTION_THREADS = 200
#: Handshake and first-frame timeout when a pool may be exhausted, in seconds.
OPEN_TIMEOUT_SECONDS = 5.0
#: Pool threads beyond the sockets when gthread is given enough, for the callbacks.
SPARE_THREADS = 200


@dataclass(frozen=True)
class WorkerCase:
    """One configuration: a label, the gunicorn settings added, the sockets to open, and the
    connections each page tries (1: no reconnect, where the pool is meant to run out)."""

    label: str
    worker_args: tuple[str, ...]
    sockets: int
    attempts: int = OPEN_ATTEMPTS


@dataclass(frozen=True)
class WorkerModelResult:
    """One worker process under one model holding sockets.

    Attributes:
        case: the configuration.
        held: sockets that got their "waiting" frame.
        rss_per_socket_kb: added resident memory per held socket, KiB.
        threads: OS threads in the worker while holding them.
        fds_per_socket: added file descriptors per held socket.
        callback: POST to answer, for those of ``CALLBACKS`` text callbacks answered.
        callbacks_unanswered: those with no answer within the client's timeout
            (``httpclient.REQUEST_TIMEOUT_SECONDS``, twice the 5 s WeChat waits).
        log_summary: warnings and errors in the worker's log, by kind (``Server.log_summary``).
    """

    case: WorkerCase
    held: int
    rss_per_socket_kb: float
    threads: int
    fds_per_socket: float
    callback: Latency
    callbacks_unanswered: int
    log_summary: dict[str, int]


def worker_cases(sockets: int) -> list[WorkerCase]:
    """The three cases: gevent and gthread (given enough threads) holding ``sockets`` each,
    and gthread with the README's 200 threads holding 250."""
    gthread = ("--worker-class", "gthread", "--threads")
    return [
        WorkerCase("gevent (as deployed)", (), sockets),
        WorkerCase(
            f"gthread, {sockets + SPARE_THREADS} threads",
            (*gthread, str(sockets + SPARE_THREADS)),
            sockets,
        ),
        WorkerCase(
            f"gthread, {EXHAUSTION_THREADS} threads",
            (*gthread, str(EXHAUSTION_THREADS)),
            EXHAUSTION_SOCKETS,
            attempts=1,
        ),
    ]


async def measure_worker_model(
    case: WorkerCase, redis_url: str, store: LoginStore, log_path: Path, rate: float
) -> WorkerModelResult:
    """Run one worker under ``case``, open its sockets, and measure it holding them."""
    browsers = seed_browsers(store, case.sockets + 1, expire_seconds=900)
    with Server(log_path, bench_settings(redis_url), worker_args=case.worker_args) as server:
        warm_up = WaitingPage(browsers.pop(), server.origin)
        await warm_up.open()  # the app loaded, its hub listening
        await warm_up.close()
        rss, fds = server.rss_bytes(), server.open_files()
        pages = [WaitingPage(browser, server.origin, OPEN_TIMEOUT_SECONDS) for browser in browsers]
        opened = await open_pages(pages, rate, case.attempts)
        held = max(opened.held, 1)
        rss_per_socket_kb = (server.rss_bytes() - rss) / held / 1024
        fds_per_socket = (server.open_files() - fds) / held
        threads = sum(server.threads())
        callback, unanswered = await _time_callbacks(server.port)
        await close_pages(pages)
        return WorkerModelResult(
            case=case,
            held=opened.held,
            rss_per_socket_kb=rss_per_socket_kb,
            threads=threads,
            fds_per_socket=fds_per_socket,
            callback=callback,
            callbacks_unanswered=unanswered,
            log_summary=server.log_summary(),
        )


async def _time_callbacks(port: int) -> tuple[Latency, int]:
    """Post ``CALLBACKS`` text callbacks at once, each on a new connection.

    Returns:
        ``(latency of those answered, how many were not)``.
    """
    answers = await asyncio.gather(*(_post_once(port) for _ in range(CALLBACKS)))
    seconds = [answer for answer in answers if answer is not None]
    return Latency.of(seconds), len(answers) - len(seconds)


async def _post_once(port: int) -> float | None:
    """Post one text callback on a new connection: its round trip in seconds, or None when it
    was not answered "success" in time."""
    connection = HttpConnection(port)
    try:
        response = await post(connection, text())
    except (ConnectionError, TimeoutError):
        return None
    finally:
        await connection.close()
    return response.seconds if response.status == 200 and response.body == b"success" else None
