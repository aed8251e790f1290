"""The figures beside their targets, as rows of cells for a plain-text or Markdown table.

Also the figures derived from several measurements (CPU and Redis commands per request), which
the verdicts and ``document`` use to say why a target was missed.
"""

import math
from dataclasses import astuple, dataclass

from .callbacks import BurstResult
from .httpclient import REQUEST_TIMEOUT_SECONDS
from .qrcodes import WECHAT_QR_URL, QrResult
from .run import Results
from .stats import CpuUsage
from .workers import CALLBACKS

#: The issue's targets.
TARGET_SOCKETS = 10_000
TARGET_RSS_PER_SOCKET_KB = 48
TARGET_PUSH_FLOOR_RATIO = 2.0
TARGET_PUSH_P99_MS = 50.0
TARGET_CALLBACKS_PER_SECOND = 2_000
TARGET_CALLBACK_P99_MS = 50.0

#: Cores of the machine the targets are set for.
TARGET_CORES = 2

HEADER = ("Figure", "Measured", "Target", "Verdict")


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, what was measured, its target and the verdict."""

    figure: str
    measured: str
    target: str = "—"
    verdict: str = "—"


def verdict(met: bool, reason: str) -> str:
    """``met``, or ``not met — <reason>``."""
    return "met" if met else f"not met — {reason}"


def ms(value: float) -> str:
    """Milliseconds, to a precision that suits their size."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f} ms" if value < 10 else f"{value:,.0f} ms"


def cores(value: float) -> str:
    """Cores used, as a percentage of one core."""
    return f"{value * 100:.0f} % of a core"


def counts(by_reason: dict[str, int]) -> str:
    """``{"HTTP 503": 52}`` as ``52 HTTP 503``; ``none`` when empty."""
    return ", ".join(f"{n:,} {reason}" for reason, n in by_reason.items()) or "none"


def server_ms_per_request(cpu: CpuUsage, requests: int, idle: CpuUsage | None = None) -> float:
    """Server CPU per request over a window, in ms; less what idling costs, given ``idle``."""
    busy = cpu.server - (idle.server if idle else 0.0)
    return busy * cpu.seconds / max(requests, 1) * 1000


def all_ms_per_request(cpu: CpuUsage, requests: int) -> float:
    """CPU per request of the server, Redis and the load generator together, in ms."""
    return (cpu.server + cpu.redis + cpu.client) * cpu.seconds / max(requests, 1) * 1000


def redis_commands_per_request(cpu: CpuUsage, requests: int) -> float:
    """Redis commands per request over a window, the hubs' sweeps left out."""
    return cpu.request_commands / max(requests, 1)


def burst_cap(burst: BurstResult) -> float:
    """The rate the targets' 2 cores could sustain at the CPU each callback took, per second."""
    return TARGET_CORES * 1000 / all_ms_per_request(burst.cpu, burst.sent)


def figures_table(results: Results) -> list[tuple[str, ...]]:
    """The issue's figures beside their targets: a header, then a row each."""
    rows = [
        *_socket_rows(results),
        *_push_rows(results),
        *_callback_rows(results),
        *_comparison_rows(results),
        *_integrity_rows(results),
    ]
    return [HEADER, *(astuple(row) for row in rows)]


def _socket_rows(results: Results) -> list[Row]:
    holding = results.deployment.holding
    opened = holding.opened
    idle = results.deployment.idle
    asked = results.options.sockets
    if asked < TARGET_SOCKETS:
        sockets_verdict = f"not measured (this run asked for {asked:,})"
    else:
        sockets_verdict = verdict(
            opened.held >= TARGET_SOCKETS, f"gave up: {counts(opened.failures)}"
        )
    over = holding.rss_per_socket_kb - TARGET_RSS_PER_SOCKET_KB
    return [
        Row(
            "Waiting sockets held",
            f"{opened.held:,} of {asked:,} ({' + '.join(f'{n:,}' for n in holding.per_worker)} "
            f"per worker, in {' + '.join(map(str, holding.threads))} OS threads), opened in "
            f"{opened.seconds:.0f} s; failed tries, retried as the page does: "
            f"{counts(opened.failed_tries)}",
            f"{TARGET_SOCKETS:,}",
            sockets_verdict,
        ),
        Row(
            "Server RSS per waiting socket",
            f"{holding.rss_per_socket_kb:.1f} KiB ({holding.fds_per_socket:.1f} fds per socket)",
            f"≤ {TARGET_RSS_PER_SOCKET_KB} KiB",
            verdict(over <= 0, f"{over:.1f} KiB over: what each socket keeps alive"),
        ),
        Row(
            f"Idle CPU, {opened.held:,} sockets, server pings every 25 s ({idle.seconds:.0f} s)",
            f"server {cores(idle.server)}, Redis {cores(idle.redis)} "
            f"({idle.redis_commands / idle.seconds:,.0f} commands/s); other work "
            f"{cores(idle.others)}",
        ),
    ]


