"""The emulated web authorization (网页授权): the page WeChat's browser shows for
``connect/oauth2/authorize``, and the code exchange ``sns/oauth2/access_token``; and the
emulated Open Platform website application: ``connect/qrconnect`` (a "确认登录"/"取消" page
standing in for WeChat's QR page and the phone's confirmation), the same code exchange for the
website AppID, and ``sns/userinfo``.

The visitor is the emulated phone's user (its openid cookie), so a page opened "inside WeChat"
in the same browser as the phone page signs in as the person who scans there. Under the website
application that person has another openid (``website_openid``), and the same unionid, as
WeChat gives for AppIDs bound to one Open Platform account.
"""

import base64
import hashlib
import hmac
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


def website_openid(phone_openid: str) -> str:
    """The emulated person's openid under the website AppID: another 28 characters, derived
    from the phone's (the Official Account's) openid so it is stable."""
    digest = hashlib.sha256(f"website:{phone_openid}".encode()).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode()[:27]


def unionid_of(phone_openid: str) -> str:
    """The emulated person's unionid, the same under every AppID (as ``user/info`` gives it)."""
    return "u" + phone_openid[1:]


def _qrconnect_problem(params: dict[str, str]) -> str | None:
    """What WeChat's QR page would say instead, for a request it refuses; None if fine."""
    if params.get("appid") != current_app.config["WECHAT_OPEN_APP_ID"]:
        return "appid 参数错误"
    if params.get("response_type") != "code":
        return "response_type 参数错误"
    if params.get("scope") != "snsapi_login":
        return "scope 参数错误或没有 scope 权限"
    redirect_uri = urlsplit(params.get("redirect_uri", ""))
    domain = urlsplit(current_app.config["PUBLIC_BASE_URL"] or request.host_url).hostname
    if redirect_uri.scheme not in ("http", "https") or redirect_uri.hostname != domain:
        return "redirect_uri 参数错误"
    return None


@bp.get("/open/connect/qrconnect")
def qrconnect() -> Response:
    """``connect/qrconnect?appid&redirect_uri&response_type&scope&state``: WeChat's QR page for
    a website application, with the phone's confirmation in one."""
    params = request.args.to_dict()
    problem = _qrconnect_problem(params)
    openid = _phone_openid()
    page = render_template(
        "emulator/qrconnect.html",
        problem=problem,
        site=current_app.config["SITE_NAME"],
        params=params,
        website_openid=website_openid(openid),
        unionid=unionid_of(openid),
    )
    return _with_openid(Response(page, 400 if problem else 200), openid)


@bp.post("/open/connect/qrconnect")
def qrconnect_decide() -> Response:
    """The phone's answer (form field ``decision``: ``allow``, else cancel): back to
    ``redirect_uri`` with ``code`` and ``state``, or with ``state`` only when cancelled."""
    params = request.form.to_dict()
    problem = _qrconnect_problem(params)
    if problem:
        return Response(problem, 400, mimetype="text/plain")
    answer = {"state": params.get("state", "")}
    if params.get("decision") == "allow":
        code = emulator_state().issue_oauth_code(_phone_openid(), kind="website")
        answer = {"code": code, **answer}
    target = params["redirect_uri"]
    return redirect(f"{target}{'&' if '?' in target else '?'}{urlencode(answer)}")


@bp.get("/sns/oauth2/access_token")
def oauth_access_token() -> Response:
    """``GET sns/oauth2/access_token?appid=&secret=&code=&grant_type=authorization_code``, for
    the official account's AppID or the website application's.

    A code works once (40163 after), and is unknown once expired or made up (40029).
    """
    args = request.args
    if args.get("appid") == current_app.config["WECHAT_OPEN_APP_ID"]:
        return _website_access_token()
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


def _website_access_token() -> Response:
    args = request.args
    secret_ok = hmac.compare_digest(
        args.get("secret") or "", current_app.config["WECHAT_OPEN_APP_SECRET"]
    )
    errcode = (
        _refusal("sns/oauth2/access_token", needs_token=False)
        or (None if secret_ok else 40125)
        or (None if args.get("grant_type") == "authorization_code" else 40097)
    )
    if errcode:
        return _error(errcode)
    record, exchanges = emulator_state().spend_oauth_code(args.get("code", ""), kind="website")
    if record is None:
        return _error(40029)
    if exchanges > 1:
        return _error(40163)
    openid = website_openid(record["openid"])
    return jsonify(
        access_token=emulator_state().issue_sns_token(record["openid"]),
        expires_in=7200,
        refresh_token=secrets.token_urlsafe(64),
        openid=openid,
        scope="snsapi_login",
        unionid=unionid_of(record["openid"]),
    )


@bp.get("/sns/userinfo")
def sns_userinfo() -> Response:
    """``GET sns/userinfo?access_token=&openid=&lang=``: the website visitor's profile, with a
    nickname and an avatar URL on WeChat's image host (never fetched by us)."""
    errcode = _refusal("sns/userinfo", needs_token=False)
    if errcode:
        return _error(errcode)
    phone_openid = emulator_state().sns_token_openid(request.args.get("access_token", ""))
    if phone_openid is None:
        return _error(40001)
    openid = website_openid(phone_openid)
    if request.args.get("openid") != openid:
        return _error(40003)
    return jsonify(
        openid=openid,
        nickname=f"模拟用户{phone_openid[-4:]}",
        sex=0,
        province="",
        city="",
        country="",
        headimgurl=f"https://thirdwx.qlogo.cn/mmopen/emulator{phone_openid[-8:]}/132",
        privilege=[],
        unionid=unionid_of(phone_openid),
    )
