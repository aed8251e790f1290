"""The OpenID Provider, driven as a relying party would: discovery, PKCE, the code exchange,
the ID token checked against the JWKS, userinfo, refresh rotation and reuse, consent, prompt
and max_age, the error table, RP-initiated logout, key rotation, and sign-out everywhere after
the scanner's "0". The relying party is Authlib's OAuth 2.0 client; the browser is a
``requests`` session signed in through our real QR flow (a signed scan to the callback)."""

import re
import secrets
import time
from collections.abc import Callable
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from app import create_app
from config import TestingConfig
from tests.conftest import Provider, page_client, say, scan

SCANNER = "oOidcScanner0000000000000001"
RP_CALLBACK = "http://127.0.0.1:8765/callback"


def add_client(provider: Provider, **options) -> tuple[str, str | None]:
    """Register a client: ``(client_id, client_secret or None)``."""
    options.setdefault("redirect_uris", [RP_CALLBACK])
    options.setdefault("name", "示例应用")
    client, secret = provider.app.extensions["oidc_clients"].add(**options)
    return client.client_id, secret


def discovery(provider: Provider) -> dict:
    answer = requests.get(provider.base + "/.well-known/openid-configuration", timeout=5)
    assert answer.status_code == 200
    return answer.json()


class Browser:
    """A person's browser: cookies, our Origin on the page's own POSTs."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.http = requests.Session()

    def get(self, url: str) -> requests.Response:
        return self.http.get(urljoin(self.provider.base, url), allow_redirects=False, timeout=5)

    def sign_in_on(self, login_page: str, openid: str = SCANNER) -> tuple[str, str]:
        """Do what /oidc/login's script does: a QR code for the waiting request, a scan, the
        redeem. Returns ``(where the page goes on to, the scanner's reply)``."""
        page = self.get(login_page)
        assert page.status_code == 200
        continue_to = unescape(re.search(r'data-continue="([^"]+)"', page.text).group(1))
        request_id = re.search(r'data-oidc-request="([^"]+)"', page.text).group(1)
        base, app = self.provider.base, self.provider.app
        qr = self.http.post(
            base + "/api/login/qrcode",
            json={"oidc_request": request_id},
            headers={"Origin": base},
            timeout=5,
        ).json()
        reply = scan(page_client(app), qr["scene"], openid)
        code = app.extensions["redis"].hget(f"login:attempt:{qr['scene']}", "code")
        redeemed = self.http.post(
            base + "/api/login/redeem", json={"code": code}, headers={"Origin": base}, timeout=5
        )
        assert redeemed.status_code == 200, redeemed.text
        return continue_to, reply

    def authorize(self, url: str, openid: str = SCANNER) -> requests.Response:
        """Follow an authorization URL through sign-in (when asked) to the answer that leaves
        for the client (a redirect to its redirect_uri) or stays (a page)."""
        answer = self.get(url)
        while (
            answer.status_code == 302
            and answer.headers["Location"].startswith(self.provider.base + "/oidc/login")
            or answer.headers.get("Location", "").startswith("/oidc/login")
        ):
            continue_to, _ = self.sign_in_on(answer.headers["Location"], openid)
            answer = self.get(continue_to)
        return answer


class RelyingParty:
    """A client app using Authlib's OAuth 2.0 client, with PKCE and a nonce."""

    def __init__(self, provider: Provider, client_id: str, secret: str | None, **options) -> None:
        self.provider = provider
        self.config = discovery(provider)
        self.client_id = client_id
        auth = "client_secret_basic" if secret else "none"
        self.oauth = OAuth2Session(
            client_id,
            secret,
            scope=options.pop("scope", "openid wechat"),
            redirect_uri=RP_CALLBACK,
            code_challenge_method="S256",
            token_endpoint_auth_method=auth,
        )
        self.verifier = secrets.token_urlsafe(48)
        self.nonce = secrets.token_urlsafe(16)
        self.state = secrets.token_urlsafe(16)
        self.extra = options

    def authorization_url(self) -> str:
        url, _ = self.oauth.create_authorization_url(
            self.config["authorization_endpoint"],
            state=self.state,
            code_verifier=self.verifier,
            nonce=self.nonce,
            **self.extra,
        )
        return url

    def exchange(self, redirect: str) -> dict:
        """The code in ``redirect`` for tokens, the ID token checked as an RP must."""
        token = self.oauth.fetch_token(
            self.config["token_endpoint"],
            authorization_response=redirect,
            code_verifier=self.verifier,
            state=self.state,
        )
        token["claims"] = self.id_token_claims(token["id_token"])
        return token

    def id_token_claims(self, id_token: str) -> dict:
        keys = KeySet.import_key_set(requests.get(self.config["jwks_uri"], timeout=5).json())
        decoded = jwt.decode(
            id_token, keys, algorithms=self.config["id_token_signing_alg_values_supported"]
        )
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            options={"iss": {"value": self.config["issuer"]}},
            params={"nonce": self.nonce, "client_id": self.client_id},
        )
        claims.validate(leeway=5)
        return dict(decoded.claims)


