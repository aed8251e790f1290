"""The OpenID Provider's endpoints: discovery, keys, authorization (with our QR page and the
consent page), token, userinfo, revocation and RP-initiated logout.

Errors at the authorization endpoint follow RFC 6749 section 4.1.2.1: an unknown ``client_id``
or a ``redirect_uri`` not registered for it gets an error page and never a redirect; every
other error goes back to the ``redirect_uri`` with ``error``, ``error_description`` and ``state``.
"""

import time

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from ..extensions import login_service
from ..login.users import User
from ..metrics import OIDC_AUTHORIZATIONS
from ..views.context import app_authorization, sends_this_browser
from ..views.pages import login_page
from ..views.security import require_same_origin
from .provider import Provider
from .server import CLAIMS, PROFILE_CLAIMS, SCOPES, WECHAT_CLAIMS

bp = Blueprint("oidc", __name__)


def provider() -> Provider:
    """The current app's ``Provider``."""
    return current_app.extensions["oidc"]


def signed_in_user() -> User | None:
    """Who this browser's session signed in as, or None."""
    user_id = session.get("user_id")
    return provider().users.by_id(user_id) if user_id else None


@bp.before_app_request
def start_sweep() -> None:
    provider().ensure_sweeper()


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    """OpenID Connect Discovery 1.0: where everything is, and what is supported."""
    issuer = provider().issuer()

    def endpoint(name: str) -> str:
        return issuer + url_for(name)

    return jsonify(
        issuer=issuer,
        authorization_endpoint=endpoint("oidc.authorize"),
        token_endpoint=endpoint("oidc.token"),
        userinfo_endpoint=endpoint("oidc.userinfo"),
        jwks_uri=endpoint("oidc.jwks"),
        end_session_endpoint=endpoint("oidc.logout"),
        revocation_endpoint=endpoint("oidc.revoke"),
        response_types_supported=["code"],
        response_modes_supported=["query"],
        grant_types_supported=["authorization_code", "refresh_token"],
        code_challenge_methods_supported=["S256"],
        id_token_signing_alg_values_supported=provider().keys.algorithms,
        subject_types_supported=["public"],
        token_endpoint_auth_methods_supported=[
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        revocation_endpoint_auth_methods_supported=[
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        scopes_supported=list(SCOPES),
        claims_supported=CLAIMS + WECHAT_CLAIMS + PROFILE_CLAIMS,
        prompt_values_supported=["none", "login", "consent"],
        backchannel_logout_supported=True,
        backchannel_logout_session_supported=True,
        frontchannel_logout_supported=False,
        authorization_response_iss_parameter_supported=False,
        request_parameter_supported=False,
        request_uri_parameter_supported=False,
        claims_parameter_supported=False,
    )


@bp.get("/oidc/jwks")
def jwks() -> Response:
    """The public keys ID tokens and logout tokens are signed with (current and previous)."""
    return jsonify(provider().keys.jwks())


@bp.get("/oidc/authorize")
def authorize() -> Response | str:
    """The authorization endpoint: sign in (our QR page) and consent if needed, then back to
    the client's ``redirect_uri`` with a code."""
    oidc = provider()
    user = signed_in_user()
    try:
        grant = oidc.server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _error(error)
    client = grant.client
    if user is None or _needs_fresh_login(grant, user):
        held = oidc.tokens.hold_request(
            {"url": request.full_path, "client_id": client.client_id, "at": time.time()}
        )
        OIDC_AUTHORIZATIONS.labels("login").inc()
        return redirect(url_for("oidc.login", request=held))
    consent_id = request.args.get("consent_request", "")
    held = oidc.tokens.held_request(consent_id)
    if held and held.get("user_id") == user.id and held.get("client_id") == client.client_id:
        oidc.tokens.release_request(consent_id)
        if held.get("decision") != "allow":
            OIDC_AUTHORIZATIONS.labels("error").inc()
            return oidc.server.create_authorization_response(grant=grant, grant_user=None)
        oidc.tokens.consent(user.id, client.client_id, grant.request.scope)
    prompt = grant.request.payload.data.get("prompt", "").split()
    scope = grant.request.scope
    if not client.trusted and (
        "consent" in prompt or not oidc.tokens.consented(user.id, client.client_id, scope)
    ):
        if "none" in prompt:
            return _error(ConsentRequiredError(redirect_uri=grant.redirect_uri, state=_state()))
        held = oidc.tokens.hold_request(
            {
                "url": request.full_path,
                "client_id": client.client_id,
                "user_id": user.id,
                "scope": scope,
            }
        )
        scopes = [SCOPES[name] for name in scope.split() if name in SCOPES]
        OIDC_AUTHORIZATIONS.labels("consent").inc()
        return render_template("consent.html", client=client, scopes=scopes, request_id=held)
    OIDC_AUTHORIZATIONS.labels("code").inc()
    return oidc.server.create_authorization_response(grant=grant, grant_user=user)


def _needs_fresh_login(grant, user: User) -> bool:
    """True if the request asks for a scan this session has not given: ``prompt=login`` or a
    ``max_age`` older than the sign-in, unless the person just signed in for this request."""
    data = grant.request.payload.data
    auth_time = float(session.get("auth_time", 0))
    held = provider().tokens.held_request(request.args.get("login_request", ""))
    if held and held.get("client_id") == grant.client.client_id and auth_time >= held["at"]:
        return False  # the scan this request sent the person to
    if "login" in data.get("prompt", "").split():
        return True
    max_age = data.get("max_age", "")
    return max_age.isdigit() and time.time() - auth_time > int(max_age)


def _state() -> str | None:
    return request.args.get("state")


def _error(error: OAuth2Error) -> Response | tuple[str, int]:
    """An authorization error: back to a validated ``redirect_uri`` when there is one, else
    an error page (an unknown client or an unregistered ``redirect_uri`` gets no redirect)."""
    OIDC_AUTHORIZATIONS.labels("error").inc()
    if error.redirect_uri:
        return provider().server.handle_error_response(None, error)
    return render_template("oidc_error.html", error=error), 400


@bp.get("/oidc/login")
def login() -> Response | str:
    """Our QR page, headed with the client's name; once signed in, it goes on by itself to the
    authorization that sent the person here. Inside WeChat's browser, in-WeChat login instead
    (302, ``context.sends_this_browser``), which comes back to that authorization."""
    request_id = request.args.get("request", "")
    oidc_request, client_name = app_authorization(request_id)
    continue_url = provider().continue_url(oidc_request)
    if continue_url is None:
        abort(400, "登录请求已过期，请回到应用重新登录。")
    if sends_this_browser():
        return redirect(url_for("wechat_browser.start", oidc_request=oidc_request))
    return login_page(client_name=client_name, oidc_request=oidc_request, continue_url=continue_url)


@bp.post("/oidc/consent")
def consent() -> Response:
    """The consent page's answer: back to the authorization, which then gives the code (allow)
    or ``access_denied`` (deny)."""
    require_same_origin()
    request_id = request.form.get("request", "")
    oidc = provider()
    held = oidc.tokens.held_request(request_id)
    user = signed_in_user()
    if not held or user is None or held.get("user_id") != user.id:
        abort(400, "授权请求已过期，请回到应用重新登录。")
    decision = "allow" if request.form.get("decision") == "allow" else "deny"
    oidc.tokens.release_request(request_id)
    answered = oidc.tokens.hold_request({**held, "decision": decision})
    return redirect(add_params_to_uri(held["url"], {"consent_request": answered}))


@bp.post("/oidc/token")
def token() -> Response:
    """The token endpoint (authorization_code, refresh_token)."""
    return provider().server.create_token_response()


@bp.route("/oidc/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    """Claims about the token's user, for a Bearer access token with ``openid``."""
    return provider().server.create_endpoint_response("userinfo")


@bp.post("/oidc/revoke")
def revoke() -> Response:
    """RFC 7009 token revocation."""
    return provider().server.create_endpoint_response("revocation")


@bp.route("/oidc/logout", methods=["GET", "POST"])
def logout() -> Response | str | tuple[str, int]:
    """RP-initiated logout: end this browser's session (and so every app's, back-channel),
    then back to the client's registered ``post_logout_redirect_uri``. Without an
    ``id_token_hint`` the person confirms first, so that no other site can sign them out."""
    oidc = provider()
    if request.method == "POST" and request.form.get("confirm") == "yes":
        require_same_origin()
        end_browser_session()
        return _after_confirmed_logout(oidc)
    try:
        end_request = oidc.server.validate_endpoint_request("end_session")
    except OAuth2Error as error:
        return render_template("oidc_error.html", error=error), 400
    if end_request.needs_confirmation:
        return render_template(
            "confirm_logout.html",
            client=end_request.client,
            post_logout_redirect_uri=request.values.get("post_logout_redirect_uri", ""),
            state=request.values.get("state", ""),
        )
    response = oidc.server.create_endpoint_response("end_session", end_request)
    return response or render_template("signed_out.html")


def _after_confirmed_logout(oidc: Provider) -> Response | str:
    """Where a confirmed logout goes: the client's ``post_logout_redirect_uri`` if it is one
    it registered (the person confirmed, so no hint is needed: RP-Initiated Logout 1.0
    section 3), with its ``state``; else our signed-out page."""
    client = oidc.clients.get(request.form.get("client_id", ""))
    uri = request.form.get("post_logout_redirect_uri", "")
    if client is None or uri not in client.post_logout_redirect_uris:
        return render_template("signed_out.html")
    state = request.form.get("state", "")
    return redirect(add_params_to_uri(uri, {"state": state}) if state else uri)


def end_browser_session() -> None:
    """End this browser's session for good (every worker, every app that got tokens in it)."""
    openid = session.get("openid")
    if openid:
        login_service().sign_out(openid, session.get("scene"), session.sid)
    session.clear()
