"""The deployment under test: gunicorn started as in production, on loopback, in a subprocess."""

import http.client
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

#: The server's SECRET_KEY: the benchmark signs its seeded browsers' binding values with it.
SECRET_KEY = "bench"
#: The server's REDIS_KEY_PREFIX: the benchmark seeds attempts under it.
KEY_PREFIX = "bench:"

ROOT = Path(__file__).resolve().parent.parent

#: How long gunicorn may take to answer its first request, in seconds.
READY_SECONDS = 30.0
#: How long a stopping server may take (gunicorn.conf.py's graceful_timeout is 10 s).
STOP_SECONDS = 15.0
#: Log lines worth reporting: warnings and errors from gunicorn and the app, and the last line
#: of each traceback (``redis.exceptions.MaxConnectionsError: Too many connections``).
NOTEWORTHY_LINE = re.compile(
    r"\[(WARNING|ERROR|CRITICAL)\]|\s(WARNING|ERROR|CRITICAL)\s|^[\w.]+(Error|Exception)\b"
)
#: The start of a log line: the app's time stamp, or gunicorn's time stamp and pid.
_LINE_START = re.compile(r"^(\d{4}-\d\d-\d\d [\d:,]+ |\[[^]]*\] \[\d+\] )")
#: What varies between lines reporting the same thing: scenes, ids, numbers.
_VARYING = re.compile(r"[0-9a-f]{6,}|\d+")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``python -m gunicorn -c gunicorn.conf.py ... wsgi:app`` in emulator mode on 127.0.0.1.

    Args:
        redis_url: the Redis database the app uses.
        log_path: where gunicorn's and the app's output go.
        workers: worker processes.
        worker_args: command-line settings added to the deployed ones, e.g.
            ``["--worker-class", "gthread", "--threads", "200"]``; none: as deployed.
        qr_expire_seconds: ``LOGIN_QR_EXPIRE_SECONDS``: longer than the run.
    """

    def __init__(
        self,
        redis_url: str,
        log_path: Path,
        *,
        workers: int = 2,
        worker_args: tuple[str, ...] = (),
        qr_expire_seconds: int = 900,
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            *worker_args,
            "wsgi:app",
        ]
        self._settings = {
            "APP_ENV": "development",
            "REDIS_URL": redis_url,
            "SECRET_KEY": SECRET_KEY,
            "REDIS_KEY_PREFIX": KEY_PREFIX,
            "LOGIN_RATE_LIMIT": "off",
            # Every page of the load comes from loopback: one client, as the server sees it.
            "LOGIN_MAX_SOCKETS_PER_IP": "0",
            "LOGIN_QR_EXPIRE_SECONDS": str(qr_expire_seconds),
            # Emulator mode and plaintext callbacks, whatever this shell has set.
            "WECHAT_APP_ID": "",
            "WECHAT_TOKEN": "",
            "WECHAT_ENCODING_AES_KEY": "",
        }
        self._process: subprocess.Popen | None = None

    @property
    def origin(self) -> str:
        """The site's own origin, which the server requires on POSTs and handshakes."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start gunicorn and wait until it answers HTTP.

        Raises:
            RuntimeError: it exited, or did not answer within ``READY_SECONDS``.
        """
        # Only gunicorn.conf.py decides, as in production: no GUNICORN_* overrides, and
        # LOGIN_MAX_SOCKETS computed by its on_starting hook.
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
            )
        deadline = time.monotonic() + READY_SECONDS
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start; see {self.log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop gunicorn gracefully, or kill it after ``STOP_SECONDS``."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            for worker in self.workers():
                worker.kill()
            self._process.kill()
            self._process.wait()

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
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
        for line in self.log_path.read_text(errors="replace").splitlines():
            if NOTEWORTHY_LINE.search(line):
                kind = _VARYING.sub("#", _LINE_START.sub("", line)).strip()
                kinds[kind] = kinds.get(kind, 0) + 1
        return kinds
