"""WeChat's side of the benchmark: callbacks signed as WeChat signs them.

Bodies come from the real-format fixtures the tests use (``tests/fixtures/*.xml``).
"""

import itertools
import secrets
import time
from pathlib import Path
from string import Template
from urllib.parse import urlencode

from app.emulator import EMULATOR_TOKEN
from app.wechat.signature import sign

from .httpclient import HttpConnection, Response

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

#: The callback path WeChat posts to.
CALLBACK_PATH = "/wechat/callback"

#: What the scanner is told when a scan signs the page in.
SIGNED_IN_REPLY = "登录成功".encode()


def fixture_xml(name: str, **values: object) -> bytes:
    """The fixture ``tests/fixtures/<name>.xml`` with ``$openid``, ``$scene``,
    ``$create_time`` filled in (the time defaults to now)."""
    values.setdefault("create_time", int(time.time()))
    return Template((FIXTURES / f"{name}.xml").read_text()).safe_substitute(values).encode()


def scan_xml(scene: str, openid: str) -> bytes:
    """A returning follower's ``SCAN`` event for ``scene``."""
    return fixture_xml("scan", scene=scene, openid=openid)


def text_xml(openid: str) -> bytes:
    """A text message that is no answer to a login (the callback acknowledges it)."""
    return fixture_xml("text", openid=openid)


def new_openid() -> str:
    """A fresh openid of WeChat's shape (28 characters starting with ``o``)."""
    return "o" + secrets.token_urlsafe(20)[:27]


class CallbackSigner:
    """Signs callbacks with the emulator's Token, each with a nonce never used before (the
    server refuses a signature it has seen).

    Args:
        token: the Token; the emulator's unless given.
    """

    def __init__(self, token: str = EMULATOR_TOKEN) -> None:
        self._token = token
        self._nonces = itertools.count(secrets.randbelow(10**9))

    def target(self) -> str:
        """The callback path with a fresh ``signature``/``timestamp``/``nonce`` query."""
        timestamp, nonce = str(int(time.time())), str(next(self._nonces))
        query = {"signature": sign(self._token, timestamp, nonce), "timestamp": timestamp}
        return f"{CALLBACK_PATH}?{urlencode({**query, 'nonce': nonce})}"

    async def post(self, connection: HttpConnection, body: bytes) -> Response:
        """Post ``body`` as WeChat does: signed, as ``text/xml``.

        Raises:
            ConnectionError, TimeoutError: as ``HttpConnection.request``.
        """
        return await connection.request(
            "POST",
            self.target(),
            headers={"Content-Type": "text/xml", "User-Agent": "Mozilla/4.0"},
            body=body,
        )
