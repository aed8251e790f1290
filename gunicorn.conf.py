"""The production deployment: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every setting here can be overridden on the command line (``--workers 4``, ``--bind
0.0.0.0:9000``) or by the environment variables read below (or ``GUNICORN_CMD_ARGS``).

Why gevent: a waiting login page holds a websocket for minutes. Under the threaded worker each
flask-sock socket holds two OS threads for its whole life, and once sockets use up the thread
pool, WeChat's callback waits for a free thread, past WeChat's 5 s. gevent holds thousands of
sockets in one thread, each on a couple of small greenlets. The figures behind the choice are
in docs/benchmarks.md (``python -m bench``).
"""

import gc
import logging
import os
import resource
import tempfile
import threading
import time

log = logging.getLogger("gunicorn.error")

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
#: One process per core: each is single-threaded under gevent.
workers = int(os.environ.get("GUNICORN_WORKERS", os.cpu_count() or 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
#: Connections one worker holds at once (gevent's default, 1000, is far too low for sockets).
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "6000"))
#: Connections kept free in every worker for WeChat's callback and the JSON API.
RESERVED_CONNECTIONS = 200
#: File descriptors budgeted per waiting socket: one was measured under this worker
#: (docs/benchmarks.md); the second is headroom, as simple-websocket duplicates the socket
#: under other gevent servers.
DESCRIPTORS_PER_SOCKET = 2
#: The garbage collector's thresholds in each worker (``gc.set_threshold``). Python's default
#: third threshold, 10, lets a full collection, which walks every object of every socket the
#: worker holds, run every few seconds while sockets open: measured at 10,000 sockets on 2
#: workers, 38 full collections of up to 2.5 s each (26.8 s in all) while they opened and
#: 500 scans ran; with 1000, none (docs/benchmarks.md). Young collections still run as
#: often, and they collect the request's cycles; a closed socket leaves almost no cyclic
#: garbage (a full collection after 2,000 had closed found 2,871 objects), so little waits
#: for the rarer full collections.
GC_THRESHOLDS = tuple(
    int(value) for value in os.environ.get("GUNICORN_GC_THRESHOLDS", "700,10,1000").split(",")
)
#: How often a worker checks whether it has been told to stop, in seconds.
GOING_AWAY_CHECK_SECONDS = 0.1
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG")  # unset: no access log

if os.environ.get("LOG_FORMAT") == "json":
    # gunicorn's own lines as JSON too, in the fields of app/logs.py (not imported here: the
    # app must not be imported before on_starting has set up the metrics directory). The root
    # logger is left to the app, which configures it in each worker.
    _json = {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
        "rename_fields": {
            "asctime": "time",
            "levelname": "level",
            "name": "logger",
            "process": "pid",
        },
    }
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": []},
        "formatters": {"json": _json},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json"},
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        },
    }


def on_starting(server) -> None:
    """Prepare the workers: metrics shared between them, and sockets that fit in the
    open-file limit."""
    # Each worker writes its metrics here; /metrics on any worker adds them all up. Set
    # before any worker imports prometheus_client.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="wechat-login-"))
    _fit_sockets_to_open_file_limit(server)


def post_worker_init(worker) -> None:
    """Once the worker is told to stop (SIGTERM: a stop, a restart, the old workers of a HUP
    reload; or max_requests), close every waiting login socket with 1001 "going away" at once,
    so that its page reconnects to a live worker instead of waiting out ``graceful_timeout``.
    Nothing is lost: the state is in Redis."""
    service = worker.wsgi.extensions["wechat_login"]  # worker.wsgi is wsgi:app
    _freeze_what_was_loaded()

    def watch() -> None:
        # Watched, not hooked into the signal handler: under gevent a signal handler runs in
        # the event loop, where nothing may block (not even starting a thread).
        while worker.alive:
            time.sleep(GOING_AWAY_CHECK_SECONDS)
        service.go_away()

    threading.Thread(target=watch, name="going-away", daemon=True).start()


def _freeze_what_was_loaded() -> None:
    """Move everything the worker loaded (modules, the app, its clients: hundreds of thousands
    of objects that live as long as the worker) out of the garbage collector's sight, so that
    no collection walks them again. Collected first, so that no garbage is frozen with them.
    Every full collection otherwise pauses the whole worker, each of its sockets included, for
    as long as walking all of them takes (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (waiting sockets) from the metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _fit_sockets_to_open_file_limit(server) -> None:
    """Raise the open-file limit as far as allowed, and cap sockets to what fits in it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = DESCRIPTORS_PER_SOCKET * server.cfg.worker_connections + 100
    if soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    sockets = min(
        server.cfg.worker_connections - RESERVED_CONNECTIONS,
        (soft - 100) // DESCRIPTORS_PER_SOCKET,
    )
    if soft < wanted:
        log.error(
            "open-file limit is %s (hard %s), below the %s that %s connections per worker need: "
            "each worker will hold at most %s waiting sockets and refuse more with 1013. "
            "Raise it (ulimit -n, or LimitNOFILE= in systemd).",
            soft,
            hard,
            wanted,
            server.cfg.worker_connections,
            sockets,
        )
    # Read by config.py in each worker (they import the app after this runs).
    os.environ.setdefault("LOGIN_MAX_SOCKETS", str(max(sockets, 1)))
    log.info(
        "open-file limit %s; up to %s waiting sockets per worker",
        soft,
        os.environ["LOGIN_MAX_SOCKETS"],
    )
