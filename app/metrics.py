"""Prometheus metrics of the login, free of Flask.

Under gunicorn, ``gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports this module: every worker then writes its own samples there and ``/metrics`` adds them
up (``prometheus_client``'s multiprocess mode). Elsewhere the default registry serves.
"""

import gc
import time

from prometheus_client import Counter, Gauge, Histogram

QRCODES_CREATED = Counter(
    "wechat_login_qrcodes_created_total", "QR codes created with WeChat's qrcode/create."
)
SCANS = Counter(
    "wechat_login_scans_total",
    "Scans of a login QR code, by kind: new_follower (subscribe) or returning (SCAN).",
    ["kind"],
)
LOGINS = Counter("wechat_login_logins_total", "Attempts confirmed by their scanner.")
EXPIRED = Counter(
    "wechat_login_expired_total", "Waiting pages told that their QR code expired unscanned."
)
DEDUPLICATED = Counter(
    "wechat_login_callbacks_deduplicated_total",
    "WeChat retries answered from the record of the first delivery.",
)
SIGNATURE_FAILURES = Counter(
    "wechat_login_signature_failures_total",
    "Callbacks refused for a bad signature or msg_signature, a stale timestamp or a replay.",
)
WECHAT_API_ERRORS = Counter(
    "wechat_login_wechat_api_errors_total",
    "Failed WeChat API calls, by errcode (or 'transport' when WeChat was not reached).",
    ["errcode"],
)
WAITING_SOCKETS = Gauge(
    "wechat_login_waiting_sockets",
    "Login pages waiting on their websocket.",
    multiprocess_mode="livesum",
)
SCAN_TO_PUSH = Histogram(
    "wechat_login_scan_to_push_seconds",
    "From the scan's confirmation written in Redis to the frame sent to the waiting page.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
FORWARDED = Counter(
    "wechat_login_forwarded_total",
    "Messages passed on to WECHAT_FORWARD_URL, by outcome: relayed (its reply went back to "
    "WeChat), acknowledged (it said nothing), failed, timeout.",
    ["outcome"],
)
LOGOUT_TOKENS = Counter(
    "wechat_login_oidc_logout_tokens_total",
    "Back-channel logout tokens posted to clients, by outcome: sent (the client answered 200 or "
    "204), retried (an attempt failed and another follows), failed (given up).",
    ["outcome"],
)
OIDC_AUTHORIZATIONS = Counter(
    "wechat_login_oidc_authorizations_total",
    "Answers of the OpenID provider's authorization endpoint, by outcome: code (sent back with "
    "a code), login (sent to sign in), consent (asked), error (sent back or shown an error).",
    ["outcome"],
)
OIDC_TOKENS = Counter(
    "wechat_login_oidc_tokens_total",
    "Token responses of the OpenID provider, by grant: authorization_code, refresh_token.",
    ["grant"],
)
OIDC_REFRESH_REUSE = Counter(
    "wechat_login_oidc_refresh_reuse_total",
    "Rotated refresh tokens (or spent codes) presented again: their whole family was revoked.",
)
GC_PAUSES = Histogram(
    "wechat_login_gc_pause_seconds",
    "Pauses of a whole process by Python's cyclic garbage collector, by generation collected "
    "(2 is a full collection): nothing else runs in that worker meanwhile.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class _CollectionTimer:
    """A ``gc.callbacks`` entry that observes each collection's pause into ``GC_PAUSES``."""

    def __init__(self) -> None:
        self._by_generation = [GC_PAUSES.labels(str(generation)) for generation in range(3)]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)


def time_garbage_collections() -> None:
    """Time every collection of this process into ``GC_PAUSES`` (idempotent: once per process).

    A collection stops the whole worker, every socket on it included: its pauses are the tail
    of the scan-to-push latency, worth watching in production, not just in benchmarks.
    """
    if not any(isinstance(callback, _CollectionTimer) for callback in gc.callbacks):
        gc.callbacks.append(_CollectionTimer())
