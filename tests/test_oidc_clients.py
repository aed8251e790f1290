"""OpenID Connect clients: the store on real Redis, the answers Authlib's server gets from a
client, which URIs may be registered, and ``flask oidc`` through Flask's CLI runner."""

import base64
import hashlib
import json
import re

import pytest
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc6749.authenticate_client import ClientAuthentication
from flask import request

from app import create_app
from app.oidc import clients as clients_module
from app.oidc.clients import ClientStore, OIDCClient, validate_uri
from config import TestingConfig

PREFIX = "deployment:"
NOW = 1_767_225_600.25  # 2026-01-01T00:00:00Z and a quarter
REDIRECT = "https://rp.example.com/callback"
TOKEN_METHODS = ["client_secret_basic", "client_secret_post", "none"]


@pytest.fixture
def store(redis_client) -> ClientStore:
    return ClientStore(redis_client, prefix=PREFIX, clock=lambda: NOW)


def confidential(**fields) -> OIDCClient:
    """A confidential client as the store would make it, with ``fields`` changed."""
    values = {
        "client_id": "rp-1",
        "client_name": "Grafana",
        "secret_hash": hashlib.sha256(b"the-secret").hexdigest(),
        "redirect_uris": (REDIRECT, "http://127.0.0.1:3000/cb"),
        "post_logout_redirect_uris": ("https://rp.example.com/bye",),
        "backchannel_logout_uri": "",
        "public": False,
        "trusted": False,
        "allow_offline_access": False,
        "created_at": NOW,
    }
    return OIDCClient(**{**values, **fields})


def public(**fields) -> OIDCClient:
    """A public client (no secret), with ``fields`` changed."""
    return confidential(public=True, secret_hash="", **fields)


# The store, on real Redis


def test_an_added_client_reads_back_as_registered(store):
    client, secret = store.add(
        name="  Grafana ",
        redirect_uris=[REDIRECT, "http://localhost:3000/cb", REDIRECT],
        trusted=True,
        post_logout_redirect_uris=["https://rp.example.com/bye"],
        backchannel_logout_uri="https://rp.example.com/backchannel?tenant=1",
        allow_offline_access=True,
    )

    assert store.get(client.client_id) == client
    assert client.client_name == "Grafana"
    assert client.redirect_uris == (REDIRECT, "http://localhost:3000/cb")  # once each, in order
    assert client.post_logout_redirect_uris == ("https://rp.example.com/bye",)
    assert client.backchannel_logout_uri == "https://rp.example.com/backchannel?tenant=1"
    assert (client.public, client.trusted, client.allow_offline_access) == (False, True, True)
    assert client.created_at == NOW
    assert client.secret_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_ids_and_secrets_are_random_and_long(store):
    made = [store.add(name="RP", redirect_uris=[REDIRECT]) for _ in range(20)]

    client_ids = {client.client_id for client, _ in made}
    secrets_made = {secret for _, secret in made}
    assert len(client_ids) == len(secrets_made) == 20
    # Hex: an id never starts with "-", which the command line would take for an option.
    assert all(re.fullmatch(r"[0-9a-f]{32}", client_id) for client_id in client_ids)
    assert all(len(base64.urlsafe_b64decode(secret + "=")) == 32 for secret in secrets_made)


def test_the_secret_is_never_stored_in_clear(store, redis_client):
    client, secret = store.add(name="RP", redirect_uris=[REDIRECT])

    stored = redis_client.hgetall(f"{PREFIX}oidc:client:{client.client_id}")
    assert stored["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    everything = [
        value
        for key in redis_client.keys("*")
        for value in (
            redis_client.hgetall(key).values()
            if redis_client.type(key) == "hash"
            else redis_client.smembers(key)
        )
    ]
    assert everything and not any(secret in value for value in everything)
    assert secret not in repr(client) and client.secret_hash not in repr(client)


def test_keys_carry_the_prefix(store, redis_client):
    client, _ = store.add(name="RP", redirect_uris=[REDIRECT])

    assert sorted(redis_client.keys("*")) == sorted(
        [f"{PREFIX}oidc:client:{client.client_id}", f"{PREFIX}oidc:clients"]
    )
    assert redis_client.smembers(f"{PREFIX}oidc:clients") == {client.client_id}


