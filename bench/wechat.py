"""WeChat's side of the benchmark: messages built and signed by the app's one sender
(``app.wechat.delivery``), posted over the benchmark's own HTTP client."""

from urllib.parse import urlencode

from app.emulator import EMULATOR_SETTINGS, EMULATOR_TOKEN
from app.wechat.delivery import new_openid, push_request, scan_event, text_message

from .httpclient import HttpConnection, Response

#: The callback path WeChat posts to.
CALLBACK_PATH = "/wechat/callback"
#: The emulated account, as WeChat names it in ``ToUserName``.
ACCOUNT_ID = EMULATOR_SETTINGS["EMULATOR_ACCOUNT_ID"]

#: What the scanner is told when a scan signs the page in.
SIGNED_IN_REPLY = "登录成功".encode()


def scan(scene: str) -> dict[str, str | int]:
    """A returning follower's ``SCAN`` of ``scene``, by a new openid."""
    return scan_event(ACCOUNT_ID, new_openid(), scene)


def text() -> dict[str, str | int]:
    """A text message from a new openid that answers no login (acknowledged ``success``)."""
    return text_message(ACCOUNT_ID, new_openid(), "你好")


async def post(connection: HttpConnection, message: dict[str, str | int]) -> Response:
    """Post ``message`` as WeChat does: signed afresh with the emulator's Token (the server
    refuses a signature it has seen), as ``text/xml``.

    Raises:
        ConnectionError, TimeoutError: as ``HttpConnection.request``.
    """
    query, body = push_request(message, EMULATOR_TOKEN, None, "plaintext")
    return await connection.request(
        "POST",
        f"{CALLBACK_PATH}?{urlencode(query)}",
        headers={"Content-Type": "text/xml", "User-Agent": "Mozilla/4.0"},
        body=body,
    )
