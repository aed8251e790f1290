"""deploy/nginx.conf in the real nginx, in front of the production gunicorn.

The committed file runs as written but for the substitutions named in ``site_config``: listen
ports (free ones, on loopback), the upstream (the test's gunicorn), the certificate paths (a
self-signed certificate made here) and the server name. A minimal main configuration around it
keeps nginx's pid, logs and temp files in the test's directory and runs it as the current user;
nothing under /etc/nginx, and neither port 80 nor 443, is touched. nginx is Debian's
(``apt-get install nginx``, which CI does): a missing one fails the tests, never skips them.
"""

import datetime
import grp
import http.client
import json
import os
import pwd
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.wechat.delivery import push_request, scan_event
from config import Config
from tests.conftest import ACCOUNT_ID, ROOT, TOKEN, free_port, signed_query, ws_frames

NGINX = Path("/usr/sbin/nginx")
CONFIG = ROOT / "deploy" / "nginx.conf"
#: The name the test's nginx serves, in place of login.example.com, and its certificate's name.
SERVER_NAME = "localhost"

#: Around the site configuration: everything nginx writes goes under {directory}.
MAIN_CONFIG = """\
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
{user}
events {{
    worker_connections 128;
}}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/site.conf;
}}
"""

SIGNED_IN = "登录成功"
#: What the app is told to call the site (SITE_NAME): the scanner reads this, whatever Host says.
SITE_NAME = "测试站点"


@dataclass
class Proxy:
    """The running nginx and the app behind it."""

    #: nginx's two servers: plain http and https, on loopback.
    http_port: int
    https_port: int
    #: The gunicorn behind it, reached directly: ``http://127.0.0.1:<port>``.
    app: str
    #: The self-signed certificate nginx serves, to verify it with (``verify=``, ``ca_certs``).
    ca: str

    @property
    def host(self) -> str:
        """The site as the browser names it (and the app, through X-Forwarded-Host, too)."""
        return f"{SERVER_NAME}:{self.https_port}"

    @property
    def https(self) -> str:
        return f"https://{self.host}"

    @property
    def http(self) -> str:
        return f"http://{SERVER_NAME}:{self.http_port}"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a certificate for ``SERVER_NAME`` signed by its own key; returns the paths of the
    certificate and of the key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        # Its own CA, with the extensions strict verifiers (VERIFY_X509_STRICT) ask for.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "cert.pem", directory / "key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path


def site_config(
    *, http_port: int, https_port: int, upstream: str, certificate: Path, key: Path
) -> str:
    """deploy/nginx.conf with only these substitutions: each must be found, so that a renamed
    line fails here instead of leaving the production value in the test."""
    substitutions = {
        "listen 80": f"listen 127.0.0.1:{http_port}",
        "listen 443": f"listen 127.0.0.1:{https_port}",
        "server 127.0.0.1:8000;": f"server {upstream};",
        "/etc/ssl/certs/wechat-login.pem": str(certificate),
        "/etc/ssl/private/wechat-login.key": str(key),
        "login.example.com": SERVER_NAME,
    }
    text = CONFIG.read_text()
    for old, new in substitutions.items():
        assert old in text, f"{CONFIG} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def wait_listening(process: subprocess.Popen, ports: list[int], deadline: float) -> None:
    """Wait until something accepts on every port of ``ports``, or fail if nginx exits."""
    for port in ports:
        while True:
            assert process.poll() is None, f"nginx exited with {process.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"nginx does not listen on {port}"
                time.sleep(0.05)


@pytest.fixture
def proxy(server_process, tmp_path: Path) -> Iterator[Proxy]:
    """The production gunicorn (``TRUSTED_PROXIES=1``) behind the real nginx running
    deploy/nginx.conf; nginx is stopped at the end and its logs printed (shown on failure)."""
    assert NGINX.is_file(), f"{NGINX} is missing: apt-get install nginx"
    app = server_process(production=True, TRUSTED_PROXIES="1", SITE_NAME=SITE_NAME)
    directory = tmp_path / "nginx"
    directory.mkdir()
    certificate, key = self_signed_certificate(directory)
    http_port, https_port = free_port(), free_port()
    (directory / "site.conf").write_text(
        site_config(
            http_port=http_port,
            https_port=https_port,
            upstream=app.removeprefix("http://"),
            certificate=certificate,
            key=key,
        )
    )
    # As root, nginx's workers would otherwise become "nobody", locked out of tmp_path.
    user = (
        f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
        if os.geteuid() == 0
        else ""
    )
    main_config = directory / "nginx.conf"
    main_config.write_text(MAIN_CONFIG.format(directory=directory, user=user))
    output = directory / "nginx.out"
    with output.open("wb") as output_file:
        # -e: the log nginx writes before it has read error_log, here rather than in /var/log.
        process = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(main_config)]
            + ["-e", str(directory / "error.log")],
            stdout=output_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_listening(process, [http_port, https_port], time.monotonic() + 10)
        yield Proxy(http_port=http_port, https_port=https_port, app=app, ca=str(certificate))
    finally:
        process.terminate()  # fast shutdown: open websockets are not waited for
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        for log in (output, directory / "error.log", directory / "access.log"):
            if log.exists():
                print(f"--- {log.name} of nginx ---\n{log.read_text(errors='replace')}")