def code_of(answer: requests.Response) -> str:
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def query_of(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


# Discovery and keys.


def test_discovery_names_every_endpoint_and_the_exact_issuer(provider):
    config = discovery(provider)

    assert config["issuer"] == provider.base
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "revocation_endpoint",
    ):
        assert config[name].startswith(provider.base + "/")
        assert requests.options(config[name], timeout=5).status_code < 500
    assert config["response_types_supported"] == ["code"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    assert config["subject_types_supported"] == ["public"]
    assert set(config["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }
    assert config["backchannel_logout_supported"] is True
    assert config["backchannel_logout_session_supported"] is True
    assert {"sub", "auth_time", "amr", "sid", "wechat_openid"} <= set(config["claims_supported"])
    assert {"openid", "wechat", "offline_access"} <= set(config["scopes_supported"])


@pytest.mark.parametrize("oidc_overrides", [{"OIDC_ISSUER": "https://id.example.com/"}])
def test_the_issuer_has_no_trailing_slash_drift(provider):
    assert discovery(provider)["issuer"] == "https://id.example.com"


# The whole flow.


def test_code_flow_with_pkce_signs_the_scanner_in_to_the_app(provider, redis_client):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)

    answer = browser.authorize(rp.authorization_url())
    params = query_of(code_of(answer))
    assert params["state"] == rp.state
    token = rp.exchange(code_of(answer))

    claims = token["claims"]
    user = provider.app.extensions["wechat_login"].users.get(SCANNER)
    assert claims["sub"] == user.id != SCANNER
    assert claims["iss"] == provider.base
    assert claims["aud"] in (client_id, [client_id])
    assert claims["nonce"] == rp.nonce
    assert claims["amr"] == ["wechat_scan"]
    assert claims["sid"] and claims["auth_time"] <= time.time()
    assert token["expires_in"] == 600
    assert "refresh_token" not in token  # no offline_access asked
    info = requests.get(
        rp.config["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=5,
    )
    assert info.status_code == 200
    assert info.json()["sub"] == user.id
    assert info.json()["wechat_openid"] == SCANNER


def test_the_scanner_reads_the_app_being_signed_in_to(provider):
    client_id, secret = add_client(provider, trusted=True, name="Grafana 监控")
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)

    login = browser.get(rp.authorization_url())
    page = browser.get(login.headers["Location"])
    _, reply = browser.sign_in_on(login.headers["Location"])

    assert "登录到 Grafana 监控" in page.text
    assert "登录成功：Grafana 监控（" in reply


def test_without_the_wechat_scope_no_wechat_ids(provider):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret, scope="openid")
    token = rp.exchange(code_of(Browser(provider).authorize(rp.authorization_url())))

    info = requests.get(
        rp.config["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=5,
    ).json()

    assert set(info) == {"sub"}
    assert "wechat_openid" not in token["claims"]


# PKCE.


def authorization_request(provider, **params) -> requests.Response:
    """A browser sent to the authorization endpoint with these parameters (state ``s-1``)."""
    config = discovery(provider)
    query = {
        "response_type": "code",
        "redirect_uri": RP_CALLBACK,
        "scope": "openid",
        "state": "s-1",
        **params,
    }
    return requests.get(
        config["authorization_endpoint"], params=query, allow_redirects=False, timeout=5
    )


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"code_challenge": "a" * 43, "code_challenge_method": "plain"},
        {"code_challenge": "a" * 43},
    ],
    ids=["no-challenge", "plain", "no-method-means-plain"],
)
def test_a_public_client_without_s256_is_refused_at_the_authorization_endpoint(provider, params):
    client_id, _ = add_client(provider, public=True, trusted=True)

    answer = authorization_request(provider, client_id=client_id, **params)

    sent_back = query_of(code_of(answer))
    assert sent_back["error"] == "invalid_request"
    assert sent_back["state"] == "s-1"


