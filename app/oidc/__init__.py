"""The OpenID Connect provider: any app signs in with the WeChat scan.

``init_app`` builds the ``Provider`` (``app.extensions["oidc"]``) on Authlib's server, registers
the endpoints (``views.py``) and the ``flask oidc`` commands (``cli.py``).
"""

import requests
from flask import Flask
from joserfc.jwk import ECKey, RSAKey

from config import SettingsError

from ..login.users import UserStore
from . import cli, views
from .backchannel import BackchannelSender
from .clients import ClientStore
from .keys import SigningKeyError, SigningKeys, development_key, load_key
from .provider import Provider
from .sessions import SessionRegistry
from .tokens import TokenStore

#: The issuer in development when neither OIDC_ISSUER nor PUBLIC_BASE_URL is set: the address
#: of `flask --app wsgi run`.
DEVELOPMENT_ISSUER = "http://127.0.0.1:5000"


def init_app(app: Flask, users: UserStore) -> Provider:
    """Build the provider of ``app`` and register its endpoints and commands.

    Args:
        app: the app; Redis (``app.extensions["redis"]``) and ``REDIS_KEY_PREFIX`` set.
        users: the user records (``sub`` is ``User.id``).

    Returns:
        The ``Provider``, also ``app.extensions["oidc"]``.

    Raises:
        SettingsError: ``OIDC_SIGNING_KEY`` or ``OIDC_SIGNING_KEY_PREVIOUS`` cannot be used.
    """
    redis_client, prefix = app.extensions["redis"], app.config["REDIS_KEY_PREFIX"]
    # One issuer, exactly, everywhere: no trailing slash. Without OIDC_ISSUER or
    # PUBLIC_BASE_URL (development only), the address the quick start opens.
    issuer = app.config["OIDC_ISSUER"] or app.config["PUBLIC_BASE_URL"] or DEVELOPMENT_ISSUER
    app.config["OIDC_ISSUER"] = issuer.rstrip("/")
    keys = _signing_keys(app)
    clients = ClientStore(redis_client, prefix=prefix)
    app.extensions["oidc_clients"] = clients
    provider = Provider(
        app,
        clients=clients,
        tokens=TokenStore(redis_client, prefix=prefix),
        users=users,
        keys=keys,
        registry=SessionRegistry(redis_client, prefix=prefix),
        sender=BackchannelSender(
            issuer=app.config["OIDC_ISSUER"],
            sign=lambda claims: keys.sign(claims, typ="logout+jwt"),
            session=requests.Session(),
        ),
        end_browser_session=views.end_browser_session,
    )
    app.extensions["oidc"] = provider
    app.register_blueprint(views.bp)
    cli.init_app(app)
    return provider


def _signing_keys(app: Flask) -> SigningKeys:
    """The keys named by ``OIDC_SIGNING_KEY`` (and ``_PREVIOUS``), read now so that a bad one
    stops the start; in development without one, a key made once and kept in Redis, fetched
    at first use (Redis need not answer at start-up).

    Raises:
        SettingsError: a key file cannot be used (the message names the setting).
    """
    previous = _key_of(app, "OIDC_SIGNING_KEY_PREVIOUS")
    current = _key_of(app, "OIDC_SIGNING_KEY")
    if current is not None:
        return SigningKeys(lambda: current, previous)
    redis_client, name = app.extensions["redis"], app.config["REDIS_KEY_PREFIX"]
    return SigningKeys(
        lambda: development_key(redis_client, name + "oidc:development_key"), previous
    )


def _key_of(app: Flask, setting: str) -> RSAKey | ECKey | None:
    """The key a setting names (None when unset).

    Raises:
        SettingsError: the file cannot be used.
    """
    if not app.config[setting]:
        return None
    try:
        return load_key(app.config[setting])
    except SigningKeyError as exc:
        raise SettingsError(
            setting,
            str(exc),
            "name a PEM private key file (openssl genpkey -algorithm RSA -pkeyopt "
            "rsa_keygen_bits:2048 -out oidc.pem)",
        ) from None
