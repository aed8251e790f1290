"""What a request tells about the login it starts: the attempt's context (shown to the scanner),
the app's authorization it is for, the address WeChat sends a web authorization back to, and
whether this browser signs in inside WeChat."""

from flask import current_app, request, url_for

from ..extensions import client_ip, login_service
from ..login.methods import WECHAT_BROWSER
from ..login.store import AttemptContext
from ..login.useragent import describe_browser, in_wechat


def attempt_context(*, client: str = "", link_to: str = "") -> AttemptContext:
    """The context of an attempt this request starts: the configured site name (never the
    request's ``Host``), the browser and OS from the User-Agent, and the client's address (from
    the trusted proxy chain only).

    Args:
        client: the app signed in to through the OpenID provider ("" for the site itself).
        link_to: the signed-in person a link attempt is for ("" for a sign-in).
    """
    return AttemptContext(
        site=current_app.config["SITE_NAME"],
        browser=describe_browser(request.headers.get("User-Agent", "")),
        ip=client_ip(),
        client=client,
        link_to=link_to,
    )


def app_authorization(request_id: object) -> tuple[str, str]:
    """The app's authorization a sign-in is for, from the ``oidc_request`` a page or link
    names: ``(request_id, the app's name)`` when the OpenID provider holds that request, else
    ``("", "")`` (a sign-in to the site itself, or one whose request expired)."""
    if not isinstance(request_id, str):
        return "", ""
    name = current_app.extensions["oidc"].client_name_of_request(request_id)
    return (request_id, name) if name else ("", "")


def callback_uri(endpoint: str) -> str:
    """Our callback ``endpoint`` as WeChat must see it: under ``PUBLIC_BASE_URL`` (whose host is
    the domain set for web authorization on WeChat's side) when set, else at the address this
    request came in on (development)."""
    base = current_app.config["PUBLIC_BASE_URL"]
    return base + url_for(endpoint) if base else url_for(endpoint, _external=True)


def wechat_browser_on() -> bool:
    """Tell whether this site offers in-WeChat login (``LOGIN_METHODS``)."""
    return WECHAT_BROWSER in login_service().offered()


def sends_this_browser() -> bool:
    """Whether a page that would show a QR code sends this browser to in-WeChat login instead:
    it is WeChat's own browser (nobody can scan their own screen), the site offers the method,
    and the page was not asked for its QR code (``?qr=1``: in WeChat, a long press on it is
    recognised)."""
    return (
        in_wechat(request.headers.get("User-Agent", ""))
        and not request.args.get("qr")
        and wechat_browser_on()
    )
