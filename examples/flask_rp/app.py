"""An example site that signs people in with the WeChat-login OpenID provider.

It is a relying party written as any Flask site would be, with Authlib's Flask client: sign-in
by the authorization code flow with PKCE (S256) and a nonce, the ID token checked by Authlib
against the provider's JWKS, the WeChat openid read from userinfo (scope ``wechat``);
sign-out through the provider's ``end_session_endpoint`` (RP-initiated logout); and
OpenID Connect Back-Channel Logout 1.0 at ``/backchannel-logout``, so that a person who signs
out anywhere else (or replies "0" in WeChat) is signed out here too.

Its sessions are server-side (``SessionStore``): the cookie holds only a random id, so the
back-channel, which arrives without the browser, can end them.

Settings, from the environment (or ``create_app(settings)``):

- ``PROVIDER_URL``: the provider's issuer, e.g. ``http://127.0.0.1:5000``.
- ``RP_CLIENT_ID``, ``RP_CLIENT_SECRET``: from ``flask --app wsgi oidc add-client``.
- ``RP_BASE_URL``: this site's own address (default ``http://localhost:8000``); its
  ``/callback``, ``/signed-out`` and ``/backchannel-logout`` are what the client registers.
- ``SECRET_KEY``: signs this site's cookie (default: random per start).

Run: ``flask --app app run --port 8000`` in this folder (see README.md).

Docs followed: https://docs.authlib.org/en/latest/client/flask.html,
https://openid.net/specs/openid-connect-rpinitiated-1_0.html and
https://openid.net/specs/openid-connect-backchannel-1_0.html
"""

import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.flask_client import OAuth
from flask import Flask, Response, abort, jsonify, redirect, render_template, request, session
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

#: The event a logout token must carry (Back-Channel Logout 1.0, section 2.4).
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: How far the clocks of the provider and this site may disagree, in seconds.
LEEWAY_SECONDS = 60
#: How long a logout token's ``jti`` is remembered to refuse a replay, in seconds.
JTI_SECONDS = 600


class LogoutTokenError(ValueError):
    """A logout token that must be refused (answered 400): its reason is the message."""


@dataclass(frozen=True)
class SignedIn:
    """A session of this site.

    Attributes:
        sub: the provider's user id (a random id, never the openid).
        sid: the provider's session id, from the ID token; logout tokens name it.
        wechat_openid: the person's openid with the provider's official account.
        id_token: the raw ID token, sent back as ``id_token_hint`` at sign-out.
        signed_in_at: epoch seconds.
    """

    sub: str
    sid: str
    wechat_openid: str
    id_token: str
    signed_in_at: float