def _push_rows(results: Results) -> list[Row]:
    deployment = results.deployment
    floor, push = deployment.floor, deployment.push
    ratio = push.push.p50_ms / floor.p50_ms
    commands = redis_commands_per_request(push.cpu, push.scanned)
    return [
        Row(
            "Floor: PUBLISH→subscriber + HTTP round trip (p50)",
            f"{ms(floor.publish.p50_ms)} + {ms(floor.http.p50_ms)} = {ms(floor.p50_ms)}",
        ),
        Row(
            f"Scan-to-push p50 ({push.scanned:,} scans at {results.options.scan_rate:g}/s, "
            f"{deployment.holding.opened.held:,} waiting)",
            f"{ms(push.push.p50_ms)} = {ratio:.1f}× the floor",
            f"≤ {TARGET_PUSH_FLOOR_RATIO:g}× the floor",
            verdict(
                ratio <= TARGET_PUSH_FLOOR_RATIO,
                f"a scan is {commands:.0f} Redis commands, mostly in sequence; the floor one",
            ),
        ),
        Row(
            "Scan-to-push p99",
            f"{ms(push.push.p99_ms)} (max {ms(push.push.max_ms)}); the callback's own answer: "
            f"p50 {ms(push.reply.p50_ms)}, p99 {ms(push.reply.p99_ms)}; {push.cross_worker} of "
            f"{push.located} pushed across workers; other work {cores(push.cpu.others)}",
            f"< {TARGET_PUSH_P99_MS:g} ms",
            verdict(push.push.p99_ms < TARGET_PUSH_P99_MS, "pauses of a whole worker"),
        ),
    ]


def _callback_rows(results: Results) -> list[Row]:
    rows = [
        _burst_row(burst, results.options.burst_concurrency) for burst in results.deployment.bursts
    ]
    qrcodes = results.deployment.qrcodes
    rows.append(
        Row(
            f"QR creations/s (POST /api/login/qrcode, {qrcodes.asked:,} new browsers)",
            f"{qrcodes.rate:,.0f}/s, p50 {ms(qrcodes.latency.p50_ms)}, p99 "
            f"{ms(qrcodes.latency.p99_ms)}; {server_ms_per_request(qrcodes.cpu, qrcodes.asked):.0f}"
            f" ms of server CPU each; {qrcodes.failed} failed",
        )
    )
    return rows + _qr_render_rows(qrcodes)


def _qr_render_rows(qrcodes: QrResult) -> list[Row]:
    """The same browsers asking again, and the QR renderers side by side."""
    rows = [
        Row(
            "QR reloads (the same browsers again, on their connection: their live attempt)",
            f"{qrcodes.reloaded:,} of {len(qrcodes.browsers):,} got it back, p50 "
            f"{ms(qrcodes.reload_latency.p50_ms)}; "
            f"{ms(server_ms_per_request(qrcodes.reload_cpu, qrcodes.reloaded))} of server CPU each",
        )
    ]
    for timing in qrcodes.renderers:
        used = "the app's" if timing.in_app else "not used"
        rows.append(
            Row(
                f"QR render ({used}): {timing.renderer}",
                f"{ms(timing.wechat_ms)} for a WeChat url ({len(WECHAT_QR_URL)} characters), "
                f"{ms(timing.emulator_ms)} for the emulator's ({len(qrcodes.url)})",
            )
        )
    return rows


