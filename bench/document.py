"""docs/benchmarks.md: the figures, with the machine, the method, the worker model, and what
limited them."""

import re
import textwrap

from .pages import RECONNECT_DELAYS_SECONDS
from .polling import POLL_INTERVALS_SECONDS
from .push import CALLBACK_CONNECTIONS, LOST_AFTER_SECONDS
from .qrcodes import RENDER_REPEATS
from .report import (
    TARGET_PUSH_FLOOR_RATIO,
    TARGET_PUSH_P99_MS,
    TARGET_RSS_PER_SOCKET_KB,
    burst_cap,
    burst_cpu_ms,
    cores,
    counts,
    figures_table,
    floor_cpu_ms,
    markdown_table,
    ms,
    per_thousand,
    server_ms_per_request,
    worker_model_table,
)
from .run import MAX_RUN_SECONDS, QR_CONCURRENCY, Results
from .server import key_prefix
from .workers import CALLBACKS, EXHAUSTION_SOCKETS, EXHAUSTION_THREADS, WorkerModelResult

#: The log line of a Redis call refused by redis-py's connection pool.
POOL_EXHAUSTED = "MaxConnectionsError: Too many connections"
#: The second traceback of a request whose session could not be read.
SESSION_SAVE_FAILED = "object has no attribute 'sid'"
#: How long WeChat waits for the answer to a callback, in ms.
WECHAT_WAIT_MS = 5000
#: What the hub logs for a message on its channel that no worker of ours published.
FOREIGN_MESSAGE = "login hub ignored"


def markdown(results: Results) -> str:
    """The whole page."""
    sections = [
        _heading(results),
        "## Results\n\n" + markdown_table(figures_table(results)),
        _method(results),
        _worker_model(results),
        _push_against_polling(results),
        _limits(results),
        _server_log(results),
    ]
    return "\n\n".join(_reflow(section) for section in sections) + "\n"


#: Width the prose is wrapped to (tables are left as they are).
LINE_WIDTH = 100
#: A number and its unit, which a line must not split.
_NUMBER_AND_UNIT = re.compile(r"(\d) (ms|%|KiB|MiB|GiB|s|minutes)(?!\w)")


def _reflow(text: str) -> str:
    """Wrap each paragraph and list item of ``text`` to ``LINE_WIDTH``; headings and tables
    stay as they are."""
    blocks = []
    for block in text.split("\n\n"):
        if block.startswith(("#", "|", "**")):
            blocks.append(block)
        elif block.startswith("- "):
            items = ("\n" + block).split("\n- ")[1:]
            blocks.append("\n".join(_fill(item, "- ", "  ") for item in items))
        else:
            blocks.append(_fill(block, "", ""))
    return "\n\n".join(blocks)


def _fill(text: str, first: str, rest: str) -> str:
    # textwrap breaks only at ASCII spaces: a no-break space holds a number to its unit.
    joined = _NUMBER_AND_UNIT.sub("\\1\u00a0\\2", " ".join(text.split()))
    wrapped = textwrap.fill(
        joined,
        LINE_WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=False,
    )
    return wrapped.replace("\u00a0", " ")


def _heading(results: Results) -> str:
    machine = results.machine
    soft, hard = results.open_file_limit
    facts = [
        ("Machine and software", ""),
        ("CPU", f"{machine.cpu_model}, {machine.cores} logical CPUs (`nproc`)"),
        ("Memory", f"{machine.memory_gb:.1f} GiB"),
        ("Kernel", f"Linux {machine.kernel}"),
        ("Python", machine.python),
        ("Packages", ", ".join(f"{name} {version}" for name, version in machine.packages.items())),
        (
            "Redis",
            f"{machine.redis_server} on 127.0.0.1:6379, database {results.options.redis_db}, "
            "emptied first",
        ),
        ("Load generator's open-file limit", f"raised to {soft:,} (hard limit {hard:,})"),
        (
            "Other work on the machine",
            f'{cores(results.background_load)} before the run; then see "other work"',
        ),
    ]
    return f"""# Benchmarks

Written by `python -m bench` on {results.started_at:%Y-%m-%d %H:%M} UTC; the run took
{results.seconds / 60:.1f} minutes. Run it again to refresh this page (`--quick` for a smoke run;
`--help` for the options).

**Command:** `{results.command}`

{markdown_table(facts)}"""