def test_a_public_client_gets_no_secret_and_no_secret_works_for_it(store):
    client, secret = store.add(name="SPA", redirect_uris=[REDIRECT], public=True)

    assert secret is None
    assert client.secret_hash == ""
    assert store.get(client.client_id).public
    assert not client.check_client_secret("")
    assert not client.check_client_secret(hashlib.sha256(b"").hexdigest())


def test_list_is_oldest_first_and_skips_what_does_not_read(redis_client):
    times = iter([30.0, 10.0, 20.0])
    store = ClientStore(redis_client, prefix=PREFIX, clock=lambda: next(times))
    made = [store.add(name=f"RP {n}", redirect_uris=[REDIRECT])[0] for n in range(3)]
    redis_client.sadd(f"{PREFIX}oidc:clients", "gone", "broken")  # listed, no record
    redis_client.hset(f"{PREFIX}oidc:client:broken", "client_name", "cut short")

    assert store.list() == [made[1], made[2], made[0]]


def test_an_empty_store_lists_nothing(store):
    assert store.list() == []


def test_remove_forgets_the_client_once(store, redis_client):
    client, _ = store.add(name="RP", redirect_uris=[REDIRECT])
    kept, _ = store.add(name="Other", redirect_uris=[REDIRECT])

    assert store.remove(client.client_id) is True
    assert store.get(client.client_id) is None
    assert store.list() == [kept]
    assert not redis_client.exists(f"{PREFIX}oidc:client:{client.client_id}")
    assert store.remove(client.client_id) is False


def test_unknown_and_unreadable_clients_are_none(store, redis_client):
    client, _ = store.add(name="RP", redirect_uris=[REDIRECT])
    key = f"{PREFIX}oidc:client:{client.client_id}"

    assert store.get("no-such-client") is None
    assert store.get("") is None
    redis_client.hset(key, "redirect_uris", "not json")
    assert store.get(client.client_id) is None
    redis_client.hset(key, "redirect_uris", "[]")
    assert store.get(client.client_id) is None
    redis_client.hdel(key, "created_at")
    assert store.get(client.client_id) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "", "redirect_uris": [REDIRECT]},
        {"name": "   ", "redirect_uris": [REDIRECT]},
        {"name": "RP\nline two", "redirect_uris": [REDIRECT]},
        {"name": "RP", "redirect_uris": []},
    ],
    ids=["empty-name", "blank-name", "control-in-name", "no-redirect-uri"],
)
def test_add_refuses_a_client_without_a_name_or_redirect_uri(store, redis_client, fields):
    with pytest.raises(ValueError):
        store.add(**fields)
    assert redis_client.keys("*") == []


@pytest.mark.parametrize(
    "field",
    ["redirect_uris", "post_logout_redirect_uris", "backchannel_logout_uri"],
)
def test_add_refuses_a_bad_uri_of_every_kind_naming_it(store, redis_client, field):
    bad = "http://rp.example.com/cb"
    fields = {"name": "RP", "redirect_uris": [REDIRECT]}
    fields[field] = bad if field == "backchannel_logout_uri" else [REDIRECT, bad]

    with pytest.raises(ValueError, match="http://rp.example.com/cb"):
        store.add(**fields)
    assert redis_client.keys("*") == []


# Which URIs may be registered


@pytest.mark.parametrize(
    "uri",
    [
        "https://rp.example.com/callback",
        "https://rp.example.com:8443/oidc/callback?tenant=a",
        "https://[2001:db8::1]/cb",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:53682/cb",
        "http://localhost:3000/cb",
        "http://LOCALHOST:3000/cb",
        "http://[::1]:8080/cb",
    ],
)
def test_https_and_loopback_http_on_any_port_are_allowed(uri):
    assert validate_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "http://rp.example.com/cb",
        "http://10.0.0.5:3000/cb",
        "http://127.0.0.2/cb",
        "http://localhost.evil.example/cb",
        "http://127.0.0.1.nip.io/cb",
        "https://rp.example.com/cb#fragment",
        "https://rp.example.com/cb#",
        "http://127.0.0.1:3000/cb#x",
        "javascript:alert(1)",
        "JavaScript://rp.example.com/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "com.example.app:/callback",
        "ftp://rp.example.com/cb",
        "//rp.example.com/cb",
        "/callback",
        "https:///callback",
        "https://",
        "",
        "https://rp.example.com:99999/cb",
        "https://rp.example.com:port/cb",
        "https://rp.example.com@evil.example/cb",
        "http://127.0.0.1@evil.example/cb",
        "https://rp.example.com/c b",
        "https://rp.example.com/cb\n",
        " https://rp.example.com/cb",
    ],
)
def test_other_uris_are_refused_naming_the_uri(uri):
    with pytest.raises(ValueError) as refused:
        validate_uri(uri)
    assert repr(uri) in str(refused.value)


