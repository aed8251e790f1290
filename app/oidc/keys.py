"""The provider's signing keys: the current one signs, the previous one stays in the JWKS.

Production reads PEM files (``OIDC_SIGNING_KEY``, ``OIDC_SIGNING_KEY_PREVIOUS``); development
makes one RSA key once and keeps it in Redis, where every worker finds the same one. Each
key's ``kid`` is its RFC 7638 thumbprint: stable across restarts and hosts.

All key handling is joserfc's: nothing here encodes or signs by hand.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

#: The algorithm each kind of key signs with.
ALGORITHMS = {"RSA": "RS256", "EC": "ES256"}


class SigningKeyError(ValueError):
    """A signing key file is missing, unreadable, or not an RSA or P-256 private key."""


class SigningKeys:
    """The key that signs and the keys that verify.

    Args:
        current: returns the private key tokens are signed with; called once, at first use
            (the development key lives in Redis, which need not answer at start-up).
        previous: a private key from before a rotation, published until its tokens expire.
    """

    def __init__(
        self, current: Callable[[], RSAKey | ECKey], previous: RSAKey | ECKey | None = None
    ) -> None:
        self._load_current = current
        self._current: RSAKey | ECKey | None = None
        self.previous = previous

    @property
    def current(self) -> RSAKey | ECKey:
        """The private key tokens are signed with."""
        if self._current is None:
            self._current = self._load_current()
        return self._current

    @property
    def algorithm(self) -> str:
        """``RS256`` or ``ES256``, after the current key's type."""
        return ALGORITHMS[self.current.key_type]

    @property
    def algorithms(self) -> list[str]:
        """Every algorithm a published key verifies with."""
        return sorted({ALGORITHMS[key.key_type] for key in self._published()})

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: ``{"keys": [...]}``, each with ``kid``, ``alg`` and ``use``."""
        return {
            "keys": [
                {
                    **key.as_dict(private=False),
                    "kid": key.thumbprint(),
                    "alg": ALGORITHMS[key.key_type],
                    "use": "sig",
                }
                for key in self._published()
            ]
        }

    def public_key_set(self) -> KeySet:
        """The published keys as a joserfc ``KeySet`` (to verify an ``id_token_hint``)."""
        return KeySet.import_key_set(self.jwks())

    def sign(self, claims: dict[str, Any], *, typ: str = "JWT") -> str:
        """Sign ``claims`` with the current key: a compact JWS with its ``kid``."""
        header = {"alg": self.algorithm, "kid": self.current.thumbprint(), "typ": typ}
        return jwt.encode(header, claims, self.current, [self.algorithm])

    def _published(self) -> list[RSAKey | ECKey]:
        return [key for key in (self.current, self.previous) if key is not None]


def load_key(path: str) -> RSAKey | ECKey:
    """Read a PEM private key (RSA, or EC on P-256).

    Raises:
        SigningKeyError: the file cannot be read, or holds no such private key.
    """
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read {path}: {exc.strerror}") from None
    for kind in (RSAKey, ECKey):
        try:
            key = kind.import_key(pem)
        except (ValueError, TypeError, JoseError):
            continue
        if key.is_private and (kind is RSAKey or key.curve_name == "P-256"):
            return key
    raise SigningKeyError(f"{path} holds no RSA or P-256 EC private key in PEM")


def development_key(redis_client: redis.Redis, key_name: str) -> RSAKey:
    """The development signing key: made once, kept in Redis so that every worker (and every
    restart) signs with the same one.

    Args:
        redis_client: the shared Redis.
        key_name: where the PEM is kept.
    """
    stored = redis_client.get(key_name)
    if stored is None:
        # Only the first worker's key is kept (NX); the others read it back.
        made = RSAKey.generate_key(2048)
        redis_client.set(key_name, made.as_pem(private=True).decode(), nx=True)
        stored = redis_client.get(key_name)
    return RSAKey.import_key(stored)
