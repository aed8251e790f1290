"""The one server launcher of the benchmark and the tests: gunicorn serving ``wsgi:app`` with
``gunicorn.conf.py`` on loopback, in a subprocess, as in production.

The tests' ``server_process`` fixture starts its servers with ``Server`` too; the benchmark adds
its settings (``bench_settings``) and reads the workers' memory, CPU and sockets.
"""

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.emulator import EMULATOR_API_BASE, EMULATOR_OPEN_BASE, EMULATOR_SETTINGS, EMULATOR_TOKEN

#: The server's SECRET_KEY: the benchmark signs its seeded browsers' binding values with it.
SECRET_KEY = "bench"

ROOT = Path(__file__).resolve().parent.parent

#: How long gunicorn may take to answer its first request, in seconds.
READY_SECONDS = 30.0
#: How long a stopping server may take (gunicorn.conf.py's graceful_timeout is 10 s).
STOP_SECONDS = 15.0
#: How much of the log a failed start shows, in characters.
LOG_TAIL_CHARACTERS = 4000
#: Log lines worth reporting: warnings and errors from gunicorn and the app, and the last line
#: of each traceback (``redis.exceptions.MaxConnectionsError: Too many connections``).
NOTEWORTHY_LINE = re.compile(
    r"\[(WARNING|ERROR|CRITICAL)\]|\s(WARNING|ERROR|CRITICAL)\s|^[\w.]+(Error|Exception)\b"
)
#: The start of a log line: the app's time stamp, or gunicorn's time stamp and pid.
_LINE_START = re.compile(r"^(\d{4}-\d\d-\d\d [\d:,]+ |\[[^]]*\] \[\d+\] )")
#: What varies between lines reporting the same thing: scenes, ids, numbers.
_VARYING = re.compile(r"[0-9a-f]{6,}|\d+")