def _method(results: Results) -> str:
    options = results.options
    held = results.deployment.holding
    return f"""## How it was measured

- **Server**, as deployed: `python -m gunicorn -c gunicorn.conf.py --bind 127.0.0.1:<port>
  --workers 2 wsgi:app` (gevent workers, `worker_connections` 6000, the open-file limit raised
  and `LOGIN_MAX_SOCKETS` set by `gunicorn.conf.py`), `APP_ENV=development`, with `REDIS_URL`
  on loopback, `LOGIN_RATE_LIMIT=off`, `LOGIN_MAX_SOCKETS_PER_IP=0` (every page comes from
  loopback), `LOGIN_QR_EXPIRE_SECONDS=900`, and `OIDC_SIGNING_KEY` a fresh RSA 2048 key file,
  as production requires.
- **WeChat**: the emulator, in a server of its own (one gevent worker, the app in emulator mode,
  its keys under a prefix of their own), which the deployment calls over HTTP with the emulated
  account's `WECHAT_APP_ID` and `WECHAT_APP_SECRET` (`WECHAT_API_BASE` pointed at it), as
  production calls WeChat: the API calls (`access_token`, `qrcode/create`, the batched
  `user/info/batchget` look-ups after logins) cost the deployment their client side only, and
  the emulator's own CPU, WeChat's in production, is shown apart and never counted as ours.
  (The worker-model comparison below answers the API inside its server: it creates no QR code.)
- **Load generator**: this process, separate from the server and on the same
  {results.machine.cores} cores (its own CPU is shown beside each burst): asyncio, `websockets`
  for the pages, and a small keep-alive HTTP/1.1 client for everything else. All traffic is to
  127.0.0.1; every phase is bounded in count and time, and the run stops itself after
  {MAX_RUN_SECONDS // 60} minutes at most. It used {held.client_rss_mb:,.0f} MiB with
  {held.opened.held:,} sockets open.
- **Waiting sockets**: {options.sockets:,} login attempts were **seeded in Redis** with the app's
  own `LoginStore.create_attempt` (each bound to a browser secret of its own) rather than through
  `POST /api/login/qrcode`, whose QR rendering would have been most of what seeding measured.
  Each page then opened `/ws/login/<scene>` as a browser does (its `wxlogin_browser` cookie, the
  site's `Origin`), {options.connect_rate:g} new sockets a second, and waited for its "waiting"
  frame; a failed socket was retried after
  {", ".join(f"{delay:g}" for delay in RECONNECT_DELAYS_SECONDS)} s, as `static/login.js` does.
  Pages send no pings and answer the server's (every 25 s). Memory is the workers' resident memory
  after, less before, divided by the sockets held; idle CPU is the server's CPU time over
  {options.idle_seconds:g} s of nothing happening, divided by the wall time.
- **Scan-to-push**: {options.scans:,} of the waiting pages were scanned, {options.scan_rate:g} a
  second: a signed `SCAN` event (built and signed by `app/wechat/delivery.py`, the sender the
  emulated phone and the tests use; a fresh nonce each) posted to
  `/wechat/callback` over {CALLBACK_CONNECTIONS} keep-alive connections, timed from the POST's
  first byte to the "confirmed" frame at that page. A scan with no such frame within
  {LOST_AFTER_SECONDS:g} s is a lost login; a page
  told its outcome twice, or told anything without a scan, is a duplicated one.
- **The floor**, measured in the same run with the sockets held: {options.floor_samples:,} Redis
  PUBLISHes each timed until a subscriber on another connection read it (redis-py), and
  {options.floor_samples:,} `GET /api/me` (401, no Redis) on a keep-alive connection, one at a
  time; its p99 is the sum of the two p99s. For CPU, the same `GET /api/me` in a burst like the
  callbacks' below: the server CPU of a request that does nothing. Every figure's ratio to the
  floor ("×") is to this run's floor, so a slow machine slows both.
- **Server CPU per request**: {options.burst_callbacks:,} requests of each kind,
  {options.burst_concurrency} in flight on as many keep-alive connections, with the sockets still
  held: the floor's `GET /api/me`, signed `SCAN`s that sign in (attempts seeded for them; no page
  waits) and text messages (signature, replay check, XML parse, `success`). The server's CPU
  time over the burst, less its idle CPU with the sockets held over as long, divided by the
  requests.
- **QR creations**: once the server was quiet after the sockets closed,
  {options.qrcodes:,} real `POST /api/login/qrcode`, each from a new browser
  (empty cookie jar, the site's `Origin`), {QR_CONCURRENCY} at a time; then each asked again
  once, on its own keep-alive connection (a reload: the browser's live attempt comes back); then
  one of them signed in through every public step (socket, scan, `POST /api/login/redeem`) for
  the polling phase's session. The QR renderers were timed in the load generator, on one thread
  ({RENDER_REPEATS} renders of each url, the median), on a url of WeChat's form and on the one
  this run's creations got from the emulator.
- **Polling**, the peers' way of waiting for the scan (the best-known poll every 0.8 to 3 s;
  Casdoor every 3 s), measured in the same run: the product has no polling endpoint, so the
  stand-in is `GET /api/me` with that signed-in session (a Redis read of the session and one of
  the user, then JSON), every {" s and every ".join(f"{i:g}" for i in POLL_INTERVALS_SECONDS)} s
  per browser, {options.pollers:,} browsers for {options.poll_seconds:g} s at each interval
  (at least two and a half intervals), each on its own keep-alive connection at its own phase.
  Its delay: a "scan" at a random moment per browser, to the end of the first poll sent after
  it. Per 1,000 browsers, its requests and server + Redis CPU stand against our sockets' idle
  CPU, and its delay against our scan-to-push.
- **OpenID provider**: a client registered with the app's `ClientStore` (as `flask oidc
  add-client` does), and {options.oidc_codes:,} authorization codes stored with its
  `TokenStore` for the session signed in above, as `/oidc/authorize` stores them; each was
  exchanged at `POST /oidc/token` (HTTP Basic client authentication, scope `openid wechat`,
  an RS256 ID token), then each access token read `GET /oidc/userinfo`,
  {options.burst_concurrency} in flight, with no socket held.
- **Worker models**: one worker each, gevent (as deployed) and gthread, holding
  {options.compare_sockets:,} sockets, then gthread with {EXHAUSTION_THREADS} threads (the README's
  figure) and {EXHAUSTION_SOCKETS} sockets; {CALLBACKS} text callbacks were posted to each while
  it held them."""


