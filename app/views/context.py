"""What a request tells about the login it starts: the attempt's context (shown to the scanner)
and the address WeChat sends a web authorization back to."""

from flask import current_app, request, url_for

from ..extensions import client_ip
from ..login.store import AttemptContext
from ..login.useragent import describe_browser


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


def callback_uri(endpoint: str) -> str:
    """Our callback ``endpoint`` as WeChat must see it: under ``PUBLIC_BASE_URL`` (whose host is
    the domain set for web authorization on WeChat's side) when set, else at the address this
    request came in on (development)."""
    base = current_app.config["PUBLIC_BASE_URL"]
    return base + url_for(endpoint) if base else url_for(endpoint, _external=True)
