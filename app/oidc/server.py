"""Authlib's OAuth 2.0 / OpenID Connect server, wired to our storage.

The protocol is Authlib's: grants, PKCE, token responses, ID tokens (signed by joserfc),
revocation and RP-initiated logout. This module only supplies what Authlib asks an app for:
clients, codes, tokens and users from Redis, our signing keys, and our rules:

- authorization code only, PKCE ``S256`` only, and required of public clients already at the
  authorization endpoint (RFC 7636 section 4.4.1);
- codes single-use for 60 s, a second use revoking what the first gave (RFC 6749 section 4.1.2);
- refresh tokens only with ``offline_access``, rotated on every use, a reused one revoking its
  family (OAuth 2.0 Security BCP section 4.14.2).

Docs followed: https://docs.authlib.org/en/latest/flask/2/authorization-server.html and
https://openid.net/specs/openid-connect-core-1_0.html
"""

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, UserInfo
from authlib.oidc.core import UserInfoEndpoint as AuthlibUserInfoEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint as AuthlibEndSessionEndpoint
from flask import Flask, current_app, session

from ..login.users import User, UserStore
from ..metrics import OIDC_TOKENS
from .clients import ClientStore, OIDCClient
from .keys import SigningKeys
from .tokens import AuthorizationCode, Token, TokenStore

#: What a scope lets a client learn, for the consent page and discovery.
SCOPES = {
    "openid": "识别你的身份（一个只属于本站的用户编号）",
    "wechat": "你在本公众号下的 openid，以及 unionid（如已绑定开放平台）",
    "profile": "你的微信昵称和头像（如果你用网站应用扫码登录过）",
    "offline_access": "在你离开后继续访问（刷新令牌）",
}
#: The claims we ever give out.
CLAIMS = ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "sid", "at_hash"]
WECHAT_CLAIMS = ["wechat_openid", "wechat_unionid"]
PROFILE_CLAIMS = ["name", "picture"]


def user_claims(user: User, scope: str) -> UserInfo:
    """The claims about ``user`` that ``scope`` allows: ``sub`` always, the WeChat ids with
    ``wechat``, and with ``profile`` the nickname (``name``) and avatar URL (``picture``) when
    the website login gave them (the Official Account's flows give neither)."""
    claims = UserInfo(sub=user.id)
    scopes = scope.split()
    if "wechat" in scopes:
        claims["wechat_openid"] = user.openid
        if user.unionid:
            claims["wechat_unionid"] = user.unionid
    if "profile" in scopes:
        if user.nickname:
            claims["name"] = user.nickname
        if user.headimgurl:
            claims["picture"] = user.headimgurl
    return claims