def test_a_public_client_signs_in_with_s256_and_no_secret(provider):
    client_id, secret = add_client(provider, public=True, trusted=True)
    assert secret is None
    rp = RelyingParty(provider, client_id, None)

    token = rp.exchange(code_of(Browser(provider).authorize(rp.authorization_url())))

    assert token["claims"]["nonce"] == rp.nonce


def test_a_wrong_code_verifier_gets_no_token(provider):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret)
    redirect = code_of(Browser(provider).authorize(rp.authorization_url()))
    rp.verifier = secrets.token_urlsafe(48)

    with pytest.raises(Exception, match="invalid_grant"):
        rp.exchange(redirect)


# Codes and refresh tokens.


def test_a_second_use_of_a_code_fails_and_revokes_what_the_first_gave(provider):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret)
    redirect = code_of(Browser(provider).authorize(rp.authorization_url()))
    first = rp.exchange(redirect)

    with pytest.raises(Exception, match="invalid_grant"):
        rp.exchange(redirect)

    info = requests.get(
        rp.config["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {first['access_token']}"},
        timeout=5,
    )
    assert info.status_code == 401


def refresh(rp: RelyingParty, refresh_token: str) -> requests.Response:
    return requests.post(
        rp.config["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(rp.client_id, rp.oauth.client_secret),
        timeout=5,
    )


def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_family(provider):
    client_id, secret = add_client(provider, trusted=True, allow_offline_access=True)
    rp = RelyingParty(provider, client_id, secret, scope="openid offline_access")
    token = rp.exchange(code_of(Browser(provider).authorize(rp.authorization_url())))
    assert token["refresh_token"]

    rotated = refresh(rp, token["refresh_token"])
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != token["refresh_token"]

    reused = refresh(rp, token["refresh_token"])

    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The whole family is gone, the newest refresh and access tokens included.
    assert refresh(rp, second["refresh_token"]).status_code == 400
    info = requests.get(
        rp.config["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {second['access_token']}"},
        timeout=5,
    )
    assert info.status_code == 401


def test_offline_access_is_not_granted_to_a_client_not_allowed_it(provider):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret, scope="openid offline_access")

    token = rp.exchange(code_of(Browser(provider).authorize(rp.authorization_url())))

    assert "refresh_token" not in token
    assert "offline_access" not in token["scope"].split()


# Prompt and max_age.


def test_prompt_none_without_a_session_answers_login_required(provider):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret, prompt="none")

    answer = Browser(provider).get(rp.authorization_url())

    params = query_of(code_of(answer))
    assert params["error"] == "login_required"
    assert params["state"] == rp.state


