"""For load balancers, orchestrators and Prometheus: ``/healthz``, ``/readyz``, ``/metrics``."""

import os

import redis
from flask import Blueprint, Response, abort, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ..extensions import client_address, login_service

bp = Blueprint("ops", __name__)

#: How long ``/readyz`` waits for this worker's pub/sub subscription, in seconds.
SUBSCRIBE_WAIT_SECONDS = 2.0


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and serving: 200 ``{"status": "ok"}``."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """This worker can log people in: Redis answers and its pub/sub listener is subscribed.

    Returns:
        200 ``{"status": "ready"}``, or 503 ``{"status": "not ready", "failing": [...]}``.
    """
    failing = []
    try:
        current_app.extensions["redis"].ping()
    except redis.RedisError:
        failing.append("redis")
    if not login_service().listening(SUBSCRIBE_WAIT_SECONDS):
        failing.append("pubsub listener")
    if failing:
        response = jsonify(status="not ready", failing=failing)
        response.status_code = 503
        return response
    return jsonify(status="ready")


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of every worker, to ``METRICS_ALLOWED_NETWORKS`` only (403 otherwise).

    Behind a reverse proxy, set ``TRUSTED_PROXIES`` (or block ``/metrics`` at the proxy): the
    proxy's own loopback address must not stand for the client's.
    """
    address = client_address()
    allowed = current_app.config["METRICS_ALLOWED_NETWORKS"]
    if address is None or not any(address in network for network in allowed):
        abort(403, "metrics are not served to this address")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
