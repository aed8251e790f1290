"""The benchmark's phases, in order: the deployment under load, then the worker models."""

import asyncio
import functools
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis

from app.login.store import LoginStore

from .bursts import BurstResult, burst
from .gcpauses import Pauses, read_gc_pauses
from .httpclient import HttpConnection, Response
from .machine import Machine, describe_machine, raise_open_file_limit
from .oidc import OidcResult, measure_oidc
from .options import Options
from .pages import OpenResult, WaitingPage, close_pages, open_pages, seed_browsers
from .polling import POLL_INTERVALS_SECONDS, PollingResult, measure_polling
from .push import Floor, PushResult, measure_floor, measure_push
from .qrcodes import QrResult, measure_qr_creations, sign_in
from .server import Server, bench_settings, key_prefix, wechat_settings, write_signing_key
from .stats import CpuMeter, CpuUsage, busy_seconds
from .wechat import SIGNED_IN_REPLY, post, scan, text
from .workers import WorkerModelResult, measure_worker_model, worker_cases

#: The whole run stops by itself after this long, in seconds.
MAX_RUN_SECONDS = 20 * 60
#: Life of every attempt (LOGIN_QR_EXPIRE_SECONDS), longer than the run, in seconds.
QR_EXPIRE_SECONDS = 900
#: How long the warm-up may take to reach every worker, in seconds.
WARM_UP_SECONDS = 15.0
#: Pages opened per warm-up round.
WARM_UP_PAGES = 10
#: How long to keep watching the pages after the last scan, for late duplicates: more than
#: the hub's 1-s sweep, in seconds.
DUPLICATE_GRACE_SECONDS = 3.0
#: QR creations in flight at once.
QR_CONCURRENCY = 16
#: How long the machine's load from other work is sampled before the run, in seconds.
BACKGROUND_SECONDS = 3.0
#: A server is quiet under this many cores busy (its sockets' pings and sweeps cost less).
SETTLED_CORES = 0.05
#: How long to wait at most for the server to be quiet after closing the sockets, in seconds.
SETTLE_SECONDS = 15.0


@dataclass(frozen=True)
class Holding:
    """The deployment holding its waiting sockets.

    Attributes:
        opened: how opening them went.
        per_worker: sockets each worker holds.
        rss_per_socket_kb: the workers' added resident memory per socket, KiB.
        fds_per_socket: the workers' added file descriptors per socket.
        threads: OS threads in each worker.
        client_rss_mb: this load generator's resident memory, MiB.
    """

    opened: OpenResult
    per_worker: list[int]
    rss_per_socket_kb: float
    fds_per_socket: float
    threads: list[int]
    client_rss_mb: float


@dataclass(frozen=True)
class Deployment:
    """The deployed server (2 gevent workers) through every phase.

    Attributes:
        holding: the waiting sockets held, and their cost.
        idle: CPU used while they all wait.
        floor, push: scan-to-push latency and its floor.
        gc_pauses: the workers' garbage-collection pauses by generation, from their start to
            the end of the scans (opening the sockets included).
        floor_burst: the floor's bare HTTP round trip (``GET /api/me``, 401) in a burst like
            the callbacks', for the CPU of a request that does nothing.
        duplicated: pages told their outcome twice, or told one without a scan.
        dropped: pages whose socket ended without an outcome before we closed it.
        bursts: signed callbacks per second.
        qrcodes: QR creations through the API.
        polling: the peers' stand-in: polling at each of ``POLL_INTERVALS_SECONDS``.
        oidc: the OpenID provider's code exchanges and userinfo reads.
        log_summary: warnings and errors in the server's log, by kind (``Server.log_summary``).
    """

    holding: Holding
    idle: CpuUsage
    floor: Floor
    push: PushResult
    gc_pauses: dict[int, Pauses]
    floor_burst: BurstResult
    duplicated: int
    dropped: int
    bursts: list[BurstResult]
    qrcodes: QrResult
    polling: list[PollingResult]
    oidc: OidcResult
    log_summary: dict[str, int]


@dataclass(frozen=True)
class Results:
    """Everything one run measured, and what it ran on.

    Attributes:
        options, command: what was asked, and how.
        started_at: when the run started.
        seconds: how long it took, wall-clock seconds.
        background_load: cores the machine kept busy before the run (other work).
        machine: what it ran on.
        open_file_limit: this process's ``(soft, hard)`` open-file limit, after raising it.
        deployment: the deployed server's figures.
        worker_models: gevent against gthread.
        log_dir: where the servers' logs are.
    """

    options: Options
    command: str
    started_at: datetime
    seconds: float
    background_load: float
    machine: Machine
    open_file_limit: tuple[int, int]
    deployment: Deployment
    worker_models: list[WorkerModelResult]
    log_dir: Path