# What Authlib's server asks a client


def test_client_id_and_default_redirect_uri():
    client = confidential()

    assert client.get_client_id() == "rp-1"
    assert client.get_default_redirect_uri() == REDIRECT


@pytest.mark.parametrize(
    ("redirect_uri", "registered"),
    [
        (REDIRECT, True),
        ("http://127.0.0.1:3000/cb", True),
        (REDIRECT + "/", False),
        (REDIRECT + "?next=/", False),
        (REDIRECT + "/../evil", False),
        ("https://rp.example.com/call", False),
        ("https://RP.example.com/callback", False),
        ("https://rp.example.com:443/callback", False),
        ("http://127.0.0.1:3001/cb", False),
        ("http://localhost:3000/cb", False),
        ("", False),
    ],
)
def test_redirect_uris_match_exactly(redirect_uri, registered):
    assert confidential().check_redirect_uri(redirect_uri) is registered


@pytest.mark.parametrize(
    ("requested", "offline_allowed", "granted"),
    [
        ("openid", False, "openid"),
        ("openid wechat", False, "openid wechat"),
        ("wechat openid", False, "wechat openid"),
        ("openid openid wechat", False, "openid wechat"),
        ("openid profile email", False, "openid profile"),
        ("openid offline_access", False, "openid"),
        ("openid offline_access wechat", True, "openid offline_access wechat"),
        ("offline_access", True, "offline_access"),
        ("profile", False, "profile"),
        ("openid email", False, "openid"),
        ("", False, ""),
        (None, True, ""),
    ],
)
def test_allowed_scope_is_the_known_part_in_the_order_asked(requested, offline_allowed, granted):
    client = confidential(allow_offline_access=offline_allowed)

    assert client.get_allowed_scope(requested) == granted


def test_the_secret_is_checked_against_its_hash():
    client = confidential()

    assert client.check_client_secret("the-secret")
    assert not client.check_client_secret("the-secret ")
    assert not client.check_client_secret("")
    assert not client.check_client_secret(client.secret_hash)
    assert not confidential(secret_hash="").check_client_secret("")


def test_the_secret_is_compared_in_constant_time(monkeypatch):
    compared = []

    def compare_digest(a, b):
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(clients_module, "compare_digest", compare_digest)
    client = confidential()

    assert client.check_client_secret("the-secret")
    assert not client.check_client_secret("wrong")
    wrong_hash = hashlib.sha256(b"wrong").hexdigest()
    assert compared == [(client.secret_hash, client.secret_hash), (wrong_hash, client.secret_hash)]


@pytest.mark.parametrize("endpoint", ["token", "revocation"])
@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_a_confidential_client_authenticates_with_its_secret_never_none(method, endpoint):
    expected = method != "none"

    assert confidential().check_endpoint_auth_method(method, endpoint) is expected


@pytest.mark.parametrize("endpoint", ["token", "revocation"])
@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_a_public_client_authenticates_with_none_only(method, endpoint):
    expected = method == "none"

    assert public().check_endpoint_auth_method(method, endpoint) is expected


@pytest.mark.parametrize("make", [confidential, public], ids=["confidential", "public"])
@pytest.mark.parametrize(
    ("method", "endpoint"),
    [
        *[
            (method, endpoint)
            for method in TOKEN_METHODS
            for endpoint in ("introspection", "client_registration", "end_session", "")
        ],
        ("private_key_jwt", "token"),
        ("client_secret_jwt", "token"),
        ("tls_client_auth", "revocation"),
    ],
)
def test_no_other_endpoint_or_method_is_open_to_a_client(make, method, endpoint):
    assert make().check_endpoint_auth_method(method, endpoint) is False


@pytest.mark.parametrize(
    ("response_type", "allowed"),
    [("code", True), ("token", False), ("id_token", False), ("code id_token", False), ("", False)],
)
def test_code_is_the_only_response_type(response_type, allowed):
    assert confidential().check_response_type(response_type) is allowed
    assert public().check_response_type(response_type) is allowed


