"""Browser-facing hardening: security headers on every answer, a body limit on every route,
JSON that cannot overflow the parser's stack, and same-origin checks."""

from typing import Any

from flask import Flask, Response, abort, current_app, request
from flask.json.provider import DefaultJSONProvider

from ..wechat.messages import MAX_MESSAGE_BYTES

#: Paths whose answers carry identity or one-time codes (the API; the callback's replies name
#: the browser being signed in): no browser or proxy may keep a copy.
NO_STORE_PATHS = ("/api/", "/wechat/", "/oidc/", "/login/")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, but a document nested too deeply to parse is malformed (a 400 from
    ``request.get_json``), not a ``RecursionError`` (a 500)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON text.

        Raises:
            ValueError: not JSON, or nested deeper than Python's recursion limit.
        """
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def init_app(app: Flask) -> None:
    """Harden every route of ``app``: security headers, ``Cache-Control: no-store`` on
    ``NO_STORE_PATHS``, a 413 for any body over ``MAX_MESSAGE_BYTES`` (the largest thing we
    accept is a WeChat callback), and the ``JSONProvider``."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_MESSAGE_BYTES
    app.json = JSONProvider(app)
    app.before_request(_refuse_oversize_body)
    app.after_request(_security_headers)


def _refuse_oversize_body() -> None:
    # werkzeug only refuses a large body when a view reads it: refuse it on every route, up
    # front, whether its view reads the body or not. Except the callback: it checks (and
    # spends, against replays) the signature first, then refuses an oversize body itself.
    if request.path.startswith("/wechat/"):
        return
    if (request.content_length or 0) > current_app.config["MAX_CONTENT_LENGTH"]:
        abort(413)


def _security_headers(response: Response) -> Response:
    socket_origin = ("wss://" if request.is_secure else "ws://") + request.host
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {socket_origin}; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'",
    )
    # A framed QR code is the classic login hijack: never be framed, by any browser.
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.is_secure:
        hsts = "max-age=31536000"
        if current_app.config["HSTS_INCLUDE_SUBDOMAINS"]:
            hsts += "; includeSubDomains"
        response.headers.setdefault("Strict-Transport-Security", hsts)
    if request.path.startswith(NO_STORE_PATHS):
        response.headers["Cache-Control"] = "no-store"
    return response


def require_same_origin() -> None:
    """Refuse (403) a request whose ``Origin`` is not this site or an allowed origin.

    Browsers send ``Origin`` on websocket handshakes and on ``fetch`` POSTs, so a missing one
    is refused too: that is no page of ours.
    """
    origin = request.headers.get("Origin", "").rstrip("/")
    own = f"{request.scheme}://{request.host}"
    if origin != own and origin not in current_app.config["LOGIN_ALLOWED_ORIGINS"]:
        abort(403, "请求来源不被允许。")