def _burst_row(burst: BurstResult, concurrency: int) -> Row:
    met = (
        burst.rate >= TARGET_CALLBACKS_PER_SECOND and burst.latency.p99_ms < TARGET_CALLBACK_P99_MS
    )
    return Row(
        f"Signed callbacks/s: {burst.kind} ({burst.sent:,}, {concurrency} in flight)",
        f"{burst.rate:,.0f}/s, p99 {ms(burst.latency.p99_ms)}; {burst.failed} failed; CPU: server "
        f"{cores(burst.cpu.server)}, Redis {cores(burst.cpu.redis)}, load generator "
        f"{cores(burst.cpu.client)}, other work {cores(burst.cpu.others)}",
        f"≥ {TARGET_CALLBACKS_PER_SECOND:,}/s, p99 < {TARGET_CALLBACK_P99_MS:g} ms",
        verdict(
            met,
            f"{server_ms_per_request(burst.cpu, burst.sent):.2f} ms of server CPU each: "
            f"2 cores top out near {burst_cap(burst):,.0f}/s",
        ),
    )


def _comparison_rows(results: Results) -> list[Row]:
    deployment = results.deployment
    polling, idle = deployment.polling, deployment.idle
    held = max(deployment.holding.opened.held, 1)
    return [
        Row(
            f"1-s polling instead: {polling.browsers:,} browsers ({polling.seconds:.0f} s)",
            f"{polling.rate:,.0f} requests/s, failed: {counts(polling.failures)}; server "
            f"{cores(polling.cpu.server)}, Redis {cores(polling.cpu.redis)}; median delay "
            f"{ms(polling.delay_p50_ms)}",
        ),
        Row(
            "Per 1,000 browsers: polling against waiting sockets",
            f"1,000 against 0 requests/s; server + Redis "
            f"{_per_thousand(polling.cpu, polling.browsers)} against {_per_thousand(idle, held)};"
            f" delay {ms(polling.delay_p50_ms)} against {ms(deployment.push.push.p50_ms)}",
        ),
    ]


def _per_thousand(cpu: CpuUsage, browsers: int) -> str:
    return cores((cpu.server + cpu.redis) * 1000 / browsers)


def _integrity_rows(results: Results) -> list[Row]:
    deployment = results.deployment
    push = deployment.push
    return [
        Row(
            "Lost logins",
            f"{push.lost} of {push.scanned} scans ({push.failed_callbacks} callbacks failed; "
            f"{deployment.dropped} waiting sockets dropped)",
            "0",
            verdict(push.lost == 0, f"no confirmed frame within 5 s of {push.lost} scans"),
        ),
        Row(
            "Duplicated logins",
            f"{deployment.duplicated} (of {deployment.holding.opened.held:,} pages)",
            "0",
            verdict(deployment.duplicated == 0, "pages told twice, or without a scan"),
        ),
    ]


def worker_model_table(results: Results) -> list[tuple[str, ...]]:
    """The worker-model comparison: a header, then a row per case."""
    table = [
        (
            "One worker, as",
            "Sockets held",
            "RSS per socket",
            "OS threads",
            "fds per socket",
            f"{CALLBACKS} callbacks posted meanwhile",
        )
    ]
    for model in results.worker_models:
        answered = f"answered in p50 {ms(model.callback.p50_ms)}, max {ms(model.callback.max_ms)}"
        if model.callbacks_unanswered:
            unanswered = (
                f"{model.callbacks_unanswered} unanswered after {REQUEST_TIMEOUT_SECONDS:g} s"
            )
            answered = f"{unanswered}; {answered}" if model.callback.count else unanswered
        table.append(
            (
                model.case.label,
                f"{model.held:,} of {model.case.sockets:,}",
                f"{model.rss_per_socket_kb:.1f} KiB",
                f"{model.threads:,}",
                f"{model.fds_per_socket:.1f}",
                answered,
            )
        )
    return table


def text_table(cells: list[tuple[str, ...]]) -> str:
    """Rows of cells (the first is the header) as an aligned plain-text table."""
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(cells: list[tuple[str, ...]]) -> str:
    """Rows of cells (the first is the header) as a Markdown table."""
    header, *body = cells
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)
