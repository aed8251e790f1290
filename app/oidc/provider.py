"""The OpenID Provider: the parts tied together, and what happens when a session ends.

``app.extensions["oidc"]`` is a ``Provider``. The views (``views.py``) ask it; the login flow
tells it when a browser session ends (sign-out, the scanner's "0", RP-initiated logout), and
its sweep notices sessions that expired: each time, every token issued in that session is
revoked at once and every client that received one and has a ``backchannel_logout_uri`` is
sent a logout token, off the request's path.
"""

import logging
import os
import threading
from typing import Any

import redis
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import InvalidGrantError
from flask import Flask

from ..login.users import UserStore
from .backchannel import BackchannelSender
from .clients import ClientStore
from .keys import SigningKeys
from .server import EndSessionEndpoint, Grants, build_server, session_sid
from .sessions import SessionEndedError, SessionRegistry
from .tokens import TokenStore

log = logging.getLogger(__name__)

#: How often each process looks for sessions that expired, in seconds.
SWEEP_SECONDS = 30


class Provider:
    """The OpenID Provider of one app.

    Args:
        app: the Flask app (its config: ``OIDC_*``, ``PUBLIC_BASE_URL``, ``SECRET_KEY``).
        clients, tokens, users: the stores.
        keys: the signing keys.
        registry: which clients got tokens in which session.
        sender: posts logout tokens.
        end_browser_session: ends the current browser's session for good (RP-initiated logout).
    """

    def __init__(
        self,
        app: Flask,
        *,
        clients: ClientStore,
        tokens: TokenStore,
        users: UserStore,
        keys: SigningKeys,
        registry: SessionRegistry,
        sender: BackchannelSender,
        end_browser_session: Any,
    ) -> None:
        self.app = app
        self.clients = clients
        self.tokens = tokens
        self.users = users
        self.keys = keys
        self._registry = registry
        self._sender = sender
        self._session_seconds = int(app.permanent_session_lifetime.total_seconds())
        self.server, self.protector = build_server(
            app,
            Grants(
                clients=clients,
                tokens=tokens,
                users=users,
                keys=keys,
                issuer=self.issuer,
                access_seconds=app.config["OIDC_ACCESS_TOKEN_SECONDS"],
                refresh_seconds=app.config["OIDC_REFRESH_TOKEN_SECONDS"],
                on_tokens=self._tokens_issued,
            ),
        )
        self.server.register_endpoint(EndSessionEndpoint(keys, end_browser_session))
        self._sweeper_pid: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def issuer(self) -> str:
        """The issuer URL, exactly as in discovery and every token (``OIDC_ISSUER``, settled by
        ``init_app``)."""
        return self.app.config["OIDC_ISSUER"]

    def client_name_of_request(self, request_id: str) -> str:
        """The name of the client whose authorization request waits under ``request_id``
        (for the scanner's message), or ""."""
        held = self.tokens.held_request(request_id)
        client = self.clients.get(held["client_id"]) if held else None
        return client.client_name if client else ""

    def continue_url(self, request_id: str) -> str | None:
        """Where a browser signed in for the authorization request held under ``request_id``
        goes on to: that authorization again (a path on this site), marked as the one the
        sign-in was for; None when ``request_id`` is "", unknown or expired."""
        held = self.tokens.held_request(request_id)
        if not held:
            return None
        return add_params_to_uri(held["url"], {"login_request": request_id})

    def revoke_client(self, client_id: str) -> None:
        """Revoke every token of a client (it was removed)."""
        self.tokens.revoke_client(client_id)

    def session_ended(self, session_id: str) -> None:
        """A browser session ended: revoke its tokens and tell its clients (back-channel).

        Args:
            session_id: the server-side session's id.
        """
        self._end(session_sid(self.app.secret_key, session_id))

    def ensure_sweeper(self) -> None:
        """Start this process's sweep of expired sessions (once per process, after a fork)."""
        with self._lock:
            if self._sweeper_pid == os.getpid():
                return
            self._sweeper_pid = os.getpid()
        threading.Thread(target=self._sweep, name="oidc-session-sweep", daemon=True).start()

    def _tokens_issued(
        self, sid: str, sub: str, client_id: str, family: str, auth_time: int
    ) -> None:
        try:
            self._registry.record(
                sid,
                sub=sub,
                client_id=client_id,
                token_ids=[family],
                expires_at=auth_time + self._session_seconds,
            )
        except SessionEndedError:
            # An exchange or refresh racing the end of its session: what it just made dies.
            self.tokens.revoke_family(family)
            raise InvalidGrantError("The session this grant came from has ended.") from None

    def _end(self, sid: str) -> None:
        ended = self._registry.end(sid)
        if ended is None:
            return
        for family in ended.token_ids:
            self.tokens.revoke_family(family)
        for client_id in ended.client_ids:
            client = self.clients.get(client_id)
            if client is not None and client.backchannel_logout_uri:
                self._sender.send(
                    client_id=client_id,
                    backchannel_logout_uri=client.backchannel_logout_uri,
                    sub=ended.sub,
                    sid=sid,
                )
        log.info("session ended: %d token famil(ies) revoked", len(ended.token_ids))

    def sweep_expired(self) -> int:
        """End every session whose lifetime ran out (their tokens revoked, their clients
        told), as ``session_ended`` does for one ended by hand.

        Returns:
            How many were found expired (another process may have ended some first).
        """
        expired = self._registry.expired()
        for sid in expired:
            self._end(sid)
        return len(expired)

    def close(self) -> None:
        """Stop this process's sweep (at its next wake): no sweep outlives its app (tests
        start one app after another on one Redis)."""
        self._stopping.set()

    def _sweep(self) -> None:
        while not self._stopping.wait(SWEEP_SECONDS):
            try:
                self.sweep_expired()
            except redis.RedisError as exc:
                log.warning("expired-session sweep skipped, Redis unavailable: %s", exc)
            except Exception:
                log.exception("expired-session sweep failed; trying again later")
