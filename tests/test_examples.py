"""Relying parties other than our own tests' drive the provider: the example Flask site
(examples/flask_rp) in a real headless Chromium, its back-channel logout endpoint, and panva's
``openid-client`` (a certified OpenID Connect RP library, tests/rp-node) in its default strict
mode.

Each test serves the provider on a loopback port chosen first (its issuer names the port, as in
tests/test_oidc.py) and, where it needs one, the example site on another; both are threaded
werkzeug servers in this process.
"""

import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask
from joserfc import jwt
from joserfc.jwk import RSAKey
from playwright.sync_api import expect
from werkzeug.serving import make_server

from tests.conftest import ROOT, free_port, page_client, say, scan
from tests.test_browser import shown_scene
from tests.test_oidc import RP_CALLBACK, Browser, add_client, code_of, query_of, wait_for
from tests.test_oidc import SCANNER as OIDC_SCANNER

SCANNER = "oExampleScanner000000000000001"
RP_NODE = ROOT / "tests" / "rp-node"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def load_example():
    """examples/flask_rp/app.py as a module (examples/ is not a package: it is run as is)."""
    spec = importlib.util.spec_from_file_location(
        "flask_rp_example", ROOT / "examples" / "flask_rp" / "app.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Flask finds the example's templates through it
    spec.loader.exec_module(module)
    return module


@dataclass
class ExampleSite:
    """The example site, served, registered with the provider as its docs say.

    Attributes:
        app: the site's Flask app.
        base: its base URL.
        client_id: its client id at the provider.
        calls: ``(method, path)`` of every request it received, in order.
    """

    app: Flask
    base: str
    client_id: str
    calls: list[tuple[str, str]]

    def sessions(self) -> int:
        return self.app.extensions["flask_rp"].count()


@pytest.fixture
def example_site(provider) -> Iterator[ExampleSite]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client_id, secret = add_client(
        provider,
        name="示例站点",
        trusted=True,
        redirect_uris=[base + "/callback"],
        post_logout_redirect_uris=[base + "/signed-out"],
        backchannel_logout_uri=base + "/backchannel-logout",
    )
    app = load_example().create_app(
        {
            "PROVIDER_URL": provider.base,
            "RP_CLIENT_ID": client_id,
            "RP_CLIENT_SECRET": secret,
            "RP_BASE_URL": base,
        }
    )
    calls: list[tuple[str, str]] = []
    inner = app.wsgi_app

    def recording(environ, start_response):
        calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return inner(environ, start_response)

    app.wsgi_app = recording
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ExampleSite(app, base, client_id, calls)
    server.shutdown()
    thread.join(5)


def sign_in_on_the_site(page, site: ExampleSite, provider) -> None:
    """From the site's page to our QR page, a scan by SCANNER, and back to the site."""
    page.goto(site.base + "/")
    expect(page.locator("body")).to_have_attribute("data-state", "signed-out")
    page.locator("#sign-in").click()
    expect(page.locator("h1")).to_have_text("登录到 示例站点")
    assert page.url.startswith(provider.base + "/oidc/login")
    reply = scan(page_client(provider.app), shown_scene(page), SCANNER)
    assert "登录成功：示例站点" in reply
    expect(page.locator("body")).to_have_attribute("data-state", "signed-in")
    assert page.url == site.base + "/"


# The example site in Chromium.


def test_the_example_site_signs_in_with_a_scan_and_out_with_a_0_in_wechat(
    provider, example_site, new_page
):
    page = new_page()
    sign_in_on_the_site(page, example_site, provider)

    user = provider.app.extensions["wechat_login"].users.get(SCANNER)
    expect(page.locator("#sub")).to_have_text(user.id)
    expect(page.locator("#wechat-openid")).to_have_text(SCANNER)
    assert user.id != SCANNER
    assert example_site.sessions() == 1
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-state", "signed-in")

    assert "已退出 1 个登录" in say(page_client(provider.app), "0", SCANNER)

    wait_for(lambda: ("POST", "/backchannel-logout") in example_site.calls)
    wait_for(lambda: example_site.sessions() == 0)
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-state", "signed-out")


def test_signing_out_on_the_example_site_ends_the_providers_session_too(
    provider, example_site, new_page
):
    page = new_page()
    sign_in_on_the_site(page, example_site, provider)

    page.locator("#sign-out").click()

    # RP-initiated logout: through the provider's end_session_endpoint and back.
    expect(page.locator("#signed-out")).to_be_visible()
    assert page.url.startswith(example_site.base + "/signed-out")
    assert example_site.sessions() == 0
    # The provider's session is gone: signing in again asks for a scan.
    page.locator("#sign-in").click()
    expect(page.locator("h1")).to_have_text("登录到 示例站点")


# The example site's back-channel logout endpoint.


def logout_claims(provider, site: ExampleSite, **changes) -> dict:
    """A logout token's claims as the provider sends them (see app/oidc/backchannel.py)."""
    now = int(time.time())
    claims = {
        "iss": provider.base,
        "aud": site.client_id,
        "iat": now,
        "exp": now + 120,
        "jti": f"jti-{time.monotonic_ns()}",
        "sub": "user-1",
        "sid": "sid-1",
        "events": {BACKCHANNEL_EVENT: {}},
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def signed_by_provider(provider, claims: dict, typ: str = "logout+jwt") -> str:
    return provider.app.extensions["oidc"].keys.sign(claims, typ=typ)


def signed_by_another_key(provider, claims: dict) -> str:
    """Signed with a stranger's key, under the provider's ``kid``."""
    kid = provider.app.extensions["oidc"].keys.current.thumbprint()
    header = {"alg": "RS256", "kid": kid, "typ": "logout+jwt"}
    return jwt.encode(header, claims, RSAKey.generate_key(2048))


def start_session(site: ExampleSite, sub: str = "user-1", sid: str = "sid-1") -> None:
    signed_in = sys.modules["flask_rp_example"].SignedIn(
        sub=sub, sid=sid, wechat_openid="o1", id_token="x", signed_in_at=time.time()
    )
    site.app.extensions["flask_rp"].start(signed_in)


def post_logout_token(site: ExampleSite, token: str):
    return site.app.test_client().post("/backchannel-logout", data={"logout_token": token})


def test_a_valid_logout_token_ends_the_sessions_of_its_sid_only(provider, example_site):
    start_session(example_site, sid="sid-1")
    start_session(example_site, sid="sid-1")
    start_session(example_site, sid="sid-2")

    answer = post_logout_token(
        example_site, signed_by_provider(provider, logout_claims(provider, example_site))
    )

    assert answer.status_code == 200
    assert answer.get_json() == {"ended": 2}
    assert answer.headers["Cache-Control"] == "no-store"
    assert example_site.sessions() == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p, s: signed_by_another_key(p, logout_claims(p, s)), "not a valid"),
        (lambda p, s: signed_by_provider(p, logout_claims(p, s, nonce="n-1")), "nonce"),
        (lambda p, s: signed_by_provider(p, logout_claims(p, s, iss="https://x.example")), "iss"),
        (lambda p, s: signed_by_provider(p, logout_claims(p, s, aud="other-client")), "aud"),
        (lambda p, s: signed_by_provider(p, logout_claims(p, s, iat=None)), "iat"),
        (lambda p, s: signed_by_provider(p, logout_claims(p, s, exp=1)), "exp"),
        (lambda p, s: signed_by_provider(p, logout_claims(p, s, events={})), "event"),
        (lambda p, s: signed_by_provider(p, logout_claims(p, s, sub=None, sid=None)), "sid"),
        (lambda p, s: signed_by_provider(p, logout_claims(p, s), typ="JWT"), "typ"),
        (lambda p, s: "not.a.jwt", "not a valid"),
        (lambda p, s: "", "no logout_token"),
    ],
    ids=[
        "bad-signature",
        "nonce",
        "wrong-iss",
        "wrong-aud",
        "no-iat",
        "expired",
        "no-event",
        "no-sid-or-sub",
        "id-token-typ",
        "garbage",
        "missing",
    ],
)
def test_the_back_channel_refuses_a_bad_logout_token(provider, example_site, make, reason):
    start_session(example_site)

    answer = post_logout_token(example_site, make(provider, example_site))

    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_request"
    assert reason in answer.get_json()["error_description"]
    assert example_site.sessions() == 1