@pytest.mark.parametrize(
    "ask", [{"prompt": "login"}, {"max_age": "0"}], ids=["prompt-login", "max-age"]
)
def test_a_fresh_scan_is_asked_for_and_auth_time_moves(provider, ask):
    client_id, secret = add_client(provider, trusted=True)
    browser = Browser(provider)
    first = RelyingParty(provider, client_id, secret)
    before = first.exchange(code_of(browser.authorize(first.authorization_url())))["claims"]
    time.sleep(1.1)
    again = RelyingParty(provider, client_id, secret, **ask)

    asked = browser.get(again.authorization_url())
    assert asked.headers["Location"].startswith("/oidc/login")
    continue_to, _ = browser.sign_in_on(asked.headers["Location"])
    after = again.exchange(code_of(browser.get(continue_to)))["claims"]

    assert after["auth_time"] > before["auth_time"]


def test_a_signed_in_browser_is_not_asked_again(provider):
    client_id, secret = add_client(provider, trusted=True)
    browser = Browser(provider)
    first = RelyingParty(provider, client_id, secret)
    first.exchange(code_of(browser.authorize(first.authorization_url())))

    again = RelyingParty(provider, client_id, secret)
    answer = browser.get(again.authorization_url())

    assert answer.headers["Location"].startswith(RP_CALLBACK)


# Sign-ins that leave for WeChat's pages and come back: inside WeChat, and the website login.

#: WeChat's own browser on an iPhone.
WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN"
)


def through_wechat(
    browser: Browser, wechat_page: requests.Response, decision: str = "allow"
) -> requests.Response:
    """Answer WeChat's page (web authorization, or the website's QR page confirmed on the
    phone) that ``wechat_page`` sends the browser to: our callback's answer."""
    assert wechat_page.status_code == 302, wechat_page.text
    url = urlsplit(urljoin(browser.provider.base, wechat_page.headers["Location"]))
    assert browser.get(url.geturl()).status_code == 200  # the page asking, the phone's cookie
    back = browser.http.post(
        urljoin(browser.provider.base, url.path),
        data={
            **{name: values[0] for name, values in parse_qs(url.query).items()},
            "decision": decision,
        },
        allow_redirects=False,
        timeout=5,
    )
    assert back.status_code == 302
    return browser.get(back.headers["Location"])


def test_inside_wechat_an_app_s_sign_in_is_web_authorization_back_to_the_app(provider):
    client_id, secret = add_client(provider, trusted=True, name="Gitea")
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)
    browser.http.headers["User-Agent"] = WECHAT_UA

    login = browser.get(browser.get(rp.authorization_url()).headers["Location"])
    request_id = query_of(login.headers["Location"])["oidc_request"]
    assert urlsplit(login.headers["Location"]).path == "/login/wechat"
    back = through_wechat(browser, browser.get(login.headers["Location"]))

    # Signed in, on to the authorization it was asked for, which now answers the app.
    assert back.status_code == 302
    assert query_of(back.headers["Location"])["login_request"] == request_id
    token = rp.exchange(code_of(browser.get(back.headers["Location"])))
    phone = browser.http.cookies["emulator_openid"]
    user = provider.app.extensions["wechat_login"].users.get(phone)
    assert token["claims"]["sub"] == user.id
    assert token["claims"]["amr"] == ["wechat_oauth"]
    # The attempt was for the app, as a QR code's would be.
    redis_client = provider.app.extensions["redis"]
    (signin,) = redis_client.keys("login:signin:*")
    scene = signin.removeprefix("login:signin:")
    assert redis_client.hget(f"login:attempt:{scene}", "client") == "Gitea"


@pytest.mark.parametrize("oidc_overrides", [{"LOGIN_METHODS": "scan,wechat_browser,open_qr"}])
@pytest.mark.parametrize(
    ("user_agent", "start"),
    [(WECHAT_UA, "/login/wechat"), (None, "/login/open")],
    ids=["inside-wechat", "website-login"],
)
def test_a_refused_sign_in_for_an_app_leads_back_to_the_app_s_sign_in(provider, user_agent, start):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)
    if user_agent:
        browser.http.headers["User-Agent"] = user_agent
    login = browser.get(rp.authorization_url()).headers["Location"]
    request_id = query_of(login)["request"]

    refused = through_wechat(browser, browser.get(f"{start}?oidc_request={request_id}"), "deny")

    assert refused.status_code == 400
    ways_back = re.findall(r'class="button[^"]*" href="([^"]+)"', refused.text)
    assert [unescape(href) for href in ways_back] == [login, login + "&qr=1"]


