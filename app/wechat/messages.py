"""Callback messages: parse WeChat's XML safely, recognise login scans, build passive replies.

Docs followed:
- events: https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_event_pushes.html
- replies: https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Passive_user_reply_message.html
"""

from dataclasses import dataclass

from lxml import etree

from .errors import MalformedMessageError

#: Largest callback body accepted, in bytes. Real events are well under 2 KB.
MAX_MESSAGE_BYTES = 64 * 1024

#: The prefix WeChat puts before the scene in a new follower's ``EventKey``.
SUBSCRIBE_SCENE_PREFIX = "qrscene_"

_REQUIRED_FIELDS = ("ToUserName", "FromUserName", "CreateTime", "MsgType")


@dataclass(frozen=True)
class Message:
    """One message or event pushed by WeChat.

    Attributes:
        fields: every top-level element, tag -> text (``{"ToUserName": "gh_...", ...}``).
    """

    fields: dict[str, str]

    @property
    def ToUserName(self) -> str:
        """The account's original id (``gh_...``)."""
        return self.fields["ToUserName"]

    @property
    def FromUserName(self) -> str:
        """The sender's openid."""
        return self.fields["FromUserName"]

    @property
    def CreateTime(self) -> int:
        """When WeChat created the message, in epoch seconds."""
        return int(self.fields["CreateTime"])

    @property
    def MsgType(self) -> str:
        """``event``, ``text``, ``image``..."""
        return self.fields["MsgType"]

    @property
    def dedupe_key(self) -> str:
        """What stays the same across WeChat's retries of this message.

        ``MsgId`` for messages; for events ``FromUserName`` + ``CreateTime`` as WeChat documents,
        plus ``Event`` and ``EventKey`` so two different scans by one user in the same second
        are never taken for one retried event.
        """
        if "MsgId" in self.fields:
            return f"msg:{self.fields['MsgId']}"
        return ":".join(
            (
                "event",
                self.FromUserName,
                str(self.CreateTime),
                self.fields.get("Event", ""),
                self.fields.get("EventKey", ""),
            )
        )

    def login_scan(self) -> "ScanEvent | None":
        """Read this message as a parametric-QR scan, if it is one.

        Returns:
            A ``ScanEvent`` for ``subscribe`` with ``EventKey`` ``qrscene_<scene>`` (a new
            follower) or ``SCAN`` with ``EventKey`` ``<scene>`` (an existing follower); None for
            anything else (plain subscribe, unsubscribe, text, ...).
        """
        if self.MsgType != "event":
            return None
        event = self.fields.get("Event", "").lower()
        event_key = self.fields.get("EventKey", "")
        if event == "subscribe" and event_key.startswith(SUBSCRIBE_SCENE_PREFIX):
            # Slice the prefix off once: a scene may itself contain "qrscene_".
            scene_str, new_follower = event_key[len(SUBSCRIBE_SCENE_PREFIX) :], True
        elif event == "scan" and event_key:
            scene_str, new_follower = event_key, False
        else:
            return None
        if not scene_str:
            return None
        return ScanEvent(
            openid=self.FromUserName,
            scene_str=scene_str,
            new_follower=new_follower,
            account=self.ToUserName,
            create_time=self.CreateTime,
        )


@dataclass(frozen=True)
class ScanEvent:
    """A user scanned one of our temporary parametric QR codes.

    Attributes:
        openid: the scanner (``FromUserName``).
        scene_str: the scene carried by the QR, prefix removed.
        new_follower: True for ``subscribe`` (followed by scanning), False for ``SCAN``.
        account: our account's original id (``ToUserName``), the reply's sender.
        create_time: ``CreateTime``, epoch seconds.
    """

    openid: str
    scene_str: str
    new_follower: bool
    account: str
    create_time: int


def parse_message(body: bytes) -> Message:
    """Parse a plaintext callback body (or a decrypted one).

    Args:
        body: the raw POST body.

    Returns:
        The ``Message``.

    Raises:
        MalformedMessageError: as ``parse_fields``, or a missing required field or a
            non-numeric ``CreateTime``.
    """
    fields = parse_fields(body)
    missing = [name for name in _REQUIRED_FIELDS if not fields.get(name)]
    if missing:
        raise MalformedMessageError(f"missing {', '.join(missing)}")
    if not is_timestamp(fields["CreateTime"]):
        raise MalformedMessageError("CreateTime is not a number")
    return Message(fields)


def is_timestamp(value: str) -> bool:
    """Tell whether ``value`` reads as WeChat's epoch seconds (``CreateTime``, a callback's
    ``timestamp``): ASCII digits only (``isdigit()`` alone also takes "²", which ``int()``
    cannot read), and at most 12 of them (ten last until the year 2286; hundreds overflow a
    float, and ``int()`` refuses over 4,300)."""
    return value.isascii() and value.isdigit() and len(value) <= 12


def parse_fields(body: bytes) -> dict[str, str]:
    """Parse WeChat's flat ``<xml>`` document into tag -> text.

    The parser resolves no entities, loads no DTD and never touches the network; any DOCTYPE is
    refused outright, so XXE and entity-expansion bombs cannot get through.

    Args:
        body: the raw XML.

    Returns:
        Every top-level element's text, by tag (the encrypted envelope's ``Encrypt`` too).

    Raises:
        MalformedMessageError: too large, not well-formed XML, a DOCTYPE, or a root other than
            ``<xml>``.
    """
    if len(body) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(f"body larger than {MAX_MESSAGE_BYTES} bytes")
    # A parser per call: lxml parser objects must not be shared between threads.
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise MalformedMessageError(f"not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise MalformedMessageError("a DOCTYPE is not allowed")
    if root.tag != "xml":
        raise MalformedMessageError(f"root element is <{root.tag}>, expected <xml>")
    return {child.tag: (child.text or "") for child in root if isinstance(child.tag, str)}


def text_reply(to_user: str, from_account: str, content: str, create_time: int) -> bytes:
    """Build a passive text reply.

    Args:
        to_user: the openid the reply goes to (the message's ``FromUserName``).
        from_account: our account's original id (the message's ``ToUserName``).
        content: the text the user sees.
        create_time: epoch seconds.

    Returns:
        UTF-8 XML bytes, ready to be the callback's response body.
    """
    return to_xml(
        {
            "ToUserName": to_user,
            "FromUserName": from_account,
            "CreateTime": create_time,
            "MsgType": "text",
            "Content": content,
        }
    )


def to_xml(fields: dict[str, str | int]) -> bytes:
    """Serialise fields in WeChat's flat ``<xml>`` form: text as CDATA, numbers bare.

    Args:
        fields: tag -> value, in document order.

    Returns:
        UTF-8 XML bytes.
    """
    root = etree.Element("xml")
    for tag, value in fields.items():
        element = etree.SubElement(root, tag)
        element.text = str(value) if isinstance(value, int) else etree.CDATA(value)
    return etree.tostring(root, encoding="utf-8")