def _worker_model(results: Results) -> str:
    gevent, gthread, exhausted = results.worker_models
    return f"""## Worker model: why gevent

{markdown_table(worker_model_table(results))}

Under gunicorn's threaded worker a flask-sock socket holds a pool thread for its whole life,
and simple-websocket gives it a reader thread of its own: {gthread.threads:,} OS threads for
{gthread.held:,} sockets here, and {gthread.rss_per_socket_kb:.0f} KiB per socket (gevent:
{gevent.rss_per_socket_kb:.0f} KiB). Worse, the pool is shared with every other request: with
{EXHAUSTION_THREADS} threads, {_exhaustion(exhausted)} gevent holds every socket on two greenlets in
one thread ({gevent.threads} OS threads in all, gevent's resolver pool included) and answered the
same callbacks with {gevent.held:,} sockets open in {ms(gevent.callback.p50_ms)}. So
`gunicorn.conf.py` runs gevent, with `worker_connections` 6000 and `LOGIN_MAX_SOCKETS` keeping 200
connections of every worker free for WeChat's callback and the JSON API."""


def _exhaustion(model: WorkerModelResult) -> str:
    pages = f"{model.held} of {model.case.sockets} pages were served and the rest waited"
    asked = model.callbacks_unanswered + model.callback.count
    if model.callbacks_unanswered:
        return (
            f"{pages}, as did the callbacks: {model.callbacks_unanswered} of {asked} got no"
            " answer within 10 s, where WeChat gives up after 5 s and the scan is lost."
        )
    if model.callback.max_ms > WECHAT_WAIT_MS:
        return (
            f"{pages}, as did the callbacks: answered after {ms(model.callback.p50_ms)}"
            " (median), when WeChat gives up after 5 s and the scan is lost."
        )
    return f"{pages}; the callbacks were answered in {ms(model.callback.p50_ms)} (median)."