def test_the_back_channel_refuses_a_replayed_logout_token(provider, example_site):
    token = signed_by_provider(provider, logout_claims(provider, example_site))
    assert post_logout_token(example_site, token).status_code == 200
    start_session(example_site)

    replayed = post_logout_token(example_site, token)

    assert replayed.status_code == 400
    assert example_site.sessions() == 1


# panva's openid-client, in its default strict mode.


def node_rp(step: str, *args: str, fails: bool = False) -> dict:
    """Run tests/rp-node/rp.mjs: its JSON answer. Unless ``fails``, an error fails the test,
    with openid-client's reason shown."""
    done = subprocess.run(
        ["node", str(RP_NODE / "rp.mjs"), step, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout, done.stderr
    answer = json.loads(done.stdout)
    assert done.returncode == (1 if fails else 0), answer
    return answer


@pytest.fixture(scope="module")
def openid_client() -> Path:
    """tests/rp-node, installed from its lock file when it is not yet (as .ci/run does), so
    that the README's test command needs no step of its own; without npm it fails."""
    if not (RP_NODE / "node_modules" / "openid-client").is_dir():
        installed = subprocess.run(
            ["npm", "ci", "--prefix", str(RP_NODE), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert installed.returncode == 0, f"npm ci --prefix tests/rp-node: {installed.stderr}"
    return RP_NODE


@pytest.mark.parametrize("public", [False, True], ids=["confidential", "public"])
def test_openid_client_signs_in_refreshes_and_signs_out(provider, openid_client, public):
    after = "http://127.0.0.1:8765/signed-out"
    client_id, secret = add_client(
        provider,
        name="openid-client",
        trusted=True,
        public=public,
        allow_offline_access=True,
        post_logout_redirect_uris=[after],
    )
    issuer = provider.base
    started = node_rp(
        "start", issuer, client_id, secret or "", RP_CALLBACK, "openid wechat offline_access"
    )
    browser_session = Browser(provider)
    callback = code_of(browser_session.authorize(started["url"]))
    assert query_of(callback)["state"] == started["state"]

    finished = node_rp(
        "finish",
        issuer,
        client_id,
        secret or "",
        callback,
        started["code_verifier"],
        started["state"],
        started["nonce"],
        after,
    )

    user = provider.app.extensions["wechat_login"].users.get(OIDC_SCANNER)
    claims = finished["claims"]
    assert claims["sub"] == user.id
    assert claims["iss"] == issuer
    assert claims["nonce"] == started["nonce"]
    assert claims["wechat_openid"] == OIDC_SCANNER
    assert finished["userinfo"]["wechat_openid"] == OIDC_SCANNER
    assert finished["refreshed"]["rotated"] is True
    assert finished["refreshed"]["userinfo"]["sub"] == user.id
    # Its end-session URL signs the browser out and sends it back where registered.
    signed_out = browser_session.get(finished["end_session_url"])
    assert signed_out.status_code == 302
    assert signed_out.headers["Location"] == after + "?" + urlencode({"state": "bye"})
    assert browser_session.get("/api/me").status_code == 401


def test_openid_client_refuses_an_id_token_for_another_nonce(provider, openid_client):
    # The check is the library's: shown here so that a pass above means something.
    client_id, secret = add_client(provider, trusted=True)
    started = node_rp("start", provider.base, client_id, secret, RP_CALLBACK, "openid")
    callback = code_of(Browser(provider).authorize(started["url"]))

    refused = node_rp(
        "finish",
        provider.base,
        client_id,
        secret,
        callback,
        started["code_verifier"],
        started["state"],
        "another-nonce",
        RP_CALLBACK,
        fails=True,
    )

    assert refused["code"] == "OAUTH_JWT_CLAIM_COMPARISON_FAILED"
    assert refused["cause"]["cause"]["claim"] == "nonce"
