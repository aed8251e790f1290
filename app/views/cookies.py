"""Cookies: the browser-binding secret and the session, Secure exactly when served over https."""

import logging
import secrets

import redis
from flask import Flask, Request, Response, g, request
from flask.sessions import SessionMixin
from flask_session.redis import RedisSessionInterface

from ..login.store import hash_secret

#: Holds the random secret that binds login attempts to this browser (Redis keeps its hash).
#: Long-lived: it also tells a known device from a new one (``LOGIN_CONFIRM=new_device``).
BROWSER_COOKIE = "wxlogin_browser"
BROWSER_COOKIE_SECONDS = 365 * 86400

log = logging.getLogger(__name__)


def browser_hash() -> str | None:
    """The hash of this browser's binding secret, or None if it has none (or a malformed one)."""
    secret = request.cookies.get(BROWSER_COOKIE, "")
    # token_urlsafe(32) is 43 characters; anything far off was not made by us.
    if not 32 <= len(secret) <= 64:
        return None
    return hash_secret(secret)


def browser_binding() -> tuple[str, str | None]:
    """This browser's binding, made if it has none.

    Returns:
        ``(hash, new_secret)``: the hash to store with an attempt, and the new secret to set
        with ``set_browser_cookie`` (None when the browser already had one).
    """
    current = browser_hash()
    if current is not None:
        return current, None
    secret = secrets.token_urlsafe(32)
    return hash_secret(secret), secret


def set_browser_cookie(response: Response, secret: str) -> None:
    """Set the binding secret: HttpOnly, SameSite=Lax, Secure over https."""
    response.set_cookie(
        BROWSER_COOKIE,
        secret,
        max_age=BROWSER_COOKIE_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
        path="/",
    )


class SessionInterface(RedisSessionInterface):
    """Server-side sessions in Redis (Flask-Session), so a login can be ended from WeChat.

    The cookie holds only a random session id, and is marked Secure whenever the request came
    over https (behind a proxy, set ``TRUSTED_PROXIES`` so that its ``X-Forwarded-Proto``
    counts); local development on plain http keeps working.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        """The request's session; with Redis unreachable, a null session, and the error kept
        for ``raise_session_error`` (Flask opens sessions before any error handler can
        answer, so raising here would be a bare 500 with a traceback)."""
        try:
            return super().open_session(app, request)
        except redis.RedisError as exc:
            g.session_error = exc
            return None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save the session; with Redis unreachable, log it and send the response anyway."""
        try:
            super().save_session(app, session, response)
        except redis.RedisError as exc:
            log.error("session not saved, Redis unavailable: %s", exc)

    def end(self, session_id: str) -> None:
        """Delete a session by id: its browser is signed out at its next request."""
        self.client.delete(self.key_prefix + session_id)


def raise_session_error() -> None:
    """Re-raise, inside the request, a Redis error met while opening its session, so that the
    error handlers answer it (503) like any other Redis outage.

    Raises:
        redis.RedisError: the session could not be read.
    """
    error = g.pop("session_error", None)
    if error is not None:
        raise error
