"""QR creations through the real API, and one sign-in through every public step.

Each creation is a new browser with an empty cookie jar: ``POST /api/login/qrcode`` from the
site's own origin makes an attempt, asks the (emulated) WeChat for a QR code, renders it, and
sets the binding cookie.
"""

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

from app.views.cookies import BROWSER_COOKIE

from .httpclient import HttpConnection
from .pages import Browser, WaitingPage
from .stats import CpuMeter, CpuUsage, Latency
from .wechat import post, scan

#: How long the sign-in may wait for its "confirmed" frame, in seconds.
SIGN_IN_SECONDS = 5.0


@dataclass(frozen=True)
class QrResult:
    """QR codes created through the API.

    Attributes:
        asked: creations asked for.
        browsers: the browsers created (their binding cookie and scene).
        seconds: wall-clock time of the whole run.
        latency: request to response, for successful creations.
        cpu: CPU used meanwhile.
    """

    asked: int
    browsers: list[Browser]
    seconds: float
    latency: Latency
    cpu: CpuUsage

    @property
    def rate(self) -> float:
        """Creations per second."""
        return len(self.browsers) / self.seconds

    @property
    def failed(self) -> int:
        """Creations that did not answer 200 with a scene and a binding cookie."""
        return self.asked - len(self.browsers)


async def measure_qr_creations(
    port: int, origin: str, count: int, concurrency: int, meter: CpuMeter
) -> QrResult:
    """Create ``count`` QR codes, each for a new browser, ``concurrency`` at a time."""
    queue = iter(range(count))
    cpu_start = meter.sample()
    started = time.perf_counter()
    results = await asyncio.gather(*(_create_all(port, origin, queue) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    cpu = meter.since(cpu_start)
    created = [item for result in results for item in result]
    return QrResult(
        asked=count,
        browsers=[browser for browser, _ in created],
        seconds=seconds,
        latency=Latency.of([latency for _, latency in created]),
        cpu=cpu,
    )


async def _create_all(port: int, origin: str, queue: Iterator[int]) -> list[tuple[Browser, float]]:
    """Create QR codes for new browsers until ``queue`` is empty: each browser and its latency."""
    connection = HttpConnection(port)
    created = []
    for _ in queue:
        try:
            response = await connection.request(
                "POST", "/api/login/qrcode", headers={"Origin": origin}
            )
        except (ConnectionError, TimeoutError):
            continue
        secret = response.cookies.get(BROWSER_COOKIE)
        if response.status == 200 and secret:
            created.append((Browser(secret, json.loads(response.body)["scene"]), response.seconds))
    await connection.close()
    return created


async def sign_in(port: int, origin: str, browser: Browser) -> str:
    """Sign ``browser`` in through every public step: its page waits on the socket, WeChat
    posts the scan, the page redeems the code.

    Returns:
        The ``Cookie`` header of the signed-in browser (binding and session cookies).

    Raises:
        RuntimeError: a step failed (the message says which).
    """
    page = WaitingPage(browser, origin)
    await page.open()
    if page.failure:
        raise RuntimeError(f"sign-in: the page's socket failed: {page.failure}")
    connection = HttpConnection(port)
    try:
        await post(connection, scan(browser.scene))
        try:
            await asyncio.wait_for(page.finished.wait(), SIGN_IN_SECONDS)
        except TimeoutError:
            raise RuntimeError("sign-in: the scan reached no page") from None
        frame = page.terminal_frames[0][1]
        if frame["status"] != "confirmed":
            raise RuntimeError(f"sign-in: the page was told {frame}")
        response = await connection.request(
            "POST",
            "/api/login/redeem",
            headers={
                "Origin": origin,
                "Cookie": browser.cookie,
                "Content-Type": "application/json",
            },
            body=json.dumps({"code": frame["code"]}).encode(),
        )
    finally:
        await connection.close()
        await page.close()
    session = {name: value for name, value in response.cookies.items() if name != BROWSER_COOKIE}
    if response.status != 200 or not session:
        raise RuntimeError(f"sign-in: redeem answered {response.status} {response.body[:200]!r}")
    return "; ".join([browser.cookie, *(f"{name}={value}" for name, value in session.items())])
