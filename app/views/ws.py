"""The websocket a login page waits on: ``/ws/login/<scene>``.

Frames (JSON text): ``{"status": "waiting", "expires_in": N}`` at once; ``{"status":
"scanned"}`` when the scanner is asked to confirm in WeChat; then exactly one of
``{"status": "confirmed", "code": str}``, ``{"status": "cancelled"}`` or ``{"status":
"expired"}``, then a close handshake. A worker shutting down closes its sockets with 1001
("going away") at once; the page reconnects, to another worker. A worker at
``LOGIN_MAX_SOCKETS`` closes new ones with 1013; a third socket on one attempt sends the
oldest away with ``REPLACED_CLOSE_CODE``, on which the page does not reconnect.
"""

import contextlib
import json
import logging
import socket
import time
from dataclasses import replace
from typing import Any

import redis
from flask import Blueprint, abort, current_app, g, request
from simple_websocket import Server
from wsproto.events import CloseConnection, Ping
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from ..extensions import client_network, login_service, sock
from ..login.hub import Waiter
from ..login.store import Attempt, Status
from ..metrics import EXPIRED, SCAN_TO_PUSH
from .cookies import browser_hash
from .security import require_same_origin

log = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)

#: Close code for a socket sent away because a newer one waits on the same attempt (a third
#: tab of the browser): the page stops rather than reconnects, so tabs never take turns.
REPLACED_CLOSE_CODE = 4001

#: How long to wait for the browser's answer to our close frame, in seconds.
CLOSE_HANDSHAKE_SECONDS = 2.0


@bp.before_request
def only_the_browser_that_asked() -> None:
    """Refuse the handshake (no upgrade, no data): 429 to a client already holding
    ``LOGIN_MAX_SOCKETS_PER_IP`` sockets on this worker, 403 unless it comes from one of our
    pages in the browser that owns the attempt."""
    require_same_origin()
    # Per worker, like LOGIN_MAX_SOCKETS: the slots this protects are the worker's own, so
    # one client (an address, or an IPv6 /64) can never take more than this share of any
    # worker, however many workers there are; and nothing can leak a count when a worker dies.
    # Refused before the upgrade, so that refusals cost no socket.
    per_client = current_app.config["LOGIN_MAX_SOCKETS_PER_IP"]
    g.client = client_network()
    if per_client and login_service().waiting_count(g.client) >= per_client:
        abort(429, "too many login pages from this address")
    scene = (request.view_args or {}).get("scene", "")
    owner = browser_hash()
    attempt = login_service().attempt(scene) if owner and len(scene) <= 64 else None
    if attempt is None or not attempt.owned_by(owner):
        abort(403)
    g.attempt = attempt
    # No permessage-deflate: our frames are tiny, and a compressor per socket would cost
    # hundreds of KB each and let a client make us inflate whatever it sends.
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


@sock.route("/ws/login/<scene>", bp=bp)
def login_socket(ws: Server, scene: str) -> None:
    """Tell the page when its QR code is scanned, confirmed, cancelled or expired.

    Registers with the hub, then reads the attempt, then waits: woken by the hub's push, or by
    its sweep, or at the QR's expiry, so a missed push costs at most a sweep, never a login.
    """
    try:
        _serve(ws, scene)
    except OSError:
        pass  # the browser left mid-send; it resumes by reconnecting
    finally:
        # The close handshake is over (or the browser is gone): close the connection now, as
        # the server should (RFC 6455, 7.1.1), before the WSGI server can write anything more.
        # werkzeug's (`flask run`) writes an HTTP response after every websocket, which the
        # browser reads as a frame ("Invalid frame header"); on a shut connection that write
        # fails, and werkzeug takes it for a client that left. gunicorn writes nothing.
        with contextlib.suppress(OSError):
            ws.sock.shutdown(socket.SHUT_RDWR)


