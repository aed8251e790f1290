"""QR creations through the real API, their reloads, the QR renderers side by side, and one
sign-in through every public step.

Each creation is a new browser with an empty cookie jar: ``POST /api/login/qrcode`` from the
site's own origin makes an attempt, asks the (emulated) WeChat for a QR code, renders it, and
sets the binding cookie. A reload is the same browser asking again: it gets its live attempt.
"""

import asyncio
import base64
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version

import qrcode
import qrcode.image.svg
import segno

from app.login.qrimage import qr_data_uri
from app.views.cookies import BROWSER_COOKIE

from .httpclient import HttpConnection
from .pages import Browser, WaitingPage
from .stats import CpuMeter, CpuUsage, Latency
from .wechat import post, scan

#: How long the sign-in may wait for its "confirmed" frame, in seconds.
SIGN_IN_SECONDS = 5.0
#: A ``url`` as WeChat's ``qrcode/create`` answers it. The emulator's have its form, on the
#: server's own address (``app.emulator.phone.qr_url``): a few characters longer, the same
#: symbol version.
WECHAT_QR_URL = "http://weixin.qq.com/q/02Uh_NljThcGi10000g07t"
#: Renders of each url by each renderer; the median is reported.
RENDER_REPEATS = 25


@dataclass(frozen=True)
class RendererTiming:
    """CPU per render of one QR renderer, in ms (medians of ``RENDER_REPEATS``).

    Attributes:
        renderer: its name and settings.
        in_app: whether the app renders with it (``app.login.qrimage``).
        wechat_ms: for ``WECHAT_QR_URL``.
        emulator_ms: for the url this run's QR creations got from the emulator.
    """

    renderer: str
    in_app: bool
    wechat_ms: float
    emulator_ms: float


@dataclass(frozen=True)
class QrResult:
    """QR codes created through the API.

    Attributes:
        asked: creations asked for.
        browsers: the browsers created (their binding cookie and scene).
        seconds: wall-clock time of the whole run.
        latency: request to response, for successful creations.
        cpu: CPU used meanwhile.
        reloaded: browsers that asked again and got their attempt back (same scene).
        reload_latency: request to response, for those.
        reload_cpu: CPU used by the reloads.
        url: the QR url of one creation (what the emulator answers, and the app renders); ""
            when none was created.
        renderers: the renderers timed on ``url`` and ``WECHAT_QR_URL``; none without a url.
    """

    asked: int
    browsers: list[Browser]
    seconds: float
    latency: Latency
    cpu: CpuUsage
    reloaded: int
    reload_latency: Latency
    reload_cpu: CpuUsage
    url: str
    renderers: list[RendererTiming]

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
    """Create ``count`` QR codes, each for a new browser, ``concurrency`` at a time; then
    reload each browser's once, on the connection that created it (a browser's keep-alive
    connection, so the same worker); then time the renderers on the url they got."""
    queue = iter(range(count))
    connections = [HttpConnection(port) for _ in range(concurrency)]
    try:
        cpu_start = meter.sample()
        started = time.perf_counter()
        results = await asyncio.gather(*(_create_all(c, origin, queue) for c in connections))
        seconds = time.perf_counter() - started
        cpu = meter.since(cpu_start)
        reload_start = meter.sample()
        reloads = await asyncio.gather(
            *(
                _reload_all(connection, origin, [browser for browser, _, _ in created])
                for connection, created in zip(connections, results, strict=True)
            )
        )
        reload_cpu = meter.since(reload_start)
    finally:
        for connection in connections:
            await connection.close()
    created = [item for result in results for item in result]
    reloaded = [latency for result in reloads for latency in result]
    url = created[0][2] if created else ""
    return QrResult(
        asked=count,
        browsers=[browser for browser, _, _ in created],
        seconds=seconds,
        latency=Latency.of([latency for _, latency, _ in created]),
        cpu=cpu,
        reloaded=len(reloaded),
        reload_latency=Latency.of(reloaded),
        reload_cpu=reload_cpu,
        url=url,
        renderers=compare_renderers(url) if url else [],
    )


async def _create_all(
    connection: HttpConnection, origin: str, queue: Iterator[int]
) -> list[tuple[Browser, float, str]]:
    """Create QR codes for new browsers until ``queue`` is empty: each browser, its latency in
    seconds, and its QR url."""
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
            answer = json.loads(response.body)
            browser = Browser(secret, answer["scene"])
            created.append((browser, response.seconds, answer["qrcode"]))
    return created


async def _reload_all(
    connection: HttpConnection, origin: str, browsers: Sequence[Browser]
) -> list[float]:
    """Ask for each browser's QR code again: the latency, in seconds, of each answered with
    the browser's own attempt."""
    reloaded = []
    for browser in browsers:
        try:
            response = await connection.request(
                "POST", "/api/login/qrcode", headers={"Origin": origin, "Cookie": browser.cookie}
            )
        except (ConnectionError, TimeoutError):
            continue
        if response.status == 200 and json.loads(response.body)["scene"] == browser.scene:
            reloaded.append(response.seconds)
    return reloaded


def compare_renderers(emulator_url: str) -> list[RendererTiming]:
    """Time each QR renderer on ``WECHAT_QR_URL`` and ``emulator_url``: CPU of this thread per
    render of an SVG data URI, error correction M, a 2-module border."""
    return [
        RendererTiming(
            renderer,
            in_app,
            _median_render_ms(render, WECHAT_QR_URL),
            _median_render_ms(render, emulator_url),
        )
        for renderer, in_app, render in _renderers()
    ]


def _renderers() -> list[tuple[str, bool, Callable[[str], str]]]:
    """Each renderer compared: its name, whether the app uses it, and the render."""
    return [
        (f"qrcode {version('qrcode')}, SvgPathImage, base64", False, _qrcode_data_uri),
        (f"segno {version('segno')}, svg_data_uri", False, _segno_data_uri),
        # The render itself: the app's cache left out.
        (
            f"zxing-cpp {version('zxing-cpp')} (zint, in C), as app.login.qrimage",
            True,
            qr_data_uri.__wrapped__,
        ),
    ]


def _qrcode_data_uri(text: str) -> str:
    """The app's first renderer: ``qrcode``'s SVG path image, base64-encoded."""
    image = qrcode.make(
        text,
        image_factory=qrcode.image.svg.SvgPathImage,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        border=2,
    )
    return "data:image/svg+xml;base64," + base64.b64encode(image.to_string()).decode("ascii")


def _segno_data_uri(text: str) -> str:
    """The app's second renderer: segno, in pure Python, its SVG percent-encoded."""
    # boost_error=False: level M as asked, where segno would otherwise raise the level as far
    # as the same size allows.
    return segno.make_qr(text, error="m", boost_error=False).svg_data_uri(
        border=2,
        omitsize=True,
        svgclass=None,
        lineclass=None,
        encode_minimal=True,
        omit_charset=True,
    )


def _median_render_ms(render: Callable[[str], str], text: str) -> float:
    """The median CPU of this thread per ``render(text)``, in ms."""
    spent = []
    for _ in range(RENDER_REPEATS):
        start = time.thread_time()
        render(text)
        spent.append(time.thread_time() - start)
    return statistics.median(spent) * 1000


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