def _push_against_polling(results: Results) -> str:
    deployment = results.deployment
    idle = deployment.idle
    held = max(deployment.holding.opened.held, 1)
    ours = per_thousand(idle, held)
    sentences = []
    for polling in deployment.polling:
        failed = f", and {polling.failed:,} of its requests failed" if polling.failed else ""
        sentences.append(
            f"{polling.browsers:,} browsers polling every {polling.interval:g} s sent"
            f" {polling.rate:,.0f} requests a second and kept the server and Redis"
            f" {cores(polling.cpu.server + polling.cpu.redis)} busy{failed}; a scan reached them"
            f" after {ms(polling.delay.p50_ms)} (median; p99 {ms(polling.delay.p99_ms)}): half"
            f" the interval, plus the poll itself, which took {ms(polling.latency.p50_ms)}"
            f" (median). Per 1,000 browsers: {cores(per_thousand(polling.cpu, polling.browsers))}"
            f" and {polling.rate * 1000 / polling.browsers:,.0f} requests a second."
        )
    sentences.append(
        f"The same server held {held:,} waiting sockets at {cores(idle.server + idle.redis)}"
        f" ({cores(ours)} per 1,000, and no request) and pushed each scan in"
        f" {ms(deployment.push.push.p50_ms)} (median; p99 {ms(deployment.push.push.p99_ms)})."
    )
    return "## Push against polling\n\n" + " ".join(sentences)


def _limits(results: Results) -> str:
    notes = [
        note
        for note in (
            _sockets_note(results),
            _memory_note(results),
            _idle_note(results),
            _push_note(results),
            _pause_note(results),
            _callbacks_note(results),
            _polling_note(results),
            _qr_note(results),
        )
        if note
    ]
    return "## What limited the figures\n\n" + "\n".join(notes)


def _sockets_note(results: Results) -> str:
    opened = results.deployment.holding.opened
    if not opened.failed_tries:
        return ""
    note = (
        f"- **Opening sockets**: tries failed ({counts(opened.failed_tries)}) and were retried as "
        f"the page does; {counts(opened.failures)} gave up."
    )
    if _logged(results, POOL_EXHAUSTED):
        note += (
            f' The 503s are the app\'s "Redis unavailable": its Redis client raised '
            f"`{POOL_EXHAUSTED}` ({_logged(results, POOL_EXHAUSTED):,} times in the log). redis-py"
            " 8 caps a connection pool at 100 connections and raises at once when all are in"
            " use; under gevent every greenlet inside a Redis call holds one, so a backlog of"
            " handshakes after a pause of the worker goes past it (`app/extensions.py`,"
            " `init_redis`: no `max_connections`, no blocking pool)."
        )
    return note


def _memory_note(results: Results) -> str:
    rss = results.deployment.holding.rss_per_socket_kb
    if rss <= TARGET_RSS_PER_SOCKET_KB:
        return ""
    return (
        f"- **Memory per socket** ({rss:.1f} KiB, {rss - TARGET_RSS_PER_SOCKET_KB:.1f} KiB over): "
        "for its whole life a waiting socket keeps gunicorn's parsed request and WSGI environ,"
        " Flask's request context, two greenlets with their saved stacks (the view, parked on"
        " its websocket's event, and simple-websocket's reader, blocked in recv) and wsproto's"
        " state; no selector and no queue of its own (52.5 KiB with them, before issue 13). A"
        " tracemalloc snapshot of one worker holding 2,000 sockets (taken outside the benchmark,"
        " with them) found the view's frames about 5 KiB, gunicorn's request about 4 KiB and the"
        " greenlets about 2.5 KiB each. Under 40 KiB would take one greenlet per socket instead"
        " of two (the view reading the socket itself, our own websocket code in place of"
        " simple-websocket's reader) or a socket that outlives its WSGI request (handed off to a"
        " process that keeps only the socket and its scene)."
    )


def _idle_note(results: Results) -> str:
    idle = results.deployment.idle
    return (
        f"- **Idle CPU** ({cores(idle.server)} for {results.deployment.holding.opened.held:,}"
        " sockets; 28 % before issue 13): every second each worker's hub reads the changes"
        " announced since its last sweep from a capped Redis stream (one round trip, whatever"
        " the number of sockets), and every 30th second the status of every socket it holds"
        f" ({idle.sweep_commands / idle.seconds:,.0f} HGETs/s on average here, where it read"
        " every status every second before); every 25 s (`LOGIN_WS_PING_SECONDS`) each socket"
        " wakes once to ping its browser and check the last ping was answered, and its reader"
        " wakes for the answer: 400 pings and 400 pongs a second at 10,000 sockets, most of what"
        " is left. Measured outside the benchmark on 2026-12-07 (10,000 sockets, 2 workers, 30"
        " s): 1.1 % of a core with pings off, 11.5 % with them every 25 s, so about 0.26 ms of"
        " server CPU per ping and its pong, a third of it (py-spy) the send, in which the kernel"
        " carries the frame across loopback to the client. Under 10 % would take an interval of"
        " 30 s or more (every 40 s: about 7.6 %), at the cost of a reconnect every time a proxy"
        " with a shorter idle timeout (HAProxy's `timeout client` is often 30 s) closes a quiet"
        " socket; 25 s stays the default, under them all."
    )


