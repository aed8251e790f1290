"""A keep-alive HTTP/1.1 client on asyncio streams.

Light enough that one process can load a 2-core server without being the bottleneck (no
requests or aiohttp here): it speaks just what the benchmark needs, to 127.0.0.1 only.
"""

import asyncio
import time
from dataclasses import dataclass, field

#: gunicorn.conf.py's keepalive is 5 s: reconnect before the server closes an idle connection.
IDLE_RECONNECT_SECONDS = 4.0
#: How long one request may take before it counts as failed, in seconds.
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Response:
    """An HTTP response, stamped with ``time.perf_counter()`` seconds.

    Attributes:
        status: the status code.
        headers: lower-case name -> value (the last one, for repeated names).
        cookies: name -> value from every ``Set-Cookie``.
        body: the body bytes.
        sent_at: when the request's first byte was written.
        received_at: when the whole response had been read.
    """

    status: int
    headers: dict[str, str]
    cookies: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    sent_at: float = 0.0
    received_at: float = 0.0

    @property
    def seconds(self) -> float:
        """The round trip, in seconds."""
        return self.received_at - self.sent_at


class HttpConnection:
    """One keep-alive connection to ``127.0.0.1:port``; concurrent requests take turns.

    Args:
        port: the server's port.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        self._turn = asyncio.Lock()

    @property
    def local_port(self) -> int | None:
        """This side's port while connected (the server sees it as the client's port)."""
        return self._writer.get_extra_info("sockname")[1] if self._writer else None

    async def request(
        self, method: str, target: str, *, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        """Send one request and read its response.

        Args:
            method, target: e.g. ``"GET"``, ``"/api/me"``.
            headers: extra request headers.
            body: the request body.

        Raises:
            ConnectionError: the connection failed or closed before a whole response.
            TimeoutError: no whole response within ``REQUEST_TIMEOUT_SECONDS``.
        """
        async with self._turn:
            lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{self._port}"]
            if body or method != "GET":
                lines.append(f"Content-Length: {len(body)}")
            lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
            try:
                await self._connect_if_needed()
                sent_at = time.perf_counter()
                self._writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    response = await self._read_response(sent_at)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                await self.close()
                raise ConnectionError(f"{method} {target}: {exc!r}") from exc
            except TimeoutError:
                await self.close()
                raise
            self._last_used = time.monotonic()
            if response.headers.get("connection", "").lower() == "close":
                await self.close()
            return response

    async def _connect_if_needed(self) -> None:
        if self._writer is None or time.monotonic() - self._last_used > IDLE_RECONNECT_SECONDS:
            await self.close()
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)

    async def _read_response(self, sent_at: float) -> Response:
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.rstrip("\r\n").split("\r\n")
        headers, cookies = {}, {}
        for line in header_lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = value
            if name == "set-cookie":
                cookie_name, _, rest = value.partition("=")
                cookies[cookie_name] = rest.split(";", 1)[0]
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        else:  # HTTP/1.1 without a length: the body runs to the end of the connection
            body = await self._reader.read()
            headers["connection"] = "close"
        return Response(
            status=int(status_line.split(" ", 2)[1]),
            headers=headers,
            cookies=cookies,
            body=body,
            sent_at=sent_at,
            received_at=time.perf_counter(),
        )

    async def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