def test_inside_wechat_the_app_s_login_page_shows_its_qr_code_when_asked(provider):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)
    browser.http.headers["User-Agent"] = WECHAT_UA

    login_page = browser.get(rp.authorization_url()).headers["Location"]
    page = browser.get(login_page + "&qr=1")

    assert page.status_code == 200
    assert "data-continue=" in page.text


def test_an_expired_app_request_is_a_clear_page_not_a_trip_to_wechat(provider):
    browser = Browser(provider)
    browser.http.headers["User-Agent"] = WECHAT_UA

    answer = browser.get("/oidc/login?request=" + "x" * 22)

    assert answer.status_code == 400
    assert "登录请求已过期" in answer.text


@pytest.mark.parametrize("oidc_overrides", [{"LOGIN_METHODS": "scan,open_qr"}])
def test_an_app_s_sign_in_by_the_website_login_goes_back_to_the_app(provider):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)

    page = browser.get(browser.get(rp.authorization_url()).headers["Location"])
    website_login = unescape(re.search(r'id="open-qr-login"[^>]*href="([^"]+)"', page.text)[1])
    request_id = re.search(r'data-oidc-request="([^"]+)"', page.text)[1]
    assert query_of(website_login)["oidc_request"] == request_id
    back = through_wechat(browser, browser.get(website_login))

    assert query_of(back.headers["Location"])["login_request"] == request_id
    token = rp.exchange(code_of(browser.get(back.headers["Location"])))
    assert token["claims"]["amr"] == ["wechat_open"]


# Consent.


def consent_page(browser, rp) -> tuple[requests.Response, str]:
    page = browser.authorize(rp.authorization_url())
    assert page.status_code == 200, page.headers
    assert "想使用你的微信身份登录" in page.text
    return page, re.search(r'name="request" value="([^"]+)"', page.text).group(1)


def answer_consent(browser, request_id: str, decision: str) -> requests.Response:
    base = browser.provider.base
    answered = browser.http.post(
        base + "/oidc/consent",
        data={"request": request_id, "decision": decision},
        headers={"Origin": base},
        allow_redirects=False,
        timeout=5,
    )
    assert answered.status_code == 302
    return browser.get(answered.headers["Location"])


def test_consent_is_asked_once_per_user_client_and_scopes(provider):
    client_id, secret = add_client(provider)
    browser = Browser(provider)
    rp = RelyingParty(provider, client_id, secret)
    page, request_id = consent_page(browser, rp)
    assert "openid" in page.text or "身份" in page.text

    token = rp.exchange(code_of(answer_consent(browser, request_id, "allow")))
    assert token["claims"]["sub"]

    again = RelyingParty(provider, client_id, secret)
    assert browser.get(again.authorization_url()).headers["Location"].startswith(RP_CALLBACK)


def test_denied_consent_answers_access_denied(provider):
    client_id, secret = add_client(provider)
    browser = Browser(provider)
    rp = RelyingParty(provider, client_id, secret)
    _, request_id = consent_page(browser, rp)

    params = query_of(code_of(answer_consent(browser, request_id, "deny")))

    assert params["error"] == "access_denied"
    assert params["state"] == rp.state