class PKCE(CodeChallenge):
    """RFC 7636 with ``S256`` only: required of public clients at the authorization endpoint,
    accepted from confidential ones; ``plain`` (also meant by a missing method) refused."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if grant.request.client.public and not challenge:
            raise InvalidRequestError("A public client must send 'code_challenge' (S256).")
        if challenge and method != "S256":
            raise InvalidRequestError("Only 'code_challenge_method=S256' is supported.")
        super().validate_code_challenge(grant, redirect_uri)


class Grants:
    """What the grants need from the app beyond Authlib: the stores, keys and settings.

    Args:
        clients, tokens, users: the stores.
        keys: the signing keys.
        issuer: returns the issuer URL (``OIDC_ISSUER``).
        access_seconds, refresh_seconds: token lives, in seconds.
        on_tokens: told ``(sid, sub, client_id, family, auth_time)`` when tokens are issued
            in a session, so that ending the session can revoke them and tell the client.
    """

    def __init__(
        self,
        *,
        clients: ClientStore,
        tokens: TokenStore,
        users: UserStore,
        keys: SigningKeys,
        issuer: Callable[[], str],
        access_seconds: int,
        refresh_seconds: int,
        on_tokens: Callable[[str, str, str, str, int], None],
    ) -> None:
        self.clients = clients
        self.tokens = tokens
        self.users = users
        self.keys = keys
        self.issuer = issuer
        self.access_seconds = access_seconds
        self.refresh_seconds = refresh_seconds
        self.on_tokens = on_tokens


def build_server(app: Flask, deps: Grants) -> tuple[AuthorizationServer, ResourceProtector]:
    """Authlib's authorization server and resource protector for ``app``, with our grants,
    PKCE, OpenID Connect, revocation, userinfo and RP-initiated logout endpoints.

    The end-session endpoint still needs ``end_session`` and a logout redirect: the provider
    registers its subclass of ``EndSessionEndpoint``.
    """

    def save_token(token: dict[str, Any], request: OAuth2Request) -> None:
        OIDC_TOKENS.labels(request.payload.grant_type).inc()
        if request.authorization_code is not None:
            origin: AuthorizationCode | Token = request.authorization_code
            auth_time = origin.auth_time
        else:
            origin = request.refresh_token
            auth_time = origin.auth_time
        deps.tokens.save_tokens(
            token,
            client_id=request.client.get_client_id(),
            user_id=request.user.id,
            sid=origin.sid,
            family=origin.family,
            auth_time=auth_time,
            refresh_seconds=deps.refresh_seconds,
        )
        deps.on_tokens(
            origin.sid, request.user.id, request.client.get_client_id(), origin.family, auth_time
        )

    server = AuthorizationServer(app, query_client=deps.clients.get, save_token=save_token)
    server.register_token_generator(
        "default",
        server.create_bearer_token_generator(
            {
                "OAUTH2_REFRESH_TOKEN_GENERATOR": True,
                "OAUTH2_TOKEN_EXPIRES_IN": {
                    "authorization_code": deps.access_seconds,
                    "refresh_token": deps.access_seconds,
                },
            }
        ),
    )

    class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

        def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
            data = request.payload.data
            deps.tokens.save_code(
                AuthorizationCode(
                    code=code,
                    client_id=request.client.get_client_id(),
                    redirect_uri=request.payload.redirect_uri or "",
                    scope=request.scope,
                    user_id=request.user.id,
                    sid=session_sid_of_request(),
                    auth_time=int(session["auth_time"]),
                    nonce=data.get("nonce", ""),
                    code_challenge=data.get("code_challenge", ""),
                    code_challenge_method=data.get("code_challenge_method", ""),
                    method=session.get("method", "scan"),
                )
            )

        def query_authorization_code(
            self, code: str, client: OIDCClient
        ) -> AuthorizationCode | None:
            return deps.tokens.use_code(code, client.get_client_id())

        def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
            pass  # spent by use_code, and kept a while so that a replay is recognised

        def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
            return deps.users.by_id(authorization_code.user_id)

        def generate_token(self, user: User, scope: str, **options: Any) -> dict[str, Any]:
            # A refresh token only for offline_access (and only to clients allowed it).
            options["include_refresh_token"] = "offline_access" in scope.split() and options.get(
                "include_refresh_token", False
            )
            return super().generate_token(user=user, scope=scope, **options)

    class RefreshTokenGrant(grants.RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
        INCLUDE_NEW_REFRESH_TOKEN = True

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            # Another client's token is refused without being spent (no denial of service).
            found = deps.tokens.get_token(refresh_token, "refresh")
            if found is not None and found.client_id != self.request.client.get_client_id():
                return None
            return deps.tokens.spend_refresh_token(refresh_token)

        def authenticate_user(self, refresh_token: Token) -> User | None:
            return deps.users.by_id(refresh_token.user_id)

        def revoke_old_credential(self, refresh_token: Token) -> None:
            pass  # spent by spend_refresh_token; its access tokens expire on their own

    class IDToken(OpenIDCode):
        def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
            return False  # a nonce is the RP's to check; ours is echoed, never remembered

        def resolve_client_private_key(self, client: OIDCClient) -> Any:
            return deps.keys.current

        def get_client_algorithm(self, client: OIDCClient) -> str:
            return deps.keys.algorithm

        def get_encode_header(self, client: OIDCClient) -> dict[str, str]:
            return {"alg": deps.keys.algorithm, "kid": deps.keys.current.thumbprint()}

        def get_client_claims(self, client: OIDCClient) -> dict[str, Any]:
            return {
                "iss": deps.issuer(),
                # One audience, as a string: RP-initiated logout finds the client by it.
                "aud": client.get_client_id(),
                "exp": int(time.time()) + deps.access_seconds,
            }

        def get_authorization_code_claims(self, authorization_code: AuthorizationCode) -> dict:
            claims = super().get_authorization_code_claims(authorization_code)
            claims["sid"] = authorization_code.sid
            return claims

        def generate_user_info(self, user: User, scope: str) -> UserInfo:
            return user_claims(user, scope)

    class Revocation(RevocationEndpoint):
        CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

        def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
            for kind in ("access", "refresh"):
                token = deps.tokens.get_token(token_string, kind)
                if token is not None:
                    return _Revocable(token_string, token)
            return None

        def revoke_token(self, token: "_Revocable", request: OAuth2Request) -> None:
            deps.tokens.revoke_token(token.value)

    class BearerToken(BearerTokenValidator):
        def authenticate_token(self, token_string: str) -> "_Bearer | None":
            token = deps.tokens.get_token(token_string, "access")
            client = deps.clients.get(token.client_id) if token else None
            return _Bearer(token, client) if client else None

    class UserInfoEndpoint(AuthlibUserInfoEndpoint):
        def get_issuer(self) -> str:
            return deps.issuer()

        def generate_user_info(self, user: str, scope: str) -> UserInfo:
            found = deps.users.by_id(user)
            return user_claims(found, scope) if found else UserInfo(sub=user)

    server.register_grant(AuthorizationCodeGrant, [PKCE(required=True), IDToken()])
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(Revocation)
    protector = ResourceProtector()
    protector.register_token_validator(BearerToken())
    server.register_endpoint(UserInfoEndpoint(resource_protector=protector))
    return server, protector


class _Bearer:
    """An access token as Authlib's resource protector reads it: with its client object."""

    def __init__(self, token: Token, client: OIDCClient) -> None:
        self.token = token
        self.client = client
        self.scope = token.scope

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return self.token.is_expired()

    def is_revoked(self) -> bool:
        return self.token.is_revoked()

    def get_user(self) -> str:
        return self.token.user_id

    def get_client(self) -> OIDCClient:
        return self.client


