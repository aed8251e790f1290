"""Browser-facing hardening: security headers on every answer, and same-origin checks."""

from flask import Flask, Response, abort, current_app, request


def init_app(app: Flask) -> None:
    """Add the security headers to every response of ``app``."""
    app.after_request(_security_headers)


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