def _push_note(results: Results) -> str:
    deployment = results.deployment
    push, floor = deployment.push, deployment.floor
    if push.push.p50_ms <= TARGET_PUSH_FLOOR_RATIO * floor.p50_ms:
        return ""
    return (
        f"- **Scan-to-push median** ({ms(push.push.p50_ms)} against the floor's"
        f" {ms(floor.p50_ms)}): the floor is one Redis round trip and one bare HTTP round trip. A"
        " scan is an HTTP request that does real work and two Redis round trips in a row: the"
        " replay check of its signed query, then one Lua step that claims the callback for"
        " WeChat's retries, reads, decides and writes the attempt, counts the login, adds the"
        " change to the sweeps' stream and publishes the new state (`_TRANSITION`,"
        " app/login/store.py), which the page's worker sends on without reading Redis. Before"
        " issue 13 it was a claim, a WATCH/MULTI transaction of three round trips, the user"
        " record's eight, the PUBLISH, and a read by the page's worker. Timed inside the"
        " workers outside the benchmark (2,000 sockets, medians): 0.75 ms from the request's"
        " first hook to the scan's handling (the replay check's round trip, the XML), 0.7 ms"
        " for the Lua step and the Python around it, 0.27 ms from the PUBLISH to the page's"
        " worker, 0.17 ms until its socket runs, and 0.15 ms to send the frame; the rest is"
        " gunicorn reading the POST and the load generator (one Python process holding"
        f" {deployment.holding.opened.held:,} sockets) reading the frame. One round trip took"
        f" {ms(floor.publish.p50_ms)} here and the floor's bare request costs"
        f" {floor_cpu_ms(results):.2f} ms of server CPU: under 3× the floor would need the replay"
        " check inside the Lua step (it is the callback protocol's, taken for every callback"
        " before its body is read) and a callback handled outside Flask. The user record (two"
        " round trips for a returning user) and the unionid look-up come after the push; the"
        f" callback's own answer took {ms(push.reply.p50_ms)} (median)."
    )


def _pause_note(results: Results) -> str:
    deployment = results.deployment
    push = deployment.push
    full = deployment.gc_pauses.get(2)
    collections = (
        f" This run: {full.count} full collections in the two workers, from their start to the"
        f" end of the scans ({ms(full.seconds * 1000)} in all),"
        f" {full.longer_than(0.1)} over 100 ms."
        if full
        else ""
    )
    if push.push.p99_ms <= TARGET_PUSH_P99_MS:
        return (
            "- **Scan-to-push p99** (met): the tail used to be pauses of a whole worker by full"
            " garbage collections, each walking every object of every socket it held: 38 of up to"
            " 2.5 s (26.8 s in all) while 10,000 sockets opened and 500 scans ran, measured with"
            " `wechat_login_gc_pause_seconds`. Each worker now freezes what it loaded and runs"
            " full collections 100 times less often (`gc.set_threshold(700, 10, 1000)`,"
            " gunicorn.conf.py), and the hub's sweep yields between batches of 200." + collections
        )
    return (
        f"- **Scan-to-push p99** ({ms(push.push.p99_ms)}, with other work on the machine at"
        f" {cores(push.cpu.others)}): pauses of a whole worker, which answers nothing meanwhile:"
        " garbage collections, a sweep batch, or the machine's other work." + collections
    )


def _callbacks_note(results: Results) -> str:
    bursts = results.deployment.bursts
    floor_ms = floor_cpu_ms(results)
    scans, texts = bursts
    costs = "; ".join(
        f"{burst.kind}: {burst_cpu_ms(results, burst):.2f} ms of server CPU each"
        f" (2 cores would top out near {burst_cap(burst):,.0f}/s counting Redis and the load"
        f" generator), {burst.rate:,.0f}/s measured with the server at {cores(burst.cpu.server)}"
        f" and other work at {cores(burst.cpu.others)}"
        for burst in bursts
    )
    return (
        f"- **CPU per callback**: {costs}. The floor, a bare request through gunicorn, gevent"
        f" and Flask that reads nothing, costs {floor_ms:.2f} ms here: a text callback adds"
        f" {burst_cpu_ms(results, texts) - floor_ms:.2f} ms (the signature, the replay check's"
        " round trip, the XML), which puts the 0.5-ms goal below what this stack spends on any"
        " request; reaching it would mean taking the callback out of Flask. A scan that signs in"
        f" adds {burst_cpu_ms(results, scans) - burst_cpu_ms(results, texts):.2f} ms to a text"
        " callback: the Lua step, the user record (a new user each here: about six round trips;"
        " a returning one two) and its share of the batched `user/info/batchget` (the client side"
        " of an HTTP call). A scan added more than three"
        " times that before (a `user/info` call per scan, a transaction of three round trips, a"
        " user record of twelve)."
    )


