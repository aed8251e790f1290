"""Callback messages: safe parsing, login scans, dedupe keys and passive replies."""

import os
import re
import threading

import pytest

from app.wechat.errors import MalformedMessageError
from app.wechat.messages import (
    MAX_MESSAGE_BYTES,
    ScanEvent,
    parse_fields,
    parse_message,
    text_reply,
)
from tests.conftest import FIXTURES, fixture_xml

OPENID = "oABCD1234openid"
ACCOUNT = "gh_0000emulator"
CREATE_TIME = 1732100000
SCENE = "1732100000000-5f1d3c9a8b7e6d5c4b3a2910"

#: Fixture -> (MsgType, Event) it parses to.
PARSED = {
    "subscribe_qrscene": ("event", "subscribe"),
    "scan": ("event", "SCAN"),
    "subscribe_plain": ("event", "subscribe"),
    "unsubscribe": ("event", "unsubscribe"),
    "text": ("text", None),
}
#: Fixtures the parser must refuse: broken XML, and DOCTYPEs (XXE, entity expansion).
REFUSED = ["malformed", "xxe", "entity_expansion"]


def xml(name: str, **values: object) -> bytes:
    """A fixture with a fixed openid, CreateTime and scene."""
    values = {"openid": OPENID, "create_time": CREATE_TIME, "scene": SCENE, **values}
    return fixture_xml(name, **values)


def scan_event(scene_str: str, new_follower: bool) -> ScanEvent:
    return ScanEvent(OPENID, scene_str, new_follower, ACCOUNT, CREATE_TIME)


def test_every_fixture_is_covered():
    assert {path.stem for path in FIXTURES.glob("*.xml")} == set(PARSED) | set(REFUSED)


@pytest.mark.parametrize(("name", "msg_type", "event"), [(n, *v) for n, v in PARSED.items()])
def test_parse_message_reads_fixture(name, msg_type, event):
    message = parse_message(xml(name))

    assert message.ToUserName == ACCOUNT
    assert message.FromUserName == OPENID
    assert message.CreateTime == CREATE_TIME
    assert message.MsgType == msg_type
    assert message.fields.get("Event") == event


@pytest.mark.parametrize("name", REFUSED)
def test_parse_message_refuses_fixture(name):
    with pytest.raises(MalformedMessageError):
        parse_message(xml(name))


def test_doctype_is_refused_even_without_entities():
    body = b'<?xml version="1.0"?><!DOCTYPE xml>' + xml("text")
    with pytest.raises(MalformedMessageError, match="DOCTYPE"):
        parse_message(body)


@pytest.mark.parametrize(
    ("doctype", "event_key"),
    [
        ('<!DOCTYPE xml [<!ENTITY scene SYSTEM "file://{path}">]>', "&scene;"),
        ('<!DOCTYPE xml SYSTEM "file://{path}">', "qrscene_1"),
        ('<!DOCTYPE xml [<!ENTITY % dtd SYSTEM "file://{path}"> %dtd;]>', "qrscene_1"),
    ],
    ids=["external-entity", "external-dtd", "external-parameter-entity"],
)
def test_the_parser_never_opens_what_a_doctype_names(tmp_path, doctype, event_key):
    # The DOCTYPE is refused only after parsing: beneath that, the parser's own settings keep
    # it from opening anything. A FIFO shows it: opening one blocks until a writer comes, so
    # a parser that opened it would hold the worker instead of answering.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    body = (
        f'<?xml version="1.0"?>{doctype.format(path=fifo)}'
        f"<xml><MsgType>event</MsgType><EventKey>{event_key}</EventKey></xml>"
    ).encode()
    outcome = []

    def parse() -> None:
        try:
            parse_fields(body)
        except MalformedMessageError as exc:
            outcome.append(exc)

    parser = threading.Thread(target=parse, daemon=True)
    parser.start()
    parser.join(2)
    if parser.is_alive():
        # Release the parser blocked on the FIFO (a writer that closes at once: end of file).
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        parser.join(5)
        pytest.fail("the parser opened the file a DOCTYPE named")
    assert outcome and "DOCTYPE" in str(outcome[0])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(xml("subscribe_qrscene"), scan_event(SCENE, True), id="new-follower"),
        pytest.param(xml("scan"), scan_event(SCENE, False), id="existing-follower"),
        pytest.param(
            xml("scan").replace(b"CDATA[SCAN]", b"CDATA[scan]"),
            scan_event(SCENE, False),
            id="lower-case-scan",
        ),
        pytest.param(
            xml("subscribe_qrscene", scene="qrscene_abc"),
            scan_event("qrscene_abc", True),
            id="prefix-sliced-once",
        ),
        pytest.param(
            xml("scan", scene="qrscene_abc"), scan_event("qrscene_abc", False), id="scan-keeps-all"
        ),
        pytest.param(xml("subscribe_plain"), None, id="plain-subscribe"),
        pytest.param(xml("unsubscribe"), None, id="unsubscribe"),
        pytest.param(xml("text"), None, id="text"),
        pytest.param(xml("scan", scene=""), None, id="scan-empty-eventkey"),
        pytest.param(xml("subscribe_qrscene", scene=""), None, id="subscribe-bare-prefix"),
    ],
)
def test_login_scan(body, expected):
    assert parse_message(body).login_scan() == expected


