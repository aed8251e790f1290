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
