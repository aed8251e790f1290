"""A User-Agent header as a person reads it: browser and OS."""

from ua_parser import parse


def describe_browser(user_agent: str) -> str:
    """Summarise a User-Agent header, e.g. ``Chrome 120 / Windows 10``.

    Args:
        user_agent: the raw header (may be empty or junk).

    Returns:
        ``"<browser> <major> / <OS> <major>"``, parts left out when unknown; ``""`` when
        nothing is recognised.
    """
    result = parse(user_agent[:512])  # real headers are short; a huge one only costs time
    parts = []
    for found in (result.user_agent, result.os):
        if found is not None and found.family != "Other":
            # Capped: a forged header can carry hundred-digit "versions" into the reply.
            parts.append(f"{found.family} {found.major or ''}".strip()[:40])
    return " / ".join(parts)


def in_wechat(user_agent: str) -> bool:
    """Tell whether the page is open in WeChat's own browser, where web authorization works.

    WeCom's browser (``wxwork``) also says ``MicroMessenger`` but cannot authorize for an
    official account.
    """
    return "MicroMessenger" in user_agent and "wxwork" not in user_agent


def on_mobile(user_agent: str) -> bool:
    """Tell whether the browser is on a phone, whose own screen cannot be scanned.

    ``Mobi`` is the token browsers put in for a mobile device (Android tablets leave it out,
    hence ``Android``).
    """
    return "Mobi" in user_agent or "Android" in user_agent