class _Revocable:
    """A token found for revocation: its value, and Authlib's checks on it."""

    def __init__(self, value: str, token: Token) -> None:
        self.value = value
        self.token = token

    def check_client(self, client: OIDCClient) -> bool:
        return self.token.check_client(client)

    def get_client_id(self) -> str:
        return self.token.client_id


def session_sid_of_request() -> str:
    """The current browser session's public ``sid`` (see ``session_sid``)."""
    return session_sid(current_app.secret_key, session.sid)


def session_sid(secret_key: str | bytes, session_id: str) -> str:
    """The public ``sid`` of a server-side session: an HMAC of its id, so it names the session
    in ID and logout tokens without revealing the id that opens it."""
    key = secret_key.encode() if isinstance(secret_key, str) else secret_key
    digest = hmac.new(key, b"oidc-sid:" + session_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


class EndSessionEndpoint(AuthlibEndSessionEndpoint):
    """RP-initiated logout 1.0: verifies ``id_token_hint`` against our keys, the
    ``post_logout_redirect_uri`` against the client's list, and ends the session.

    Args:
        keys: the signing keys (the hint is verified with the published ones).
        end_session: ends the current browser session, for good.
    """

    def __init__(self, keys: SigningKeys, end_session: Callable[[], None]) -> None:
        super().__init__()
        self._keys = keys
        self._end_session = end_session

    def get_server_jwks(self) -> Any:
        return self._keys.public_key_set()

    def end_session(self, end_session_request: Any) -> None:
        self._end_session()