class SessionStore:
    """This site's sessions, in memory (one process), so that the back-channel can end them.

    A real site keeps them where all its processes see them (its database, Redis); the one
    requirement is being able to find and end every session of a provider ``sid`` or ``sub``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, SignedIn] = {}
        self._seen_jti: dict[str, float] = {}

    def start(self, signed_in: SignedIn) -> str:
        """Keep a new session: its random id, for the cookie."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = signed_in
        return session_id

    def get(self, session_id: str | None) -> SignedIn | None:
        """The session with this id, or None (never started, or ended)."""
        with self._lock:
            return self._sessions.get(session_id or "")

    def end(self, session_id: str | None) -> SignedIn | None:
        """End one session: what it was, or None."""
        with self._lock:
            return self._sessions.pop(session_id or "", None)

    def end_all(self, *, sid: str | None, sub: str | None) -> int:
        """End every session of the provider session ``sid`` (or, without one, of ``sub``):
        how many."""
        with self._lock:
            ended = [
                key
                for key, value in self._sessions.items()
                if (value.sid == sid if sid else value.sub == sub)
            ]
            for key in ended:
                del self._sessions[key]
        return len(ended)

    def first_use_of_jti(self, jti: str, now: float) -> bool:
        """Remember a logout token's ``jti``: False if it was seen in the last JTI_SECONDS."""
        with self._lock:
            self._seen_jti = {k: t for k, t in self._seen_jti.items() if t > now - JTI_SECONDS}
            if jti in self._seen_jti:
                return False
            self._seen_jti[jti] = now
            return True

    def count(self) -> int:
        """How many sessions are live."""
        with self._lock:
            return len(self._sessions)


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    """The example site.

    Args:
        settings: overrides of the environment: ``PROVIDER_URL``, ``RP_CLIENT_ID``,
            ``RP_CLIENT_SECRET``, ``RP_BASE_URL``, ``SECRET_KEY``.

    Raises:
        RuntimeError: ``PROVIDER_URL`` or ``RP_CLIENT_ID`` is unset, naming it.
    """
    app = Flask(__name__)
    for name, default in (
        ("PROVIDER_URL", ""),
        ("RP_CLIENT_ID", ""),
        ("RP_CLIENT_SECRET", ""),
        ("RP_BASE_URL", "http://localhost:8000"),
        ("SECRET_KEY", ""),
    ):
        app.config[name] = os.environ.get(name, default)
    app.config.update(settings or {})
    for name in ("PROVIDER_URL", "RP_CLIENT_ID"):
        if not app.config[name]:
            raise RuntimeError(f"{name} is unset: see examples/flask_rp/README.md")
    app.config["PROVIDER_URL"] = app.config["PROVIDER_URL"].rstrip("/")
    app.config["RP_BASE_URL"] = app.config["RP_BASE_URL"].rstrip("/")
    app.secret_key = app.config["SECRET_KEY"] or secrets.token_hex(32)
    # Not "session": the provider's cookie on the same host (another port) has that name, and
    # browsers do not keep cookies apart by port.
    app.config["SESSION_COOKIE_NAME"] = "flask_rp_session"

    oauth = OAuth(app)
    provider = oauth.register(
        "wechat",
        client_id=app.config["RP_CLIENT_ID"],
        client_secret=app.config["RP_CLIENT_SECRET"] or None,
        server_metadata_url=app.config["PROVIDER_URL"] + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid wechat", "code_challenge_method": "S256"},
    )
    store = SessionStore()
    app.extensions["flask_rp"] = store
    base = app.config["RP_BASE_URL"]

    def current() -> SignedIn | None:
        return store.get(session.get("id"))

    @app.get("/")
    def index() -> str:
        return render_template("index.html", user=current())

    @app.get("/login")
    def login() -> Response:
        # Authlib adds state, nonce and the PKCE verifier, and keeps them in the cookie.
        return provider.authorize_redirect(base + "/callback")

    @app.get("/callback")
    def callback() -> Response:
        # Checks state, exchanges the code with the verifier, and validates the ID token
        # (signature against the JWKS, iss, aud, exp, iat, nonce, at_hash).
        token = provider.authorize_access_token()
        claims = token["userinfo"]
        info = provider.userinfo(token=token)
        if info["sub"] != claims["sub"]:
            abort(400, "userinfo is about someone else")
        session.clear()
        session["id"] = store.start(
            SignedIn(
                sub=claims["sub"],
                sid=claims.get("sid", ""),
                wechat_openid=info.get("wechat_openid", ""),
                id_token=token["id_token"],
                signed_in_at=time.time(),
            )
        )
        return redirect(base + "/")

    @app.post("/logout")
    def logout() -> Response:
        ended = store.end(session.pop("id", None))
        if ended is None:
            return redirect(base + "/")
        # RP-initiated logout: the provider ends its session, and so every app's.
        metadata = provider.load_server_metadata()
        query = urlencode(
            {"id_token_hint": ended.id_token, "post_logout_redirect_uri": base + "/signed-out"}
        )
        return redirect(f"{metadata['end_session_endpoint']}?{query}")

    @app.get("/signed-out")
    def signed_out() -> str:
        return render_template("index.html", user=current(), signed_out=True)

    @app.post("/backchannel-logout")
    def backchannel_logout() -> tuple[Response, int]:
        try:
            claims = verify_logout_token(
                request.form.get("logout_token", ""),
                keys=lambda force: KeySet.import_key_set(provider.fetch_jwk_set(force=force)),
                issuer=provider.load_server_metadata()["issuer"],
                client_id=app.config["RP_CLIENT_ID"],
                algorithms=provider.load_server_metadata()["id_token_signing_alg_values_supported"],
            )
            if not store.first_use_of_jti(claims["jti"], time.time()):
                raise LogoutTokenError("this logout token was used already")
        except LogoutTokenError as exc:
            answer = jsonify(error="invalid_request", error_description=str(exc))
            answer.headers["Cache-Control"] = "no-store"
            return answer, 400
        ended = store.end_all(sid=claims.get("sid"), sub=claims.get("sub"))
        app.logger.info("back-channel logout: %d session(s) ended", ended)
        answer = jsonify(ended=ended)
        answer.headers["Cache-Control"] = "no-store"
        return answer, 200

    return app


def verify_logout_token(
    token: str,
    *,
    keys: Any,
    issuer: str,
    client_id: str,
    algorithms: list[str],
    now: float | None = None,
) -> dict[str, Any]:
    """Validate a logout token as Back-Channel Logout 1.0 section 2.6 asks.

    Args:
        token: the compact JWT posted as ``logout_token``.
        keys: ``keys(force: bool) -> KeySet``, the provider's JWKS (``force`` fetches it
            afresh, for a ``kid`` not seen yet: the provider rotated its key).
        issuer: the provider's issuer, exactly.
        client_id: this site's client id: the audience.
        algorithms: the signing algorithms accepted (discovery's).
        now: the time in epoch seconds (default: now).

    Returns:
        The token's claims: ``iss``, ``aud``, ``iat``, ``jti``, ``events``, and ``sid`` and/or
        ``sub``.

    Raises:
        LogoutTokenError: a bad signature, a wrong issuer or audience, a token too old or
            from the future, no back-channel event, neither ``sid`` nor ``sub``, a ``nonce``.
    """
    if not token:
        raise LogoutTokenError("no logout_token")
    try:
        try:
            decoded = jwt.decode(token, keys(False), algorithms=algorithms)
        except InvalidKeyIdError:
            decoded = jwt.decode(token, keys(True), algorithms=algorithms)
        JWTClaimsRegistry(
            now=int(now) if now is not None else None,
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id},
            iat={"essential": True},
            jti={"essential": True},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise LogoutTokenError(f"not a valid logout token: {exc}") from None
    claims = decoded.claims
    if decoded.header.get("typ", "logout+jwt") != "logout+jwt":
        raise LogoutTokenError("typ is not logout+jwt")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise LogoutTokenError("no back-channel logout event")
    if not (claims.get("sid") or claims.get("sub")):
        raise LogoutTokenError("neither sid nor sub")
    if "nonce" in claims:
        raise LogoutTokenError("a logout token never carries a nonce")
    # Without "exp" (optional in the spec), an old token is refused by its age, so that the
    # jti remembered for JTI_SECONDS is enough to refuse every replay.
    if "exp" not in claims and claims["iat"] < (time.time() if now is None else now) - JTI_SECONDS:
        raise LogoutTokenError("issued too long ago")
    return claims