def _polling_note(results: Results) -> str:
    failed = [polling for polling in results.deployment.polling if polling.failed]
    if not failed:
        return ""
    note = "- **Polling**: " + "; ".join(
        f"every {polling.interval:g} s, {polling.failed:,} of {polling.requests:,} polls failed"
        f" ({counts(polling.failures)})"
        for polling in failed
    )
    if _logged(results, SESSION_SAVE_FAILED):
        note += (
            f": `/api/me` hit `{POOL_EXHAUSTED}` inside Flask-Session's `open_session`"
            " (the session client's pool), which the app's error handlers do not see: a 500 and"
            f" a second traceback (`{SESSION_SAVE_FAILED}`) each time"
        )
    return note + ". The median delay counts the wait for the next poll that succeeded."


def _qr_note(results: Results) -> str:
    qrcodes = results.deployment.qrcodes
    cpu_ms = server_ms_per_request(qrcodes.cpu, qrcodes.asked)
    reload_ms = server_ms_per_request(qrcodes.reload_cpu, qrcodes.reloaded)
    wechat_ms = qrcodes.cpu.wechat * qrcodes.cpu.seconds / max(qrcodes.asked, 1) * 1000
    return (
        f"- **QR creations**: {ms(cpu_ms)} of server CPU each, which caps page loads near"
        f" {2000 / cpu_ms:,.0f}/s on 2 cores; a reload, {ms(reload_ms)}: each QR code is"
        " rendered once per worker (`app/login/qrimage.py`). A new browser's QR code must be"
        " rendered: zxing-cpp encodes it in C, scoring the standard's 8 masks as segno does in"
        ' pure Python (the rows "QR render"), and the emulator\'s url has the form and symbol'
        " version of WeChat's, so the render costs here what it costs in production. The rest"
        " of a creation is the call to WeChat for the QR code (its client side: a plain HTTP"
        " call here, with TLS in production; the emulator answering it used"
        f" {ms(wechat_ms)} of its own CPU per creation, not counted), the attempt's Redis"
        " writes, the binding cookie and Flask: under 3 ms would take that call off the page"
        " load (QR codes created ahead of the pages that show them, which spends WeChat's"
        " daily QR quota on codes nobody may see)."
    )


def _all_kinds(results: Results) -> list[str]:
    """Every kind of log line, of the deployment and of the worker models."""
    summaries = [results.deployment.log_summary, *(m.log_summary for m in results.worker_models)]
    return [kind for summary in summaries for kind in summary]


def _logged(results: Results, text: str) -> int:
    """Lines of the deployment's log, of any kind, that contain ``text``."""
    return sum(n for kind, n in results.deployment.log_summary.items() if text in kind)


def _server_log(results: Results) -> str:
    lines = ["## Server log\n", f"Warnings and errors, by kind (logs kept in `{results.log_dir}`)."]
    if any(FOREIGN_MESSAGE in kind for kind in _all_kinds(results)):
        lines.append(
            "Some lines come from others using the same Redis server with the same"
            " `REDIS_KEY_PREFIX` (pub/sub channels span its databases): what they publish on"
            f" `{key_prefix(results.options.redis_url)}login:attempts` reaches this server's"
            " hub too."
        )
    logs = [("deployment", results.deployment.log_summary)] + [
        (model.case.label, model.log_summary) for model in results.worker_models
    ]
    for name, summary in logs:
        rows = [("Lines", "Kind")] + [
            (f"{n:,}", "`" + kind[:160].replace("`", "'").replace("|", "\\|") + "`")
            for kind, n in sorted(summary.items(), key=lambda item: -item[1])
        ]
        lines.append(f"\n**{name}**\n\n" + markdown_table(rows))
    return "\n".join(lines)