def key_prefix(redis_url: str) -> str:
    """The server's ``REDIS_KEY_PREFIX`` on the database of ``redis_url``: ``bench:<db>:``.

    The benchmark seeds attempts and OIDC codes under it. Named after the database because
    pub/sub channels span a Redis server's databases: two runs on two databases (the suite's
    smoke run and a developer's) then do not hear each other's pushes.
    """
    return f"bench:{redis.connection.parse_url(redis_url).get('db', 0)}:"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_signing_key(path: Path) -> Path:
    """Write a new RSA 2048 private key to ``path`` (PEM), for ``OIDC_SIGNING_KEY``: as in
    production, every worker loads the same key at start-up, instead of each making one on its
    first token (development's key kept in Redis), which the token figures would count.

    Returns:
        ``path``.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def wechat_settings(redis_url: str) -> dict[str, str]:
    """Settings of the server that plays WeChat for the benchmark's deployment: the app in
    emulator mode (``bench_settings`` with no ``wechat``), its keys under a prefix of their
    own (``bench:<db>:wechat:``), so that the WeChat API's work runs and is measured apart from
    ours, as in production."""
    return {**bench_settings(redis_url), "REDIS_KEY_PREFIX": key_prefix(redis_url) + "wechat:"}


def bench_settings(
    redis_url: str,
    qr_expire_seconds: int = 900,
    signing_key: Path | None = None,
    wechat: str = "",
) -> dict[str, str]:
    """The benchmark's server settings: plaintext callbacks, no rate limits; the emulated
    account, answered by the emulator inside the server or by another server's.

    Args:
        redis_url: the Redis database the app uses.
        qr_expire_seconds: ``LOGIN_QR_EXPIRE_SECONDS``: longer than the run.
        signing_key: ``OIDC_SIGNING_KEY`` (``write_signing_key``); none: development's.
        wechat: the origin (``http://127.0.0.1:<port>``) of a server run with
            ``wechat_settings``, to call as WeChat with the emulated account's credentials,
            over HTTP as production calls WeChat; "": emulator mode, the API answered inside
            the server process.
    """
    if wechat:
        account = {
            "WECHAT_APP_ID": EMULATOR_SETTINGS["WECHAT_APP_ID"],
            "WECHAT_APP_SECRET": EMULATOR_SETTINGS["WECHAT_APP_SECRET"],
            "WECHAT_API_BASE": wechat + urlsplit(EMULATOR_API_BASE).path,
            "WECHAT_OPEN_BASE": wechat + EMULATOR_OPEN_BASE,
            "WECHAT_TOKEN": EMULATOR_TOKEN,
        }
    else:
        # Emulator mode, whatever this shell has set.
        account = {"WECHAT_APP_ID": "", "WECHAT_TOKEN": ""}
    return {
        "OIDC_SIGNING_KEY": str(signing_key or ""),
        "APP_ENV": "development",
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET_KEY,
        "REDIS_KEY_PREFIX": key_prefix(redis_url),
        "LOGIN_RATE_LIMIT": "off",
        # Every page of the load comes from loopback: one client, as the server sees it.
        "LOGIN_MAX_SOCKETS_PER_IP": "0",
        "LOGIN_QR_EXPIRE_SECONDS": str(qr_expire_seconds),
        # Plaintext callbacks, whatever this shell has set.
        "WECHAT_ENCODING_AES_KEY": "",
        **account,
    }


class Server:
    """``python -m gunicorn --config gunicorn.conf.py ... wsgi:app`` on a free port of 127.0.0.1.

    The arbiter leads a process group of its own with its workers, so a test can freeze or kill
    a whole server at once, and nothing of it outlives ``stop``. Only ``gunicorn.conf.py`` and
    ``settings`` decide, as in production: ``GUNICORN_*`` and ``LOGIN_MAX_SOCKETS`` (computed by
    its ``on_starting`` hook) are dropped from this process's environment.

    Args:
        log_path: where gunicorn's and the app's output go (appended).
        settings: environment variables set for the app, e.g. ``{"REDIS_URL": ...}``.
        workers: worker processes behind the one port.
        worker_args: command-line settings added to the deployed ones, e.g.
            ``("--worker-class", "gthread", "--threads", "200")``; none: as deployed.
    """

    def __init__(
        self,
        log_path: Path,
        settings: dict[str, str],
        *,
        workers: int = 1,
        worker_args: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "gunicorn.conf.py",
            *worker_args,
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{self.port}",
            # Not the shared ~/.gunicorn control socket: each server would take it over.
            "--no-control-socket",
            "wsgi:app",
        ]
        self._settings = settings
        self._process: subprocess.Popen | None = None

    @property
    def origin(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>``: also the site's own origin, which the
        server requires on POSTs and handshakes."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The arbiter's process id (its workers are its children); None before ``start``."""
        return self._process.pid if self._process else None

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start gunicorn and wait until it answers HTTP.

        Raises:
            RuntimeError: it exited, or did not answer within ``READY_SECONDS``; the message
                holds the end of its log.
        """
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("GUNICORN_") and name != "LOGIN_MAX_SOCKETS"
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env={**env, **self._settings},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_SECONDS
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop(quick=True)
                tail = self.log()[-LOG_TAIL_CHARACTERS:]
                raise RuntimeError(f"gunicorn on port {self.port} did not start:\n{tail}")
            time.sleep(0.1)

    def stop(self, *, quick: bool = False) -> None:
        """Stop gunicorn, and kill what is left of it after ``STOP_SECONDS``.

        Args:
            quick: SIGQUIT, which drops open connections at once, instead of SIGTERM, which
                lets them finish (up to gunicorn.conf.py's graceful_timeout).
        """
        if self._process is None:
            return
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGCONT)  # a frozen server cannot stop
            self._process.send_signal(signal.SIGQUIT if quick else signal.SIGTERM)
            try:
                self._process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(STOP_SECONDS)
        # Workers outliving a killed arbiter: gone with their group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole server: its arbiter and every worker.

        ``SIGSTOP`` freezes it (its sockets stay open, it answers nothing); ``SIGKILL`` kills
        it as a crash would (the kernel closes its sockets), and is waited for.
        """
        if self._process is None:
            return
        os.killpg(self._process.pid, signum)
        if signum == signal.SIGKILL:
            self._process.wait(STOP_SECONDS)

    def log(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/api/me")
            connection.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            connection.close()

    def workers(self) -> list[psutil.Process]:
        """The worker processes (the master's children)."""
        if self._process is None:
            return []
        try:
            return psutil.Process(self._process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        """Resident memory of all workers together, in bytes."""
        return sum(worker.memory_info().rss for worker in self.workers())

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the master and its workers so far, in seconds."""
        processes = [psutil.Process(self._process.pid), *self.workers()]
        return sum(sum(process.cpu_times()[:2]) for process in processes)

    def threads(self) -> list[int]:
        """OS threads in each worker."""
        return [worker.num_threads() for worker in self.workers()]

    def open_files(self) -> int:
        """File descriptors open in all workers together."""
        return sum(worker.num_fds() for worker in self.workers())

    def connection_owners(self) -> dict[int, int]:
        """Which worker holds each client connection: client port -> worker pid."""
        owners = {}
        for worker in self.workers():
            for connection in worker.net_connections(kind="tcp4"):
                if connection.raddr and connection.laddr.port == self.port:
                    owners[connection.raddr.port] = worker.pid
        return owners

    def log_summary(self) -> dict[str, int]:
        """The warnings and errors in the captured log: each kind of line (its time stamp
        dropped, ids and numbers shown as ``#``) -> how many lines."""
        kinds: dict[str, int] = {}
        for line in self.log().splitlines():
            if NOTEWORTHY_LINE.search(line):
                kind = _VARYING.sub("#", _LINE_START.sub("", line)).strip()
                kinds[kind] = kinds.get(kind, 0) + 1
        return kinds