def post_scan(base: str, scene: str, ca: str, **headers: str) -> requests.Response:
    """Post WeChat's signed SCAN event for ``scene`` to the callback at ``base``."""
    query, body = push_request(
        scan_event(ACCOUNT_ID, "oNginx0000000000000000000001", scene), TOKEN, None, "plaintext"
    )
    return requests.post(
        base + "/wechat/callback",
        params=query,
        data=body,
        headers=headers,
        verify=ca,
        timeout=5,
    )


def open_login_socket(proxy: Proxy, browser: requests.Session, url: str) -> websocket.WebSocket:
    """Open the page's login socket at ``url`` with ``browser``'s cookies, through nginx."""
    cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    return websocket.create_connection(
        url,
        header=[f"Cookie: {cookie}"],
        origin=proxy.https,
        sslopt={"ca_certs": proxy.ca},
        timeout=10,
    )


@pytest.mark.parametrize("callback_scheme", ["https", "http"])
def test_login_through_nginx(proxy: Proxy, callback_scheme: str):
    with requests.Session() as browser:
        page = browser.get(proxy.https + "/", verify=proxy.ca, timeout=5)
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        # Sent only over https: the app saw the client's scheme, not nginx's plain http.
        assert page.headers["Strict-Transport-Security"]

        created = browser.post(
            proxy.https + "/api/login/qrcode",
            headers={"Origin": proxy.https},
            verify=proxy.ca,
            timeout=5,
        )
        assert created.status_code == 200, created.text
        attempt = created.json()
        assert attempt["ws"] == f"wss://{proxy.host}/ws/login/{attempt['scene']}"

        ws = open_login_socket(proxy, browser, attempt["ws"])
        try:
            assert json.loads(ws.recv())["status"] == "waiting"
            callback_base = proxy.https if callback_scheme == "https" else proxy.http
            scanned = post_scan(callback_base, attempt["scene"], proxy.ca)
            assert scanned.status_code == 200
            assert SIGNED_IN in scanned.text
            frames = ws_frames(ws)  # up to the close frame, checked to be 1000
        finally:
            ws.shutdown()
        assert [frame["status"] for frame in frames] == ["confirmed"]

        redeemed = browser.post(
            proxy.https + "/api/login/redeem",
            json={"code": frames[0]["code"]},
            headers={"Origin": proxy.https},
            verify=proxy.ca,
            timeout=5,
        )
        assert redeemed.status_code == 200, redeemed.text
        me = browser.get(proxy.https + "/api/me", verify=proxy.ca, timeout=5)
        assert me.json()["openid"] == "oNginx0000000000000000000001"
        # The binding cookie and the session cookie, both marked Secure and __Host- named.
        secure = {cookie.name: cookie.secure for cookie in browser.cookies}
        assert secure == {"__Host-wxlogin_browser": True, "__Host-session": True}


def test_forged_forwarding_headers_are_replaced(proxy: Proxy):
    """What a client says in X-Forwarded-* never reaches the app as the last (trusted) value."""
    forged = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "evil.example.com",
    }
    with requests.Session() as browser:
        # Believed, the forged scheme and host would make this a cross-origin POST (403).
        created = browser.post(
            proxy.https + "/api/login/qrcode",
            headers={"Origin": proxy.https, **forged},
            verify=proxy.ca,
            timeout=5,
        )
        assert created.status_code == 200, created.text
        attempt = created.json()
    assert attempt["ws"].startswith(f"wss://{proxy.host}/")
    # The scanner is told the configured site and the address the attempt really came from.
    reply = post_scan(proxy.https, attempt["scene"], proxy.ca, **forged).text
    assert f"{SIGNED_IN}：{SITE_NAME}\n" in reply
    assert "evil.example.com" not in reply
    assert "IP 地址：127.0.0.1\n" in reply
    assert "203.0.113.7" not in reply


