"""Cookies: the browser-binding secret and the session, Secure exactly when served over https."""

import secrets

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface

from ..login.store import hash_secret

#: Holds the random secret that binds login attempts to this browser (Redis keeps its hash).
BROWSER_COOKIE = "wxlogin_browser"


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
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
        path="/",
    )


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, marked Secure whenever the request came over https.

    Local development on plain http keeps working; behind a proxy, set ``TRUSTED_PROXIES`` so
    that its ``X-Forwarded-Proto`` counts.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)
