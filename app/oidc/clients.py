"""OpenID Connect clients (relying parties): the registered record, and its store in Redis.

Clients are registered by the operator (``flask oidc add-client``), never by a request: there
is no dynamic registration. Authlib's server asks the record the protocol questions (which
redirect URIs, which scopes, which authentication at the token endpoint) through the
``ClientMixin`` methods; the answers are ours, the protocol is Authlib's.

A confidential client's secret is shown once, when it is made, and stored only as its SHA-256:
the secret is 256 random bits, so a plain hash cannot be reversed by guessing, and a slow
password hash would buy nothing.
"""

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hmac import compare_digest
from typing import Any
from urllib.parse import urlsplit

import redis
from authlib.oauth2.rfc6749 import ClientMixin

log = logging.getLogger(__name__)

#: The scopes any client may be granted: ``openid`` (the ID token, ``sub``), ``wechat``
#: (the ``wechat_openid`` and ``wechat_unionid`` claims), and ``profile`` (``name`` and
#: ``picture``, when the website login gave a nickname and avatar).
SCOPES = frozenset({"openid", "wechat", "profile"})
#: The scope that asks for refresh tokens, granted only to clients allowed it.
OFFLINE_ACCESS = "offline_access"
#: The endpoints at which a client authenticates (Authlib's ``ENDPOINT_NAME``s).
AUTHENTICATING_ENDPOINTS = frozenset({"token", "revocation"})
#: Hosts for which plain http is allowed, on any port: native apps and development servers
#: receive their redirect on the device itself (RFC 8252 section 7.3).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def hash_secret(client_secret: str) -> str:
    """The form a client secret is stored and compared in.

    Args:
        client_secret: the secret as the client sends it.

    Returns:
        The SHA-256 of its UTF-8 bytes, in hex (64 characters).
    """
    return hashlib.sha256(client_secret.encode()).hexdigest()


