"""Event forwarding: pass the messages that are not about logging in to the account's other
handler (a bot, a CMS) and relay its passive reply.

An official account has one callback URL. Put in front of an account that already has a handler,
the login takes its scans and hands everything else on: the original body (still encrypted in
safe and compatible mode), signed afresh as WeChat signs it but with the upstream's own Token
(``WECHAT_FORWARD_TOKEN``). WeChat's signature does not cover the body: signed with the
account's Token, any query the upstream received, logged or leaked would open our callback.
An encrypted reply is passed back with its ``MsgSignature`` made again with the account's
Token, the one WeChat checks it with. WeChat waits 5 s for a reply, so an upstream that is
slow, down, or answers something that is not a reply is acknowledged with ``success`` instead.

Doc followed (the callback the upstream expects):
https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Access_Overview.html
"""

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import requests

from ..metrics import FORWARDED
from .errors import MalformedMessageError
from .messages import is_timestamp, parse_fields, to_xml
from .signature import sign, signed_query

log = logging.getLogger(__name__)

#: Query arguments WeChat sends that are passed on unchanged (the signatures are made afresh).
PASSED_ARGS = ("openid", "encrypt_type")

#: Largest upstream reply relayed, in bytes (WeChat's passive replies are a few KB at most).
MAX_REPLY_BYTES = 64 * 1024


class Forwarder:
    """Posts callback messages to an upstream handler and returns its reply.

    Args:
        url: the upstream's callback URL (``WECHAT_FORWARD_URL``).
        forward_token: the upstream's own Token (``WECHAT_FORWARD_TOKEN``): what it receives
            is signed with it.
        token: the account's Token (``WECHAT_TOKEN``): an encrypted reply relayed to WeChat is
            signed with it.
        session: the HTTP session to post with.
        timeout: the most the whole exchange may take, in seconds; keep it under WeChat's 5 s
            less our own work.
        clock: returns the time in epoch seconds (the fresh ``timestamp``).
        executor: runs the posts, so that a slow upstream can be abandoned at the deadline
            (default: 16 threads).
    """

    def __init__(
        self,
        url: str,
        forward_token: str,
        token: str,
        *,
        session: requests.Session | None = None,
        timeout: float = 4.0,
        clock: Callable[[], float] = time.time,
        executor: Executor | None = None,
    ) -> None:
        self.url = url
        self._forward_token = forward_token
        self._token = token
        self._session = session or requests.Session()
        self._timeout = timeout
        self._clock = clock
        self._executor = executor or ThreadPoolExecutor(16, thread_name_prefix="forward")

    def forward(self, body: bytes, args: Mapping[str, str]) -> bytes | None:
        """Pass one message on and return the upstream's passive reply.

        Args:
            body: the callback body as WeChat sent it (the encrypted envelope in safe mode).
            args: WeChat's query arguments; ``encrypt_type`` and ``openid`` are passed on.

        Returns:
            The upstream's reply XML, to be relayed to WeChat as it is; None to acknowledge
            with ``success``: the upstream said nothing (empty or ``success``), failed, or
            did not answer within ``timeout``. Never raises for the upstream's failures.
        """
        deadline = time.monotonic() + self._timeout
        query = self._signed_query(body, args)
        future = self._executor.submit(self._post, body, query, deadline)
        try:
            return future.result(timeout=max(deadline - time.monotonic(), 0))
        except FutureTimeout:
            FORWARDED.labels("timeout").inc()
            log.warning("forwarded message unanswered after %.1f s; acknowledged", self._timeout)
            return None

    def _signed_query(self, body: bytes, args: Mapping[str, str]) -> dict[str, str]:
        # The envelope was checked and decrypted before we got here: it parses.
        encrypt = parse_fields(body).get("Encrypt") if args.get("encrypt_type") == "aes" else None
        query = signed_query(self._forward_token, encrypt, now=self._clock())
        query.update((name, args[name]) for name in PASSED_ARGS if name in args)
        return query

    def _signed_for_wechat(self, envelope: dict[str, str]) -> bytes:
        """The upstream's encrypted reply envelope, its ``MsgSignature`` made with the
        account's Token over the same ``Encrypt``, ``TimeStamp`` and ``Nonce``."""
        timestamp, nonce = envelope.get("TimeStamp", ""), envelope.get("Nonce", "")
        encrypt = envelope["Encrypt"]
        return to_xml(
            {
                "Encrypt": encrypt,
                "MsgSignature": sign(self._token, timestamp, nonce, encrypt),
                "TimeStamp": int(timestamp) if is_timestamp(timestamp) else timestamp,
                "Nonce": nonce,
            }
        )

    def _post(self, body: bytes, query: dict[str, str], deadline: float) -> bytes | None:
        left = deadline - time.monotonic()
        if left <= 0:  # waited too long for a free thread: WeChat has its answer already
            return None
        try:
            with self._session.post(
                self.url,
                params=query,
                data=body,
                headers={"Content-Type": "text/xml"},
                timeout=(min(left, 2.0), left),
                stream=True,
            ) as response:
                reply = response.raw.read(MAX_REPLY_BYTES + 1, decode_content=True)
                status = response.status_code
        except requests.RequestException as exc:
            FORWARDED.labels("failed").inc()
            log.warning("forwarding failed (%s); acknowledged", type(exc).__name__)
            return None
        return self._relayable(status, reply)

    def _relayable(self, status: int, reply: bytes) -> bytes | None:
        stripped = reply.strip()
        if status == 200 and stripped in (b"", b"success"):
            FORWARDED.labels("acknowledged").inc()
            return None
        if status == 200 and len(reply) <= MAX_REPLY_BYTES:
            try:
                fields = parse_fields(stripped)
            except MalformedMessageError:
                pass
            else:
                FORWARDED.labels("relayed").inc()
                return self._signed_for_wechat(fields) if "Encrypt" in fields else stripped
        # Relaying an error page would make WeChat tell the user "该公众号暂时无法提供服务".
        FORWARDED.labels("failed").inc()
        log.warning("forwarding answered HTTP %s with no usable reply; acknowledged", status)
        return None
