"""A ``requests`` adapter that hands API calls to the emulator inside this process.

The client keeps building real URLs from ``WECHAT_API_BASE`` and sending real HTTP requests;
only the last hop is a WSGI call instead of a socket, so the emulator needs no address of its
own and works under any server, even a single-threaded one.
"""

from io import BytesIO
from urllib.parse import urlsplit

import requests
from flask import Flask, has_request_context, request
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse
from werkzeug.test import Client


class EmulatorTransport(HTTPAdapter):
    """Serve every request sent through it with ``app``'s emulator routes.

    Args:
        app: the Flask app the emulator blueprint is mounted on.
    """

    def __init__(self, app: Flask) -> None:
        super().__init__()
        self._client = Client(app)

    def send(self, request_: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        """Answer ``request_`` from the emulator; ``kwargs`` (timeout, ...) have no use here."""
        url = urlsplit(request_.url)
        # Links the emulator makes (the QR's scan address) should name the host the person
        # used to reach us, not the emulator's placeholder host.
        base_url = request.host_url if has_request_context() else "http://localhost/"
        answer = self._client.open(
            url.path,
            base_url=base_url,
            method=request_.method,
            query_string=url.query,
            headers=dict(request_.headers),
            data=request_.body,
            # WeChat sees the caller's address (and names it in 40164): here, this host.
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        raw = HTTPResponse(
            body=BytesIO(answer.get_data()),
            headers=dict(answer.headers),
            status=answer.status_code,
            preload_content=False,
        )
        return self.build_response(request_, raw)