async def run_benchmark(options: Options, command: str) -> Results:
    """Run every phase; stops by itself after ``MAX_RUN_SECONDS``.

    Args:
        options: what to measure.
        command: the command line, for the report.

    Raises:
        TimeoutError: the run took longer than ``MAX_RUN_SECONDS``.
        RuntimeError: the server did not start, or a phase could not run.
    """
    open_file_limit = raise_open_file_limit()
    redis_url = options.redis_url
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    store = LoginStore(client, prefix=key_prefix(redis_url))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    started_at, started = datetime.now(UTC), time.monotonic()
    background_load = await _machine_load(BACKGROUND_SECONDS)
    async with asyncio.timeout(MAX_RUN_SECONDS):
        deployment = await _measure_deployment(options, redis_url, client, store, log_dir)
        worker_models = [
            await measure_worker_model(
                case, redis_url, store, log_dir / f"worker-model-{index}.log", options.connect_rate
            )
            for index, case in enumerate(worker_cases(options.compare_sockets))
        ]
    return Results(
        options=options,
        command=command,
        started_at=started_at,
        seconds=time.monotonic() - started,
        background_load=background_load,
        machine=describe_machine(client),
        open_file_limit=open_file_limit,
        deployment=deployment,
        worker_models=worker_models,
        log_dir=log_dir,
    )


async def _measure_deployment(
    options: Options, redis_url: str, client: redis.Redis, store: LoginStore, log_dir: Path
) -> Deployment:
    """Start the deployment as in production and take it through every phase."""
    signing_key = write_signing_key(log_dir / "oidc-signing-key.pem")
    with (
        Server(log_dir / "wechat.log", wechat_settings(redis_url)) as wechat,
        Server(
            log_dir / "gunicorn.log",
            bench_settings(redis_url, QR_EXPIRE_SECONDS, signing_key, wechat.origin),
            workers=2,
        ) as server,
    ):
        meter = CpuMeter(server.cpu_seconds, client, wechat.cpu_seconds)
        await _warm_up(server, store)
        pages, holding = await _hold_sockets(server, store, options)
        idle = await _idle(meter, options.idle_seconds)
        floor = await measure_floor(redis_url, server.port, options.floor_samples)
        scanned = [page for page in pages if page.waiting][: options.scans]
        push = await measure_push(server, scanned, options.scan_rate, meter)
        gc_pauses = await read_gc_pauses(server.port)
        floor_burst = await burst(
            server.port,
            "bare HTTP round trips (GET /api/me, 401)",
            [_anonymous_me] * options.burst_callbacks,
            lambda response: response.status == 401,
            options.burst_concurrency,
            meter,
        )
        bursts = await _bursts(server, store, options, meter)
        await asyncio.sleep(DUPLICATE_GRACE_SECONDS)
        duplicated = count_duplicates(pages, scanned)
        dropped = sum(page.dropped for page in pages)
        await close_pages(pages)
        await _settle(meter)  # the workers tearing down the sockets is not a page load's cost
        qrcodes = await measure_qr_creations(
            server.port, server.origin, options.qrcodes, QR_CONCURRENCY, meter
        )
        if not qrcodes.browsers:
            raise RuntimeError("no QR code could be created through the API")
        cookie = await sign_in(server.port, server.origin, qrcodes.browsers[0])
        polling = [
            await measure_polling(
                server.port, cookie, options.pollers, interval, options.poll_seconds, meter
            )
            for interval in POLL_INTERVALS_SECONDS
        ]
        oidc = await measure_oidc(
            server.port,
            client,
            key_prefix(redis_url),
            cookie,
            options.oidc_codes,
            options.burst_concurrency,
            meter,
        )
        return Deployment(
            holding=holding,
            idle=idle,
            floor=floor,
            push=push,
            gc_pauses=gc_pauses,
            floor_burst=floor_burst,
            duplicated=duplicated,
            dropped=dropped,
            bursts=bursts,
            qrcodes=qrcodes,
            polling=polling,
            oidc=oidc,
            log_summary=server.log_summary(),
        )