@pytest.mark.parametrize(
    ("grant_type", "without_offline", "with_offline"),
    [
        ("authorization_code", True, True),
        ("refresh_token", False, True),
        ("implicit", False, False),
        ("password", False, False),
        ("client_credentials", False, False),
        ("urn:ietf:params:oauth:grant-type:device_code", False, False),
    ],
)
def test_refresh_tokens_only_with_offline_access(grant_type, without_offline, with_offline):
    assert confidential().check_grant_type(grant_type) is without_offline
    assert confidential(allow_offline_access=True).check_grant_type(grant_type) is with_offline
    assert public(allow_offline_access=True).check_grant_type(grant_type) is with_offline


def test_client_metadata_names_the_logout_uris_and_never_the_secret():
    client = confidential(backchannel_logout_uri="https://rp.example.com/backchannel")

    assert client.client_metadata == {
        "client_name": "Grafana",
        "redirect_uris": [REDIRECT, "http://127.0.0.1:3000/cb"],
        "post_logout_redirect_uris": ["https://rp.example.com/bye"],
        "backchannel_logout_uri": "https://rp.example.com/backchannel",
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    }
    assert "backchannel_logout_uri" not in confidential().client_metadata
    assert public().client_metadata["token_endpoint_auth_method"] == "none"


def basic(client_id: str, secret: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def authenticate(app, store: ClientStore, *, data: dict, headers: dict | None = None):
    """Authlib's own token-endpoint client authentication over ``store``: the client, or the
    ``InvalidClientError`` it raised."""
    with app.test_request_context(
        "/oidc/token", base_url="https://op.example", method="POST", data=data, headers=headers
    ):
        try:
            return ClientAuthentication(store.get)(FlaskOAuth2Request(request), TOKEN_METHODS)
        except InvalidClientError as refused:
            return refused


def test_authlib_authenticates_each_kind_of_client_only_its_own_way(app, redis_client):
    store = ClientStore(redis_client)
    rp, secret = store.add(name="RP", redirect_uris=[REDIRECT])
    spa, _ = store.add(name="SPA", redirect_uris=[REDIRECT], public=True)
    grant = {"grant_type": "authorization_code", "code": "c"}

    assert authenticate(app, store, data=grant, headers=basic(rp.client_id, secret)) == rp
    by_post = {**grant, "client_id": rp.client_id, "client_secret": secret}
    assert authenticate(app, store, data=by_post) == rp
    assert authenticate(app, store, data={**grant, "client_id": spa.client_id}) == spa

    refused = [
        authenticate(app, store, data={**grant, "client_id": rp.client_id}),  # none
        authenticate(app, store, data=grant, headers=basic(rp.client_id, secret + "x")),
        authenticate(app, store, data=grant, headers=basic(spa.client_id, "anything")),
        authenticate(app, store, data={**grant, "client_id": "unknown"}),
    ]
    assert all(isinstance(answer, InvalidClientError) for answer in refused)


# flask oidc ...


def oidc(app, *args: str):
    """Run ``flask oidc ...`` on ``app``; the result has ``exit_code``, ``stdout``, ``stderr``."""
    return app.test_cli_runner().invoke(args=["oidc", *args])


def test_add_client_prints_one_json_object_with_id_and_secret(app):
    result = oidc(
        app,
        "add-client",
        "--name",
        "Gitea",
        "--redirect-uri",
        REDIRECT,
        "--redirect-uri",
        "http://[::1]:3000/cb",
        "--post-logout-redirect-uri",
        "https://rp.example.com/bye",
        "--backchannel-logout-uri",
        "https://rp.example.com/backchannel",
        "--trusted",
        "--allow-offline-access",
    )

    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1
    answer = json.loads(result.stdout)
    assert set(answer) == {"client_id", "client_secret"}
    client = app.extensions["oidc_clients"].get(answer["client_id"])
    assert client.check_client_secret(answer["client_secret"])
    assert client.client_name == "Gitea"
    assert client.redirect_uris == (REDIRECT, "http://[::1]:3000/cb")
    assert client.post_logout_redirect_uris == ("https://rp.example.com/bye",)
    assert client.backchannel_logout_uri == "https://rp.example.com/backchannel"
    assert (client.public, client.trusted, client.allow_offline_access) == (False, True, True)


def test_add_client_public_prints_no_secret(app):
    result = oidc(app, "add-client", "--name", "SPA", "--redirect-uri", REDIRECT, "--public")

    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"client_id"}
    client = app.extensions["oidc_clients"].get(answer["client_id"])
    assert client.public and not client.trusted and not client.allow_offline_access


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "RP", "--redirect-uri", "http://rp.example.com/cb"],
        ["--name", "RP", "--redirect-uri", REDIRECT, "--backchannel-logout-uri", "javascript:x"],
        ["--name", "RP", "--redirect-uri", REDIRECT + "#top"],
        ["--name", "", "--redirect-uri", REDIRECT],
        ["--name", "RP"],
        ["--redirect-uri", REDIRECT],
    ],
    ids=["http", "javascript", "fragment", "empty-name", "no-redirect-uri", "no-name"],
)
def test_add_client_refuses_bad_input_on_stderr_and_stores_nothing(app, redis_client, args):
    result = oidc(app, "add-client", *args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Error" in result.stderr
    assert app.extensions["oidc_clients"].list() == []


def test_a_refused_uri_is_named_on_stderr(app):
    result = oidc(app, "add-client", "--name", "RP", "--redirect-uri", "http://rp.example.com/cb")

    assert "'http://rp.example.com/cb' is refused" in result.stderr


def test_list_clients_shows_every_client_without_secret_or_hash(app):
    store = app.extensions["oidc_clients"]
    rp, secret = store.add(name="门户", redirect_uris=[REDIRECT], trusted=True)
    spa, _ = store.add(name="SPA", redirect_uris=[REDIRECT], public=True)

    result = oidc(app, "list-clients")

    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [entry["client_id"] for entry in listed] == [rp.client_id, spa.client_id]
    assert listed[0] == rp.to_json()
    assert listed[0]["client_name"] == "门户" and listed[0]["trusted"] is True
    assert listed[1]["public"] is True
    assert secret not in result.stdout and rp.secret_hash not in result.stdout
    assert not any("secret" in key for entry in listed for key in entry)


def test_list_clients_of_an_empty_store_is_an_empty_list(app):
    result = oidc(app, "list-clients")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


class Provider:
    """Stands in for the provider extension: records which clients' tokens were revoked."""

    def __init__(self) -> None:
        self.revoked: list[str] = []

    def revoke_client(self, client_id: str) -> None:
        self.revoked.append(client_id)


def test_remove_client_removes_it_and_revokes_its_tokens(app):
    store = app.extensions["oidc_clients"]
    client, _ = store.add(name="RP", redirect_uris=[REDIRECT])
    app.extensions["oidc"] = provider = Provider()

    result = oidc(app, "remove-client", client.client_id)

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"client_id": client.client_id, "removed": True}
    assert store.get(client.client_id) is None
    assert provider.revoked == [client.client_id]