# The error table.


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "no-such-client"},
        {"redirect_uri": "http://127.0.0.1:8765/other"},
        {"redirect_uri": RP_CALLBACK + "/more"},
        {"redirect_uri": "http://127.0.0.1:8765/"},
    ],
    ids=["unknown-client", "other-path", "prefix", "parent"],
)
def test_an_unknown_client_or_unregistered_redirect_uri_never_redirects(provider, change):
    client_id, _ = add_client(provider, trusted=True)

    answer = authorization_request(provider, **{"client_id": client_id, **change})

    assert answer.status_code == 400
    assert "Location" not in answer.headers


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"prompt": "none login"}, "invalid_request"),
    ],
    ids=["implicit", "hybrid", "none-with-login"],
)
def test_other_errors_go_back_to_the_redirect_uri_with_state(provider, change, error):
    client_id, _ = add_client(provider, trusted=True)
    pkce = {"code_challenge": "a" * 43, "code_challenge_method": "S256"}

    answer = authorization_request(provider, client_id=client_id, **{**pkce, **change})

    sent_back = query_of(code_of(answer))
    assert sent_back["error"] == error
    assert sent_back["state"] == "s-1"


# Sign-out everywhere.


@pytest.fixture
def logout_receiver(serve) -> tuple[list[str], str]:
    """A relying party's back-channel logout endpoint: the logout tokens it received."""
    received: list[str] = []

    def wsgi_app(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = parse_qs(environ["wsgi.input"].read(length).decode())
        received.append(body["logout_token"][0])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    return received, serve(wsgi_app) + "/backchannel-logout"


def wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


def test_0_in_wechat_signs_the_person_out_of_every_app(provider, logout_receiver):
    received, uri = logout_receiver
    client_id, secret = add_client(provider, trusted=True, backchannel_logout_uri=uri)
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)
    token = rp.exchange(code_of(browser.authorize(rp.authorization_url())))

    assert "已退出 1 个登录" in say(page_client(provider.app), "0", SCANNER)

    info = requests.get(
        rp.config["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=5,
    )
    assert info.status_code == 401  # at once
    wait_for(lambda: received)
    keys = KeySet.import_key_set(requests.get(rp.config["jwks_uri"], timeout=5).json())
    logout = jwt.decode(received[0], keys)
    assert logout.header["typ"] == "logout+jwt"
    claims = logout.claims
    assert claims["iss"] == provider.base
    assert claims["aud"] in (client_id, [client_id])
    assert claims["sub"] == token["claims"]["sub"]
    assert claims["sid"] == token["claims"]["sid"]
    assert "http://schemas.openid.net/event/backchannel-logout" in claims["events"]
    assert "nonce" not in claims and claims["jti"]


def test_rp_initiated_logout_ends_the_session_and_goes_back(provider, logout_receiver):
    received, uri = logout_receiver
    after = "http://127.0.0.1:8765/signed-out"
    client_id, secret = add_client(
        provider, trusted=True, backchannel_logout_uri=uri, post_logout_redirect_uris=[after]
    )
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)
    token = rp.exchange(code_of(browser.authorize(rp.authorization_url())))

    answer = browser.get(
        rp.config["end_session_endpoint"]
        + "?"
        + requests.compat.urlencode(
            {"id_token_hint": token["id_token"], "post_logout_redirect_uri": after, "state": "bye"}
        )
    )

    assert answer.status_code == 302
    assert answer.headers["Location"] == after + "?state=bye"
    assert browser.get("/api/me").status_code == 401
    wait_for(lambda: received)


def test_logout_without_a_hint_asks_first(provider):
    client_id, secret = add_client(provider, trusted=True)
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)
    rp.exchange(code_of(browser.authorize(rp.authorization_url())))

    page = browser.get("/oidc/logout")

    assert page.status_code == 200
    assert "退出登录" in page.text
    assert browser.get("/api/me").status_code == 200


# Keys.


def test_a_rotation_keeps_the_previous_key_in_the_jwks(tmp_path, redis_url):
    current, previous = RSAKey.generate_key(2048), RSAKey.generate_key(2048)
    (tmp_path / "current.pem").write_bytes(current.as_pem(private=True))
    (tmp_path / "previous.pem").write_bytes(previous.as_pem(private=True))
    app = create_app(
        TestingConfig,
        {
            "REDIS_URL": redis_url,
            "OIDC_SIGNING_KEY": str(tmp_path / "current.pem"),
            "OIDC_SIGNING_KEY_PREVIOUS": str(tmp_path / "previous.pem"),
        },
    )
    try:
        published = app.test_client().get("/oidc/jwks").get_json()["keys"]
        signed = app.extensions["oidc"].keys.sign({"sub": "x"})
    finally:
        app.extensions["wechat_login"].close()

    assert [key["kid"] for key in published] == [current.thumbprint(), previous.thumbprint()]
    assert all("d" not in key for key in published)
    assert jwt.decode(signed, current).header["kid"] == current.thumbprint()


