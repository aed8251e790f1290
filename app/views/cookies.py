"""Cookies: the browser-binding secret and the session, Secure exactly when served over https."""

import hashlib
import logging
import secrets

import redis
from flask import Flask, Request, Response, current_app, g, request
from flask.sessions import SessionMixin
from flask_session.redis import RedisSession, RedisSessionInterface
from itsdangerous import BadSignature, Signer

from ..login.store import hash_secret

#: Holds the random secret that binds login attempts to this browser (Redis keeps its hash).
#: Long-lived: it also tells a known device from a new one (``LOGIN_CONFIRM=new_device``).
BROWSER_COOKIE = "wxlogin_browser"
BROWSER_COOKIE_SECONDS = 365 * 86400
#: Longer than any value we issue (43 random characters, a dot, a 43-character signature).
MAX_BINDING_LENGTH = 128

log = logging.getLogger(__name__)


def cookie_name(name: str) -> str:
    """The name a cookie of ours carries in this request: ``__Host-<name>`` over https.

    The ``__Host-`` prefix makes browsers accept the cookie only if it is Secure, for Path=/,
    with no Domain, and set by this very host: a sibling subdomain or a plain-http man in the
    middle cannot plant or shadow it. Plain http (local development) keeps the bare name.
    """
    return f"__Host-{name}" if request.is_secure else name


def _binding_signer(secret_key: str | bytes) -> Signer:
    return Signer(
        secret_key,
        salt="wxlogin-browser-binding",
        key_derivation="hmac",
        digest_method=hashlib.sha256,
    )


def issue_binding(secret_key: str | bytes) -> str:
    """Make a new browser-binding value: 256 random bits, signed with ``SECRET_KEY`` so that a
    value this server did not issue is recognised and ignored."""
    return _binding_signer(secret_key).sign(secrets.token_urlsafe(32)).decode()


def browser_hash() -> str | None:
    """The hash of this browser's binding value; None if it has none, or one we did not issue."""
    value = request.cookies.get(cookie_name(BROWSER_COOKIE), "")
    if not value or len(value) > MAX_BINDING_LENGTH:
        return None
    try:
        _binding_signer(current_app.secret_key).unsign(value)
    except BadSignature:
        return None
    return hash_secret(value)


def browser_binding() -> tuple[str, str | None]:
    """This browser's binding, made if it has none (or one we did not issue).

    Returns:
        ``(hash, new_value)``: the hash to store with an attempt, and the new value to set
        with ``set_browser_cookie`` (None when the browser already had a valid one).
    """
    current = browser_hash()
    if current is not None:
        return current, None
    value = issue_binding(current_app.secret_key)
    return hash_secret(value), value


def set_browser_cookie(response: Response, value: str) -> None:
    """Set the binding value: HttpOnly, SameSite=Lax, Path=/; Secure and ``__Host-`` over https."""
    response.set_cookie(
        cookie_name(BROWSER_COOKIE),
        value,
        max_age=BROWSER_COOKIE_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
        path="/",
    )


#: Writes a session unless it was ended (``KEYS[2]`` exists): one atomic step, so a request
#: still in flight when the session ended cannot write it back.
_WRITE_UNLESS_ENDED = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class SessionInterface(RedisSessionInterface):
    """Server-side sessions in Redis (Flask-Session), so a login can be ended for good.

    The cookie holds only a random session id (``__Host-session`` over https, see
    ``cookie_name``), and is Secure whenever the request came over https (behind a proxy, set
    ``TRUSTED_PROXIES`` so that its ``X-Forwarded-Proto`` counts); local development on plain
    http keeps working.

    Ending is final: ``end`` deletes the session and leaves a tombstone for as long as the
    session could have lived. A session is written only by a request that changed it, and never
    over a tombstone, so nothing in flight (a socket closing later, a slow call, a redeem racing
    the scanner's "0") brings it back. Sessions last ``SESSION_LIFETIME_SECONDS`` from sign-in;
    reading one does not extend it.
    """

    def __init__(self, app: Flask, **options: object) -> None:
        super().__init__(app, **options)
        self._write_unless_ended = self.client.register_script(_WRITE_UNLESS_ENDED)

    def get_cookie_name(self, app: Flask) -> str:
        return cookie_name(app.config["SESSION_COOKIE_NAME"])

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        """The request's session (a new empty one when the cookie names none that lives); with
        Redis unreachable, a null session, and the error kept for ``raise_session_error``
        (Flask opens sessions before any error handler can answer, so raising here would be a
        bare 500 with a traceback)."""
        sid = request.cookies.get(self.get_cookie_name(app), "")
        try:
            data = self._retrieve_session_data(self._get_store_id(sid)) if sid else None
        except redis.RedisError as exc:
            g.session_error = exc
            return None
        if data is None:
            return self.session_class(sid=self._generate_sid(self.sid_length), permanent=True)
        return self.session_class(data, sid=sid)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Write the session if this request changed it, unless it was ended meanwhile; with
        Redis unreachable, log it and send the response anyway."""
        if session.accessed:
            response.vary.add("Cookie")
        if not session.modified:
            return  # unchanged: rewriting it could only resurrect an ended session
        try:
            written = bool(session) and self._write_unless_ended(
                keys=[self._get_store_id(session.sid), self._ended_key(session.sid)],
                args=[self.serializer.encode(session), self._lifetime(app)],
            )
        except redis.RedisError as exc:
            log.error("session not saved, Redis unavailable: %s", exc)
            return
        if not written:
            response.delete_cookie(
                self.get_cookie_name(app),
                path=self.get_cookie_path(app),
                secure=self.get_cookie_secure(app),
                httponly=True,
                samesite=self.get_cookie_samesite(app),
            )
            return
        response.set_cookie(
            self.get_cookie_name(app),
            session.sid,
            expires=self.get_expiration_time(app, session),
            httponly=True,
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
        )

    def start(self, session: RedisSession, session_id: str, data: dict[str, str]) -> None:
        """Turn ``session`` into a new one under ``session_id`` holding only ``data``: nothing
        from before carries over (no fixation), and the old id is ended."""
        if session:  # a live session, read from Redis: its id must not outlive this sign-in
            self.end(session.sid)
        session.clear()
        session.update(data)
        session.sid = session_id

    def new_session_id(self) -> str:
        """A fresh, unguessable session id (256 bits)."""
        return self._generate_sid(self.sid_length)

    def end(self, session_id: str) -> None:
        """End a session for good: deleted now, and never written again under this id."""
        with self.client.pipeline() as pipe:
            pipe.delete(self._get_store_id(session_id))
            pipe.set(self._ended_key(session_id), b"1", ex=self._lifetime(self.app))
            pipe.execute()

    def _ended_key(self, session_id: str) -> str:
        return f"{self.key_prefix}ended:{session_id}"

    @staticmethod
    def _lifetime(app: Flask) -> int:
        return int(app.permanent_session_lifetime.total_seconds())


def raise_session_error() -> None:
    """Re-raise, inside the request, a Redis error met while opening its session, so that the
    error handlers answer it (503) like any other Redis outage.

    Raises:
        redis.RedisError: the session could not be read.
    """
    error = g.pop("session_error", None)
    if error is not None:
        raise error