def _serve(ws: Server, scene: str) -> None:
    service = login_service()
    if service.going_away:
        _close_handshake(ws, CloseReason.GOING_AWAY)  # the page reconnects to another worker
        return
    cap = current_app.config["LOGIN_MAX_SOCKETS"]
    if cap and service.waiting_count() >= cap:
        # Full: keep the slots WeChat's callback needs; the page tries again shortly.
        _close_handshake(ws, CloseReason.TRY_AGAIN_LATER)
        return
    ping_seconds = current_app.config["LOGIN_WS_PING_SECONDS"]
    # One wait covers everything: the hub sets the event simple-websocket's reader sets when
    # the browser talks or leaves, so a socket needs no queue of its own and notices a
    # browser that left at once.
    with service.waiting(scene, g.client, wake=ws.event) as waiter:
        attempt = _reread(scene, g.attempt)
        ws.send(json.dumps({"status": "waiting", "expires_in": _expires_in(attempt)}))
        told_scanned = False
        next_ping = time.monotonic() + ping_seconds
        while (frame := _terminal_frame(attempt)) is None:
            if attempt.status is Status.SCANNED and not told_scanned:
                ws.send(json.dumps({"status": "scanned"}))
                told_scanned = True
            left = attempt.expires_at - time.time()
            woken = ws.event.wait(max(min(next_ping - time.monotonic(), left), 0.01))
            if woken:
                # Cleared before anything is read: a wake from now on is seen by the next
                # wait (and one that comes after a timeout is left set for it).
                ws.event.clear()
            if waiter.replaced:
                # Newer tabs of this browser wait on the same QR code: this one steps aside.
                _close_handshake(ws, REPLACED_CLOSE_CODE)
                return
            if service.going_away:
                # Shutting down: tell the page now, not when the grace period runs out; it
                # reconnects to another worker and reads the same state there.
                _close_handshake(ws, CloseReason.GOING_AWAY)
                return
            if not _browser_still_listening(ws):
                return  # gone (it resumes by reconnecting), or talking: closed
            if time.monotonic() >= next_ping:
                if not _ping(ws):
                    return  # dead (closed) or gone
                next_ping = time.monotonic() + ping_seconds
            if woken or time.time() >= attempt.expires_at:
                # The push that woke it carries the state, most times: no read then.
                attempt = _as_pushed(attempt, waiter) or _reread(scene, attempt)
    ws.send(json.dumps(frame))
    _count(frame, attempt)
    log.info("login socket answered scene=%s status=%s", scene, frame["status"])
    _close_handshake(ws, CloseReason.NORMAL_CLOSURE)


def _browser_still_listening(ws: Server) -> bool:
    """False if the browser left, or sent us anything (our page never does): then it is
    closed, so no client can make us queue its messages."""
    if not ws.connected:
        return False
    if ws.input_buffer:
        _close_handshake(ws, CloseReason.POLICY_VIOLATION)
        return False
    return True


def _ping(ws: Server) -> bool:
    """Ping the browser, once it answered the previous ping; False if it did not (a dead peer:
    then it is closed) or could not be sent to (it left).

    The socket's own wake sends the ping, rather than simple-websocket's ping timer, which
    needs a selector and a wake of its own per socket: this way a waiting socket has one timer.
    """
    if not ws.pong_received:
        _close_handshake(ws, CloseReason.POLICY_VIOLATION)
        return False
    ws.pong_received = False
    try:
        ws.sock.send(ws.ws.send(Ping()))
    except (OSError, LocalProtocolError):
        return False  # it left, or closed first; its reader ends the connection
    return True


def _count(frame: dict[str, Any], attempt: Attempt | None) -> None:
    if frame["status"] == "expired":
        EXPIRED.inc()
    elif frame["status"] == "confirmed" and attempt and attempt.confirmed_at:
        SCAN_TO_PUSH.observe(max(time.time() - attempt.confirmed_at, 0))


def _expires_in(attempt: Attempt | None) -> int:
    return attempt.expires_in(time.time()) if attempt else 0


def _terminal_frame(attempt: Attempt | None) -> dict[str, Any] | None:
    if attempt is None:
        return {"status": "expired"}
    if attempt.status is Status.CONFIRMED:
        return {"status": "confirmed", "code": attempt.code}
    if attempt.status is Status.CANCELLED:
        return {"status": "cancelled"}
    return None


def _as_pushed(attempt: Attempt, waiter: Waiter) -> Attempt | None:
    """The attempt as the last push carried it (taking it), or None when that wake carried no
    state, or none this socket can use: then it must be read."""
    pushed, waiter.pushed = waiter.pushed, None
    if pushed is None:
        return None
    try:
        status = Status(pushed["status"])
        confirmed_at = float(pushed["confirmed_at"]) if "confirmed_at" in pushed else None
    except ValueError:
        return None
    if status is Status.CONFIRMED and not (pushed.get("code") and confirmed_at):
        return None
    return replace(attempt, status=status, code=pushed.get("code"), confirmed_at=confirmed_at)


def _reread(scene: str, last: Attempt | None) -> Attempt | None:
    try:
        return login_service().attempt(scene)
    except redis.RedisError as exc:
        # Keep waiting on what we knew, and back off: the truth is read again soon.
        log.warning("login socket could not read scene=%s: %s", scene, exc)
        time.sleep(0.5)
        return last


def _close_handshake(ws: Server, code: int) -> None:
    # simple-websocket's close() shuts the TCP socket without waiting for the browser's close
    # frame; data still arriving then makes the kernel reset the connection, which can destroy
    # our last frame before the browser reads it. So send the close frame ourselves and let
    # the reader thread run until the browser answers it (it then closes the socket).
    try:
        ws.sock.send(ws.ws.send(CloseConnection(code)))
    except OSError:
        return
    except LocalProtocolError:
        return  # the browser closed first (the page does on "confirmed"); that was answered
    ws.thread.join(CLOSE_HANDSHAKE_SECONDS)