def test_development_workers_share_one_key(redis_url):
    apps = [create_app(TestingConfig, {"REDIS_URL": redis_url}) for _ in range(2)]
    try:
        kids = [app.test_client().get("/oidc/jwks").get_json()["keys"][0]["kid"] for app in apps]
    finally:
        for app in apps:
            app.extensions["wechat_login"].close()

    assert kids[0] == kids[1]


def test_signing_out_here_revokes_the_apps_tokens(provider, logout_receiver):
    received, uri = logout_receiver
    client_id, secret = add_client(provider, trusted=True, backchannel_logout_uri=uri)
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)
    token = rp.exchange(code_of(browser.authorize(rp.authorization_url())))

    signed_out = browser.http.post(
        provider.base + "/api/logout", headers={"Origin": provider.base}, timeout=5
    )

    assert signed_out.status_code == 200
    info = requests.get(
        rp.config["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=5,
    )
    assert info.status_code == 401
    wait_for(lambda: received)


@pytest.mark.parametrize("oidc_overrides", [{"PERMANENT_SESSION_LIFETIME": 1}])
def test_an_expired_session_is_noticed_and_its_apps_told(provider, logout_receiver):
    received, uri = logout_receiver
    client_id, secret = add_client(provider, trusted=True, backchannel_logout_uri=uri)
    rp = RelyingParty(provider, client_id, secret)
    token = rp.exchange(code_of(Browser(provider).authorize(rp.authorization_url())))
    oidc = provider.app.extensions["oidc"]
    wait_for(lambda: oidc.sweep_expired() == 1)

    info = requests.get(
        rp.config["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=5,
    )
    assert info.status_code == 401
    wait_for(lambda: received)
    assert oidc.sweep_expired() == 0  # ended once


def test_a_confirmed_logout_without_a_hint_goes_back_to_a_registered_uri(provider):
    after = "http://127.0.0.1:8765/signed-out"
    client_id, secret = add_client(provider, trusted=True, post_logout_redirect_uris=[after])
    rp = RelyingParty(provider, client_id, secret)
    browser = Browser(provider)
    rp.exchange(code_of(browser.authorize(rp.authorization_url())))
    asked = browser.get(
        "/oidc/logout?"
        + requests.compat.urlencode(
            {"client_id": client_id, "post_logout_redirect_uri": after, "state": "bye"}
        )
    )
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', asked.text))

    confirmed = browser.http.post(
        provider.base + "/oidc/logout",
        data={**fields, "confirm": "yes"},
        headers={"Origin": provider.base},
        allow_redirects=False,
        timeout=5,
    )

    assert confirmed.status_code == 302
    assert confirmed.headers["Location"] == after + "?state=bye"
    assert browser.get("/api/me").status_code == 401


def test_an_ec_p256_key_signs_es256(tmp_path, redis_url):
    key = ECKey.generate_key("P-256")
    (tmp_path / "ec.pem").write_bytes(key.as_pem(private=True))
    app = create_app(
        TestingConfig, {"REDIS_URL": redis_url, "OIDC_SIGNING_KEY": str(tmp_path / "ec.pem")}
    )
    try:
        keys = app.extensions["oidc"].keys
        config = app.test_client().get("/.well-known/openid-configuration").get_json()
        signed = keys.sign({"sub": "x"})
    finally:
        app.extensions["wechat_login"].close()

    assert config["id_token_signing_alg_values_supported"] == ["ES256"]
    assert jwt.decode(signed, key, algorithms=["ES256"]).header["alg"] == "ES256"