def test_remove_client_without_the_provider_only_removes(app):
    client, _ = app.extensions["oidc_clients"].add(name="RP", redirect_uris=[REDIRECT])

    assert oidc(app, "remove-client", client.client_id).exit_code == 0
    assert app.extensions["oidc_clients"].get(client.client_id) is None


def test_remove_client_exits_1_for_an_unknown_id_and_still_revokes(app):
    app.extensions["oidc"] = provider = Provider()

    result = oidc(app, "remove-client", "no-such-client")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no client 'no-such-client'" in result.stderr
    assert provider.revoked == ["no-such-client"]


@pytest.mark.parametrize(
    "command",
    [
        ["add-client", "--name", "RP", "--redirect-uri", REDIRECT],
        ["list-clients"],
        ["remove-client", "x"],
    ],
)
def test_commands_refuse_the_in_process_redis_stand_in(command):
    app = create_app(TestingConfig)  # no REDIS_URL: fakeredis, gone when the command ends
    try:
        result = oidc(app, *command)
    finally:
        app.extensions["wechat_login"].close()

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "REDIS_URL is unset" in result.stderr


def test_the_store_uses_the_apps_key_prefix(redis_url, redis_client):
    app = create_app(TestingConfig, {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": "site-a:"})
    try:
        result = oidc(app, "add-client", "--name", "RP", "--redirect-uri", REDIRECT)
    finally:
        app.extensions["wechat_login"].close()

    client_id = json.loads(result.stdout)["client_id"]
    assert redis_client.exists(f"site-a:oidc:client:{client_id}")
    assert redis_client.smembers("site-a:oidc:clients") == {client_id}
