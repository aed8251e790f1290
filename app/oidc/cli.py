"""``flask oidc ...``: register, list and remove the OpenID Connect clients (relying parties).

Each command prints JSON on stdout, and nothing else there, so that scripts can read it; errors
go to stderr with exit status 1 (2 for a refused argument).
"""

import json

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .clients import ClientStore

oidc = AppGroup("oidc", help="Register, list and remove OpenID Connect clients.")


def _clients() -> ClientStore:
    """The app's client store, refusing the in-process Redis stand-in.

    Raises:
        click.ClickException: neither ``REDIS_URL`` nor ``REDIS_SENTINELS`` is set: the
            stand-in lives in this command's process only, so whatever it did would be gone
            when it exits and the server would never see it.
    """
    config = current_app.config
    if not (config["REDIS_URL"] or config["REDIS_SENTINELS"]):
        raise click.ClickException(
            "REDIS_URL is unset: clients registered in the in-process stand-in vanish when "
            "this command ends; set REDIS_URL (or REDIS_SENTINELS) to the server's Redis"
        )
    return current_app.extensions["oidc_clients"]


@oidc.command("add-client")
@click.option("--name", required=True, help="Shown on the login and consent pages and in WeChat.")
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    required=True,
    help="Where the authorization answer goes, matched exactly; repeat for more. https, or "
    "http to 127.0.0.1, localhost or [::1] (any port); no fragment.",
)
@click.option(
    "--public",
    is_flag=True,
    help="A client that cannot keep a secret (browser or native app): no secret, PKCE required.",
)
@click.option("--trusted", is_flag=True, help="Skip the consent page.")
@click.option(
    "--post-logout-redirect-uri",
    "post_logout_redirect_uris",
    multiple=True,
    help="Where RP-initiated logout may send the browser afterwards; repeat for more.",
)
@click.option(
    "--backchannel-logout-uri",
    default="",
    help="Where logout tokens are posted when a session ends (Back-Channel Logout 1.0).",
)
@click.option(
    "--allow-offline-access",
    is_flag=True,
    help="May be granted scope offline_access, and so refresh tokens.",
)
def add_client(
    name: str,
    redirect_uris: tuple[str, ...],
    public: bool,
    trusted: bool,
    post_logout_redirect_uris: tuple[str, ...],
    backchannel_logout_uri: str,
    allow_offline_access: bool,
) -> None:
    """Register a client; print {"client_id": ..., "client_secret": ...}.

    The secret is shown this once (only its hash is kept); a --public client has none, and
    the object has no client_secret key.
    """
    try:
        client, client_secret = _clients().add(
            name=name,
            redirect_uris=redirect_uris,
            public=public,
            trusted=trusted,
            post_logout_redirect_uris=post_logout_redirect_uris,
            backchannel_logout_uri=backchannel_logout_uri,
            allow_offline_access=allow_offline_access,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    answer = {"client_id": client.client_id}
    if client_secret is not None:
        answer["client_secret"] = client_secret
    click.echo(json.dumps(answer))


@oidc.command("list-clients")
def list_clients() -> None:
    """Print every client as a JSON list, oldest first (no secrets, no hashes)."""
    clients = [client.to_json() for client in _clients().list()]
    click.echo(json.dumps(clients, ensure_ascii=False, indent=2))


@oidc.command("remove-client")
@click.argument("client_id")
def remove_client(client_id: str) -> None:
    """Remove the client CLIENT_ID and revoke its tokens; exit 1 if it is unknown.

    Its tokens are revoked even then, so that running it again finishes a removal cut short.
    """
    removed = _clients().remove(client_id)
    # Removed first: no new token can be issued to it while the old ones are revoked.
    provider = current_app.extensions.get("oidc")
    if provider is not None:
        provider.revoke_client(client_id)
    if not removed:
        raise click.ClickException(f"no client {client_id!r}")
    click.echo(json.dumps({"client_id": client_id, "removed": True}))


def init_app(app: Flask) -> None:
    """Register ``flask oidc`` (the client store is ``app.extensions["oidc_clients"]``)."""
    app.cli.add_command(oidc)