def test_metrics_are_refused_by_nginx_and_served_directly(proxy: Proxy):
    direct = requests.get(proxy.app + "/metrics", timeout=5)
    assert direct.status_code == 200
    assert "# HELP" in direct.text
    # Sent as written (http.client, unlike requests, leaves the path alone): the app serves
    # each of these as /metrics.
    for path in ("/metrics", "/metrics?format=text", "//metrics", "/%6Detrics"):
        connection = http.client.HTTPSConnection(
            SERVER_NAME, proxy.https_port, context=ssl.create_default_context(cafile=proxy.ca)
        )
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 404, path
            assert b"# HELP" not in response.read()
        finally:
            connection.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/api/me?next=%2F"),
        ("GET", "/metrics"),
        ("GET", "/ws/login/1-abc"),
        ("POST", "/api/login/qrcode"),
    ],
)
def test_http_redirects_to_https(proxy: Proxy, method: str, path: str):
    response = requests.request(method, proxy.http + path, allow_redirects=False, timeout=5)
    assert response.status_code == 301
    # To https on its default port: the production nginx listens on 443.
    assert response.headers["Location"] == f"https://{SERVER_NAME}{path}"


def test_callback_is_served_on_http(proxy: Proxy):
    """An account configured with an http callback URL still verifies and delivers."""
    verified = requests.get(
        proxy.http + "/wechat/callback",
        params=signed_query(echostr="echo-1234567890"),
        allow_redirects=False,
        timeout=5,
    )
    assert verified.status_code == 200
    assert verified.text == "echo-1234567890"
    # The app's own refusal, not a redirect: the request reached it.
    unsigned = requests.get(
        proxy.http + "/wechat/callback", params={"echostr": "x"}, allow_redirects=False, timeout=5
    )
    assert unsigned.status_code == 403


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_callback_bodies_are_capped_at_the_apps_limit(proxy: Proxy, scheme: str):
    base = proxy.https if scheme == "https" else proxy.http
    limit = 64 * 1024  # MAX_MESSAGE_BYTES in app/wechat/messages.py
    url = base + "/wechat/callback"

    def post(size: int) -> requests.Response:
        return requests.post(
            url, params=signed_query(), data=b"x" * size, verify=proxy.ca, timeout=5
        )

    # The app's largest message passes nginx (and, not being XML, is refused by the app).
    at_limit = post(limit)
    assert at_limit.status_code == 400
    over_limit = post(limit + 1)
    assert over_limit.status_code == 413
    assert "<center>nginx</center>" in over_limit.text  # nginx's page: the app never saw it


@pytest.mark.parametrize("name", ["127.0.0.1", "other.example.com"])
def test_other_host_names_are_refused(proxy: Proxy, name: str):
    """Asked for by address or by another name, nginx answers nothing."""
    with socket.create_connection(("127.0.0.1", proxy.http_port), timeout=5) as connection:
        connection.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        assert connection.recv(1024) == b""  # 444: closed without an answer
    # Not even a certificate: the handshake itself is refused, before any verification (an
    # address is sent as no server name at all).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", proxy.https_port), timeout=5) as connection:
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            context.wrap_socket(connection, server_hostname=name)
    # Our name in the handshake, another in Host: closed without an answer too.
    connection = http.client.HTTPSConnection(
        SERVER_NAME, proxy.https_port, context=ssl.create_default_context(cafile=proxy.ca)
    )
    try:
        connection.request("GET", "/", headers={"Host": name})
        with pytest.raises(http.client.RemoteDisconnected):
            connection.getresponse()
    finally:
        connection.close()


def test_websocket_timeouts_outlast_the_ping():
    """nginx closes a socket that carries nothing for proxy_read_timeout (upstream to nginx) or
    proxy_send_timeout (nginx to upstream): both must exceed the app's ping interval."""
    location = re.search(r"location /ws/ \{(.*?)\}", CONFIG.read_text(), re.DOTALL)
    assert location is not None
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        seconds = re.search(rf"^\s*{directive} (\d+)s;", location.group(1), re.MULTILINE)
        assert seconds is not None, directive
        assert int(seconds.group(1)) > Config.LOGIN_WS_PING_SECONDS
