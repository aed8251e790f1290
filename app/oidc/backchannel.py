"""Back-channel logout: tell a client, server to server, that a session at the OP has ended.

Follows OpenID Connect Back-Channel Logout 1.0
(https://openid.net/specs/openid-connect-backchannel-1_0.html):

- 2.4 Logout Token: ``iss``, ``aud``, ``iat``, ``exp``, ``jti``, ``sub``, ``sid`` and
  ``events`` naming ``LOGOUT_EVENT``; never a ``nonce`` (its absence is what keeps a logout
  token from passing as an ID token). Signing, and the explicit ``typ: logout+jwt`` header
  the spec recommends against cross-JWT confusion, belong to the ``sign`` callable: this
  module writes no JWT itself.
- 2.5 Back-Channel Logout Request: a POST of the form field ``logout_token``, as
  ``application/x-www-form-urlencoded``, to the client's ``backchannel_logout_uri``.
- 2.8 Back-Channel Logout Response: 200 is success; 204 counts too, since some frameworks turn
  an empty 200 into one (OpenID Connect WG issue 1486); 400 means the client refused the token.

Posts run on an executor, so that whatever ended the session (a sign-out, WeChat's callback
with its 5 s) never waits for a client. A client that is down or busy (5xx, 429, no answer) is
tried again after each of ``retry_delays``; one that refuses the token (another 4xx) would
refuse it again, so it is not. Every attempt carries a freshly signed token: one sent a minute
after the first must not arrive expired.
"""

import enum
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from urllib.parse import urlsplit

import requests

from ..metrics import LOGOUT_TOKENS

log = logging.getLogger(__name__)

#: The event whose presence makes a JWT a logout token (section 2.4).
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"

#: Life of a logout token, in seconds: enough for one post, and a captured token is soon
#: worthless (each retry signs a new one).
LOGOUT_TOKEN_SECONDS = 120

#: Time allowed to connect, and then between bytes of the answer, in seconds, per attempt.
TIMEOUT_SECONDS = 5

#: What the client answers when it has signed the user out (section 2.8).
SUCCESS_STATUSES = frozenset({200, 204})

#: Threads of the default executor. Each delivery holds one through its retries (up to about
#: three minutes for a client that never answers); further deliveries queue behind them.
DEFAULT_THREADS = 16


class _Verdict(enum.Enum):
    """What one attempt came to."""

    SENT = "sent"
    RETRY = "retry"
    REFUSED = "refused"


class BackchannelSender:
    """Signs and posts logout tokens, off the request's path, retried with backoff.

    Args:
        issuer: our issuer identifier, exactly as in discovery (the ``iss`` claim).
        sign: makes the compact JWS of a claims dict, with the header (``typ: logout+jwt``,
            ``kid``) and the current signing key: ``sign(claims) -> str``.
        session: the HTTP session to post with.
        executor: runs the deliveries (default: ``DEFAULT_THREADS`` threads of its own).
        clock: returns the time in epoch seconds (``iat``).
        retry_delays: the wait before each retry, in seconds; their number is the number of
            retries after the first attempt.
        sleep: waits a number of seconds (tests pass one that only records).
    """

    def __init__(
        self,
        *,
        issuer: str,
        sign: Callable[[dict], str],
        session: requests.Session,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
        retry_delays: tuple[float, ...] = (1, 2, 5, 15, 30, 60),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._issuer = issuer
        self._sign = sign
        self._session = session
        self._executor = executor or ThreadPoolExecutor(
            DEFAULT_THREADS, thread_name_prefix="backchannel"
        )
        self._clock = clock
        self._retry_delays = retry_delays
        self._sleep = sleep

    def send(self, *, client_id: str, backchannel_logout_uri: str, sub: str, sid: str) -> Future:
        """Deliver a logout token for session ``sid`` to one client, in the background.

        Returns at once; the outcome is logged and counted
        (``wechat_login_oidc_logout_tokens_total``), never the token.

        Args:
            client_id: the client to tell (the ``aud`` claim).
            backchannel_logout_uri: where it takes logout tokens, as registered.
            sub: the user signed out (the ``sub`` claim).
            sid: the session that ended (the ``sid`` claim).

        Returns:
            A ``Future`` of a bool: True once the client answered 200 or 204, False if it
            refused the token or every retry failed. It never holds an exception.

        Raises:
            RuntimeError: the executor was shut down.
        """
        return self._executor.submit(self._deliver, client_id, backchannel_logout_uri, sub, sid)

    def logout_claims(self, *, client_id: str, sub: str, sid: str) -> dict:
        """The claims of a fresh logout token (section 2.4): a new ``jti``, ``iat`` now.

        Returns:
            ``{iss, aud, iat, exp, jti, sub, sid, events}``, times in epoch seconds.
        """
        iat = int(self._clock())
        return {
            "iss": self._issuer,
            "aud": client_id,
            "iat": iat,
            "exp": iat + LOGOUT_TOKEN_SECONDS,
            "jti": secrets.token_urlsafe(16),
            "sub": sub,
            "sid": sid,
            "events": {LOGOUT_EVENT: {}},
        }

    def _deliver(self, client_id: str, uri: str, sub: str, sid: str) -> bool:
        # Runs on the executor, where nobody reads an exception: each ends as a log line.
        host = urlsplit(uri).netloc
        try:
            for attempt, delay in enumerate((*self._retry_delays, None), start=1):
                token = self._sign(self.logout_claims(client_id=client_id, sub=sub, sid=sid))
                verdict, detail = self._post(uri, token)
                if verdict is _Verdict.SENT:
                    LOGOUT_TOKENS.labels(outcome="sent").inc()
                    log.info(
                        "logout token for session %s delivered to client %s at %s (attempt %d)",
                        sid,
                        client_id,
                        host,
                        attempt,
                    )
                    return True
                if verdict is _Verdict.REFUSED or delay is None:
                    break
                LOGOUT_TOKENS.labels(outcome="retried").inc()
                log.warning(
                    "logout token for session %s not delivered to client %s at %s (%s, attempt "
                    "%d); retrying in %g s",
                    sid,
                    client_id,
                    host,
                    detail,
                    attempt,
                    delay,
                )
                self._sleep(delay)
        except Exception:
            LOGOUT_TOKENS.labels(outcome="failed").inc()
            log.exception("logout token for session %s to client %s failed", sid, client_id)
            return False
        LOGOUT_TOKENS.labels(outcome="failed").inc()
        log.error(
            "logout token for session %s not delivered to client %s at %s (%s, attempt %d); "
            "giving up",
            sid,
            client_id,
            host,
            detail,
            attempt,
        )
        return False

    def _post(self, uri: str, token: str) -> tuple[_Verdict, str]:
        """Post one logout token (section 2.5) and judge the answer (section 2.8).

        Returns:
            The verdict, and what happened in a few words for the log (never the token).
        """
        try:
            # No redirects: one would carry the token to a URL nobody registered (and requests
            # would turn the POST into a GET on a 302). The body is never read.
            with self._session.post(
                uri,
                data={"logout_token": token},
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=TIMEOUT_SECONDS,
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
        except requests.RequestException as exc:
            return _Verdict.RETRY, type(exc).__name__
        if status in SUCCESS_STATUSES:
            return _Verdict.SENT, f"HTTP {status}"
        if status >= 500 or status == 429:
            return _Verdict.RETRY, f"HTTP {status}"
        return _Verdict.REFUSED, f"HTTP {status}"