def validate_uri(uri: str) -> str:
    """Check a URI a client registers (redirect, post-logout redirect or back-channel logout).

    Allowed: an absolute ``https`` URI with a host; ``http`` only to ``127.0.0.1``,
    ``localhost`` or ``[::1]``, on any port. Refused: any other scheme (``javascript:``,
    ``data:``, custom schemes), a fragment (even an empty ``#``: RFC 6749 section 3.1.2), user
    information before the host (``https://good.example@evil.example`` reads as one host and
    goes to another), an invalid port, and whitespace or control characters.

    Args:
        uri: the URI as registered; it is later matched as this exact string.

    Returns:
        ``uri``, unchanged.

    Raises:
        ValueError: the URI is refused; the message names it and why.
    """

    def refuse(reason: str) -> ValueError:
        return ValueError(f"{uri!r} is refused: {reason}")

    if any(character.isspace() or not character.isprintable() for character in uri):
        raise refuse("it contains whitespace or control characters")
    if "#" in uri:
        raise refuse("a redirect URI must not have a fragment")
    parts = urlsplit(uri)
    try:
        parts.port  # noqa: B018 (parsing the port is the check: it raises on a bad one)
    except ValueError:
        raise refuse("its port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise refuse("it must be an absolute https URI with a host")
    if "@" in parts.netloc:
        raise refuse("it must not carry user information before the host")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http":
        if parts.hostname in LOOPBACK_HOSTS:
            return uri
        raise refuse("http is allowed only to 127.0.0.1, localhost or [::1]; use https")
    raise refuse("it must be an absolute https URI with a host")


@dataclass(frozen=True)
class OIDCClient(ClientMixin):
    """A registered relying party, as Authlib's server asks about it.

    Attributes:
        client_id: its public identifier: 128 random bits in hex (32 characters).
        client_name: shown on the login and consent pages and in the scanner's WeChat reply.
        secret_hash: SHA-256 hex of its secret (``hash_secret``); ``""`` for a public client.
            Left out of ``repr``.
        redirect_uris: where authorization answers may go, matched as exact strings; the
            first is the default.
        post_logout_redirect_uris: where RP-initiated logout may send the browser afterwards.
        backchannel_logout_uri: where logout tokens are posted; ``""`` if none.
        public: a client that cannot keep a secret (a browser or native app): it
            authenticates with ``none`` and must use PKCE.
        trusted: skips the consent page.
        allow_offline_access: may be granted ``offline_access``, and so refresh tokens.
        created_at: epoch seconds.
    """

    client_id: str
    client_name: str
    secret_hash: str = field(repr=False)
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    backchannel_logout_uri: str
    public: bool
    trusted: bool
    allow_offline_access: bool
    created_at: float

    @property
    def token_endpoint_auth_methods(self) -> tuple[str, ...]:
        """How it authenticates at the token and revocation endpoints: ``("none",)`` for a
        public client, ``("client_secret_basic", "client_secret_post")`` otherwise."""
        if self.public:
            return ("none",)
        return ("client_secret_basic", "client_secret_post")

    @property
    def grant_types(self) -> tuple[str, ...]:
        """``authorization_code``, and ``refresh_token`` if it may have offline access."""
        if self.allow_offline_access:
            return ("authorization_code", "refresh_token")
        return ("authorization_code",)

    @property
    def client_metadata(self) -> dict[str, Any]:
        """Its registration metadata under the names of RFC 7591 and OpenID Connect.

        Authlib's RP-initiated logout reads ``post_logout_redirect_uris`` here.

        Returns:
            ``{"client_name", "redirect_uris", "post_logout_redirect_uris",
            "token_endpoint_auth_method", "grant_types", "response_types"}`` (lists as lists),
            and ``"backchannel_logout_uri"`` when it has one. Never the secret or its hash.
        """
        metadata: dict[str, Any] = {
            "client_name": self.client_name,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "token_endpoint_auth_method": self.token_endpoint_auth_methods[0],
            "grant_types": list(self.grant_types),
            "response_types": ["code"],
        }
        if self.backchannel_logout_uri:
            metadata["backchannel_logout_uri"] = self.backchannel_logout_uri
        return metadata

    def to_json(self) -> dict[str, Any]:
        """The shape ``flask oidc list-clients`` prints: every attribute but the secret hash,
        ``created_at`` in ISO 8601 (UTC), URIs as lists."""
        return {
            "client_id": self.client_id,
            "client_name": self.client_name,
            "public": self.public,
            "trusted": self.trusted,
            "allow_offline_access": self.allow_offline_access,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "backchannel_logout_uri": self.backchannel_logout_uri,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(
                timespec="seconds"
            ),
        }

    def get_client_id(self) -> str:
        """Its ``client_id``."""
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        """The first registered redirect URI (used when a request names none)."""
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        """The part of a requested scope this client may have.

        Args:
            scope: the requested scope, space-separated; None or ``""`` when absent.

        Returns:
            The requested values that are ``openid`` or ``wechat``, or ``offline_access`` when
            ``allow_offline_access``, space-separated, in the order asked, each once; ``""``
            when none is.
        """
        allowed = (SCOPES | {OFFLINE_ACCESS}) if self.allow_offline_access else SCOPES
        granted = dict.fromkeys(value for value in (scope or "").split() if value in allowed)
        return " ".join(granted)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Tell whether ``redirect_uri`` is registered, as this exact string (no prefix or
        wildcard match, no normalisation)."""
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        """Tell whether ``client_secret`` is this client's secret, in constant time.

        The hashes are compared, with ``hmac.compare_digest``: their length is always 64, so
        the time taken says nothing about the secret. A public client has no secret: always
        False.
        """
        if self.public or not self.secret_hash:
            return False
        return compare_digest(hash_secret(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """Tell whether the client may authenticate with ``method`` at ``endpoint``.

        Args:
            method: ``none``, ``client_secret_basic``, ``client_secret_post``, or another
                Authlib knows.
            endpoint: Authlib's endpoint name: ``token`` or ``revocation`` (any other: False).

        Returns:
            For a public client, ``none`` only; for a confidential one, ``client_secret_basic``
            or ``client_secret_post``, never ``none`` (Authlib also asks this to tell the two
            kinds apart).
        """
        return endpoint in AUTHENTICATING_ENDPOINTS and method in self.token_endpoint_auth_methods

    def check_response_type(self, response_type: str) -> bool:
        """Tell whether ``response_type`` is ``code``: no implicit, no hybrid (OAuth 2.1)."""
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        """Tell whether ``grant_type`` is one of ``grant_types``."""
        return grant_type in self.grant_types


class ClientStore:
    """Reads and writes the registered clients.

    Keys: ``<prefix>oidc:client:<client_id>``, a hash per client, and ``<prefix>oidc:clients``,
    the set of every ``client_id``.

    Args:
        redis_client: a client with ``decode_responses=True``.
        prefix: put before every key (``REDIS_KEY_PREFIX``).
        clock: returns the time in epoch seconds.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._clock = clock

    def _key(self, client_id: str | None = None) -> str:
        """A client's hash with ``client_id``, else the set of every id."""
        if client_id is None:
            return f"{self._prefix}oidc:clients"
        return f"{self._prefix}oidc:client:{client_id}"

    def add(
        self,
        *,
        name: str,
        redirect_uris: Iterable[str],
        public: bool = False,
        trusted: bool = False,
        post_logout_redirect_uris: Iterable[str] = (),
        backchannel_logout_uri: str = "",
        allow_offline_access: bool = False,
    ) -> tuple[OIDCClient, str | None]:
        """Register a client.

        Args:
            name: the name people see when signing in to it (surrounding spaces removed).
            redirect_uris: at least one; a URI given twice is kept once, in first order.
            public: it cannot keep a secret and gets none.
            trusted: it skips the consent page.
            post_logout_redirect_uris: where RP-initiated logout may send the browser.
            backchannel_logout_uri: where logout tokens are posted; ``""`` for none.
            allow_offline_access: it may be granted ``offline_access`` and refresh tokens.

        Returns:
            ``(client, client_secret)``: the secret (43 URL-safe characters, 256 bits) is
            returned this once and never stored; None for a public client.

        Raises:
            ValueError: an empty name, or one with control characters; no redirect URI; or a
                URI ``validate_uri`` refuses (the message names it).
        """
        name = name.strip()
        if not name or not name.isprintable():
            raise ValueError(f"client name {name!r} is refused: it must be printable, not empty")
        redirect_uris = _validated(redirect_uris)
        if not redirect_uris:
            raise ValueError("a client needs at least one redirect URI")
        post_logout_redirect_uris = _validated(post_logout_redirect_uris)
        if backchannel_logout_uri:
            validate_uri(backchannel_logout_uri)
        client_secret = None if public else secrets.token_urlsafe(32)
        client = OIDCClient(
            # Hex, not URL-safe base64: an id starting with "-" would read as an option on the
            # command line (``flask oidc remove-client -x...``).
            client_id=secrets.token_hex(16),
            client_name=name,
            secret_hash=hash_secret(client_secret) if client_secret else "",
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=post_logout_redirect_uris,
            backchannel_logout_uri=backchannel_logout_uri,
            public=public,
            trusted=trusted,
            allow_offline_access=allow_offline_access,
            created_at=self._clock(),
        )
        with self._redis.pipeline() as pipe:
            pipe.hset(self._key(client.client_id), mapping=_record(client))
            pipe.sadd(self._key(), client.client_id)
            pipe.execute()
        return client, client_secret

    def get(self, client_id: str) -> OIDCClient | None:
        """Load a client.

        Returns:
            The client, or None if no client has this id. A record that does not read as a
            client (cut short, or written by hand) is None too, and logged.
        """
        data = self._redis.hgetall(self._key(client_id))
        return _client_from(client_id, data) if data else None

    def list(self) -> list[OIDCClient]:
        """Every registered client, oldest first (records that do not read are left out)."""
        client_ids = sorted(self._redis.smembers(self._key()))
        with self._redis.pipeline(transaction=False) as pipe:
            for client_id in client_ids:
                pipe.hgetall(self._key(client_id))
            records = pipe.execute()
        found = (
            _client_from(client_id, data)
            for client_id, data in zip(client_ids, records, strict=True)
            if data
        )
        return sorted(
            (client for client in found if client is not None),
            key=lambda client: (client.created_at, client.client_id),
        )

    def remove(self, client_id: str) -> bool:
        """Forget a client: it can no longer authenticate or be sent to.

        Its tokens are not this store's: the caller revokes them (``flask oidc remove-client``
        does).

        Returns:
            True if it was registered.
        """
        with self._redis.pipeline() as pipe:
            pipe.delete(self._key(client_id))
            pipe.srem(self._key(), client_id)
            deleted, unlisted = pipe.execute()
        return bool(deleted or unlisted)


def _validated(uris: Iterable[str]) -> tuple[str, ...]:
    """``uris`` checked by ``validate_uri``, each once, in first order."""
    return tuple(dict.fromkeys(validate_uri(uri) for uri in uris))


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _record(client: OIDCClient) -> dict[str, str]:
    """The Redis hash of ``client``: lists of URIs as JSON arrays, flags as ``1``/``0``."""
    return {
        "client_id": client.client_id,
        "client_name": client.client_name,
        "secret_hash": client.secret_hash,
        "redirect_uris": json.dumps(client.redirect_uris),
        "post_logout_redirect_uris": json.dumps(client.post_logout_redirect_uris),
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "public": _flag(client.public),
        "trusted": _flag(client.trusted),
        "allow_offline_access": _flag(client.allow_offline_access),
        "created_at": repr(client.created_at),
    }


def _client_from(client_id: str, data: dict[str, str]) -> OIDCClient | None:
    """The client a hash written by ``_record`` holds, or None (logged) if it does not read."""
    try:
        redirect_uris = tuple(json.loads(data["redirect_uris"]))
        if not redirect_uris:
            raise ValueError("no redirect URI")
        return OIDCClient(
            client_id=client_id,
            client_name=data["client_name"],
            secret_hash=data["secret_hash"],
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=tuple(json.loads(data["post_logout_redirect_uris"])),
            backchannel_logout_uri=data["backchannel_logout_uri"],
            public=data["public"] == "1",
            trusted=data["trusted"] == "1",
            allow_offline_access=data["allow_offline_access"] == "1",
            created_at=float(data["created_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("OIDC client %s: its record does not read (%r): ignored", client_id, exc)
        return None