async def _warm_up(server: Server, store: LoginStore) -> None:
    """Open pages until every worker holds one, then sign them in: every worker has loaded the
    app, started its hub, and served a callback (the access_token is fetched and cached).

    Raises:
        RuntimeError: a worker took no socket within ``WARM_UP_SECONDS``.
    """
    deadline = time.monotonic() + WARM_UP_SECONDS
    pages: list[WaitingPage] = []
    while len(set(server.connection_owners().values())) < len(server.workers()):
        if time.monotonic() > deadline:
            raise RuntimeError("warm-up: a worker took no socket")
        browsers = seed_browsers(store, WARM_UP_PAGES, QR_EXPIRE_SECONDS)
        batch = [WaitingPage(browser, server.origin) for browser in browsers]
        await open_pages(batch, rate=WARM_UP_PAGES)
        pages += batch
    connection = HttpConnection(server.port)
    for page in pages:
        await post(connection, scan(page.browser.scene))
    await connection.close()
    await close_pages(pages)


async def _hold_sockets(
    server: Server, store: LoginStore, options: Options
) -> tuple[list[WaitingPage], Holding]:
    """Seed ``options.sockets`` attempts, open their pages, and measure what holding costs."""
    browsers = seed_browsers(store, options.sockets, QR_EXPIRE_SECONDS)
    rss, fds = server.rss_bytes(), server.open_files()
    pages = [WaitingPage(browser, server.origin) for browser in browsers]
    opened = await open_pages(pages, options.connect_rate)
    held = max(opened.held, 1)
    owners = server.connection_owners()
    per_worker = Counter(owners.get(page.local_port) for page in pages if page.waiting)
    holding = Holding(
        opened=opened,
        per_worker=[per_worker[worker.pid] for worker in server.workers()],
        rss_per_socket_kb=(server.rss_bytes() - rss) / held / 1024,
        fds_per_socket=(server.open_files() - fds) / held,
        threads=server.threads(),
        client_rss_mb=psutil.Process().memory_info().rss / 2**20,
    )
    return pages, holding


async def _machine_load(seconds: float) -> float:
    """Cores the whole machine keeps busy over ``seconds``, before we load it."""
    start = busy_seconds()
    await asyncio.sleep(seconds)
    return (busy_seconds() - start) / seconds


async def _settle(meter: CpuMeter) -> None:
    """Wait until the server is quiet (under ``SETTLED_CORES`` over half a second), at most
    ``SETTLE_SECONDS``."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        start = meter.sample()
        await asyncio.sleep(0.5)
        if meter.since(start).server < SETTLED_CORES:
            return


async def _idle(meter: CpuMeter, seconds: float) -> CpuUsage:
    """CPU used while every socket waits and nothing happens."""
    start = meter.sample()
    await asyncio.sleep(seconds)
    return meter.since(start)


async def _bursts(
    server: Server, store: LoginStore, options: Options, meter: CpuMeter
) -> list[BurstResult]:
    """Two bursts of signed callbacks: scans that sign in (seeded attempts nobody's page waits
    on), then text messages (signature, replay check, parse, ``success``)."""
    count = options.burst_callbacks
    browsers = seed_browsers(store, count, QR_EXPIRE_SECONDS)
    scans = [functools.partial(post, message=scan(browser.scene)) for browser in browsers]
    texts = [functools.partial(post, message=text()) for _ in range(count)]
    concurrency = options.burst_concurrency
    return [
        await burst(
            server.port,
            "scans that sign in",
            scans,
            lambda response: response.status == 200 and SIGNED_IN_REPLY in response.body,
            concurrency,
            meter,
        ),
        await burst(
            server.port,
            "text messages",
            texts,
            lambda response: response.status == 200 and b"success" in response.body,
            concurrency,
            meter,
        ),
    ]


async def _anonymous_me(connection: HttpConnection) -> Response:
    """The floor's request: ``GET /api/me`` with no session, answered 401 without Redis."""
    return await connection.request("GET", "/api/me")


def count_duplicates(pages: Sequence[WaitingPage], scanned: Sequence[WaitingPage]) -> int:
    """Pages told more than once how their login ended, or told anything after "waiting"
    though nobody scanned them."""
    scenes = {page.browser.scene for page in scanned}
    return sum(
        len(page.terminal_frames) > 1 or (page.browser.scene not in scenes and len(page.frames) > 1)
        for page in pages
    )
