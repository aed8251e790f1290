"""The emulated web authorization (网页授权): the page WeChat's browser shows for
``connect/oauth2/authorize``, and the code exchange ``sns/oauth2/access_token``.

The visitor is the emulated phone's user (its openid cookie), so a page opened "inside WeChat"
in the same browser as the phone page signs in as the person who scans there.
"""

import secrets
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request

from .api import _credentials_error, _error, _refusal
from .phone import _phone_openid, _with_openid
from .state import emulator_state

bp = Blueprint("oauth", __name__)

#: The scopes an official account may ask for.
SCOPES = ("snsapi_base", "snsapi_userinfo")


def _authorization_problem(params: dict[str, str]) -> str | None:
    """What WeChat's page would say instead of asking, for a request it refuses; None if fine.

    The emulated account's 网页授权域名 is the host of ``PUBLIC_BASE_URL``, else the host this
    page was opened on.
    """
    if params.get("appid") != current_app.config["WECHAT_APP_ID"]:
        return "appid 参数错误"
    if params.get("response_type") != "code":
        return "response_type 参数错误"
    if params.get("scope") not in SCOPES:
        return "scope 参数错误或没有 scope 权限（错误码：10005）"
    redirect_uri = urlsplit(params.get("redirect_uri", ""))
    domain = urlsplit(current_app.config["PUBLIC_BASE_URL"] or request.host_url).hostname
    if redirect_uri.scheme not in ("http", "https") or redirect_uri.hostname != domain:
        return "redirect_uri 域名与后台配置不一致（错误码：10003）"
    return None


@bp.get("/open/connect/oauth2/authorize")
def authorize() -> Response:
    """``connect/oauth2/authorize?appid&redirect_uri&response_type&scope&state``: the account
    asks for the visitor's identity (WeChat asks nothing for ``snsapi_base``; the emulator
    shows it, so that a person can see what happens, and refuse)."""
    params = request.args.to_dict()
    problem = _authorization_problem(params)
    openid = _phone_openid()
    page = render_template(
        "emulator/authorize.html",
        problem=problem,
        account=current_app.config["SITE_NAME"],
        params=params,
        openid=openid,
    )
    return _with_openid(Response(page, 400 if problem else 200), openid)


@bp.post("/open/connect/oauth2/authorize")
def decide() -> Response:
    """The visitor's answer (form field ``decision``: ``allow``, ``snapshot`` for a page opened
    as a Moments snapshot page, or anything else to refuse): back to ``redirect_uri`` with
    ``code`` and ``state``, or with ``state`` only when refused."""
    params = request.form.to_dict()
    problem = _authorization_problem(params)
    if problem:
        return Response(problem, 400, mimetype="text/plain")
    answer = {"state": params.get("state", "")}
    decision = params.get("decision")
    if decision in ("allow", "snapshot"):
        code = emulator_state().issue_oauth_code(_phone_openid(), decision == "snapshot")
        answer = {"code": code, **answer}
    target = params["redirect_uri"]
    return redirect(f"{target}{'&' if '?' in target else '?'}{urlencode(answer)}")


@bp.get("/sns/oauth2/access_token")
def oauth_access_token() -> Response:
    """``GET sns/oauth2/access_token?appid=&secret=&code=&grant_type=authorization_code``.

    A code works once (40163 after), and is unknown once expired or made up (40029).
    """
    args = request.args
    errcode = (
        _refusal("sns/oauth2/access_token", needs_token=False)
        or _credentials_error(args.get("appid"), args.get("secret"))
        or (None if args.get("grant_type") == "authorization_code" else 40097)
    )
    if errcode:
        return _error(errcode)
    record, exchanges = emulator_state().spend_oauth_code(args.get("code", ""))
    if record is None:
        return _error(40029)
    if exchanges > 1:
        return _error(40163)
    openid = record["openid"]
    snapshot = {"is_snapshotuser": 1} if record.get("snapshot") == "1" else {}
    return jsonify(
        **snapshot,
        access_token=secrets.token_urlsafe(64),
        expires_in=7200,
        refresh_token=secrets.token_urlsafe(64),
        openid=openid,
        scope="snsapi_base",
        unionid="u" + openid[1:],  # as user/info gives it: the account is bound
    )