def padded_text(size: int) -> bytes:
    """A text message padded with spaces to exactly ``size`` bytes."""
    body = xml("text")
    return body.replace(b"</xml>", b" " * (size - len(body)) + b"</xml>")


@pytest.mark.parametrize(
    ("size", "accepted"), [(MAX_MESSAGE_BYTES, True), (MAX_MESSAGE_BYTES + 1, False)]
)
def test_body_size_limit(size, accepted):
    body = padded_text(size)
    assert len(body) == size

    if accepted:
        assert parse_message(body).MsgType == "text"
    else:
        with pytest.raises(MalformedMessageError, match="larger"):
            parse_message(body)


def test_wrong_root_is_refused():
    body = xml("text").replace(b"<xml>", b"<message>").replace(b"</xml>", b"</message>")
    with pytest.raises(MalformedMessageError, match="root"):
        parse_message(body)


@pytest.mark.parametrize("field", ["ToUserName", "FromUserName", "CreateTime", "MsgType"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_field_is_refused(field, how):
    element = re.compile(rf"<{field}>.*?</{field}>".encode())
    replacement = b"" if how == "absent" else f"<{field}></{field}>".encode()
    body = element.sub(replacement, xml("text"))
    assert body != xml("text")

    with pytest.raises(MalformedMessageError, match=field):
        parse_message(body)


@pytest.mark.parametrize(
    "create_time",
    [
        "abc",
        "-1",
        "1.5",
        "0x10",
        " 1732100000",
        pytest.param("²", id="superscript-two"),  # str.isdigit() says yes, int() says no
        pytest.param("9" * 5000, id="past-ints-digit-limit"),  # int() refuses over 4,300
    ],
)
def test_malformed_create_time_is_refused(create_time):
    with pytest.raises(MalformedMessageError, match="CreateTime"):
        parse_message(xml("scan", create_time=create_time))


def test_dedupe_key_is_the_same_for_a_retried_event():
    assert parse_message(xml("scan")).dedupe_key == parse_message(xml("scan")).dedupe_key


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(xml("scan", scene="1732100000000-ffff"), id="other-eventkey-same-second"),
        pytest.param(xml("scan", openid="oOtherOpenid"), id="other-openid"),
        pytest.param(xml("scan", create_time=CREATE_TIME + 1), id="other-second"),
        pytest.param(xml("subscribe_qrscene"), id="other-event"),
    ],
)
def test_dedupe_key_differs_for_a_different_event(other):
    assert parse_message(other).dedupe_key != parse_message(xml("scan")).dedupe_key


def test_dedupe_key_of_a_text_message_is_its_msgid():
    first = parse_message(xml("text"))
    retry = parse_message(xml("text", create_time=CREATE_TIME + 5))
    other = parse_message(xml("text").replace(b"24602510516126457", b"24602510516126999"))

    assert "24602510516126457" in first.dedupe_key
    assert retry.dedupe_key == first.dedupe_key
    assert other.dedupe_key != first.dedupe_key


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("登录成功，请回到网页继续。", id="chinese"),
        pytest.param("a <b> & c; &amp; </xml>", id="markup-characters"),
        pytest.param("x]]>y", id="cdata-terminator"),
    ],
)
def test_text_reply_round_trips(content):
    reply = text_reply(OPENID, ACCOUNT, content, CREATE_TIME + 1)

    assert parse_message(reply).fields == {
        "ToUserName": OPENID,
        "FromUserName": ACCOUNT,
        "CreateTime": str(CREATE_TIME + 1),
        "MsgType": "text",
        "Content": content,
    }


def test_text_reply_uses_cdata_for_text_and_bare_numbers():
    reply = text_reply(OPENID, ACCOUNT, "登录成功", CREATE_TIME)

    assert "<Content><![CDATA[登录成功]]></Content>".encode() in reply
    assert f"<CreateTime>{CREATE_TIME}</CreateTime>".encode() in reply
