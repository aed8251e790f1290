"""The QR code we serve is what a scanner reads: the API's image, rasterised as a browser would
show it and decoded by zbar (Debian's ``zbar-tools``), gives back the QR code's url, at error
correction level M. And each QR code is rendered once.

``rsvg-convert`` (Debian's ``librsvg2-bin``) rasterises the SVG outside a browser; CI installs
both programs, so a missing one fails, never skips.
"""

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
import zxingcpp
from playwright.sync_api import expect

from app.login.qrimage import qr_data_uri
from tests.test_api import start_attempt

#: How the app's images begin: an SVG, percent-encoded.
SVG_DATA_URI = "data:image/svg+xml,"
#: Urls of WeChat's form (the emulator's is the API test's), and a long one: a large symbol
#: (version 17, 85 modules a side).
URLS = [
    "http://weixin.qq.com/q/02Uh_NljThcGi10000g07t",
    "https://example.com/login?" + "scene=1722249600000-0123456789abcdef01234567&" * 12,
]


def rasterised(data_uri: str, tmp_path: Path) -> Path:
    """The SVG of ``data_uri`` drawn 600 pixels wide, black on white: a PNG file."""
    assert data_uri.startswith(SVG_DATA_URI)
    png = tmp_path / "qr.png"
    subprocess.run(
        ["rsvg-convert", "--width", "600", "--background-color", "white", "--output", png],
        input=unquote(data_uri.removeprefix(SVG_DATA_URI)).encode(),
        check=True,
        timeout=30,
    )
    return png


def decoded(png: Path) -> str:
    """What zbar reads in the picture ``png``: the text of its one QR code.

    zbarimg exits 4 when it finds no symbol, which fails the test.
    """
    scanned = subprocess.run(
        ["zbarimg", "--raw", "--quiet", "-Sdisable", "-Sqrcode.enable", png],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return scanned.stdout.decode().removesuffix("\n")


def modules(data_uri: str) -> memoryview:
    """The modules of the SVG of ``data_uri``, its border included: one byte each, 0 for dark
    and 255 for light, in rows as wide as its ``viewBox``. The SVG's path draws each run of
    dark modules as a line along the middle of its row: ``M<x> <y>.5h<length>``."""
    svg = unquote(data_uri.removeprefix(SVG_DATA_URI))
    side = int(re.search(r"viewBox='0 0 (\d+) \1'", svg)[1])
    pixels = bytearray(b"\xff" * side * side)
    for x, y, length in re.findall(r"M(\d+) (\d+)\.5h(\d+)", svg):
        start = int(y) * side + int(x)
        pixels[start : start + int(length)] = bytes(int(length))
    return memoryview(bytes(pixels)).cast("B", (side, side))


def test_the_served_image_scans_as_the_qrcode_url(client, tmp_path):
    answer = start_attempt(client)

    assert decoded(rasterised(answer["image"], tmp_path)) == answer["qrcode"]


@pytest.mark.parametrize("url", URLS)
def test_any_url_scans_as_itself(url, tmp_path):
    assert decoded(rasterised(qr_data_uri(url), tmp_path)) == url


@pytest.mark.parametrize("url", URLS)
def test_the_code_corrects_errors_at_level_m(url):
    # zbar does not tell the level: zxing-cpp's reader reads it from the format information.
    symbol = zxingcpp.read_barcode(modules(qr_data_uri(url)))

    assert (symbol.text, symbol.extra["ECLevel"]) == (url, "M")


def test_a_reload_gets_the_image_rendered_the_first_time(client):
    qr_data_uri.cache_clear()
    first = start_attempt(client)
    again = start_attempt(client)

    assert again["scene"] == first["scene"]
    assert again["image"] == first["image"]
    assert (qr_data_uri.cache_info().misses, qr_data_uri.cache_info().hits) == (1, 1)


def test_the_page_shows_a_qr_code_that_scans_as_its_url(live_server, new_page, tmp_path):
    page = new_page()
    with page.expect_response("**/api/login/qrcode") as answer:
        page.goto(live_server + "/")
    url = answer.value.json()["qrcode"]
    image = page.locator("#qr-image")
    expect(image).to_have_attribute("data-scene", re.compile(r"^\d{13}-"))
    page.wait_for_function("document.querySelector('#qr-image').complete")
    png = tmp_path / "page-qr.png"
    # What a phone's camera sees: the image as the page lays it out (240 CSS pixels).
    image.screenshot(path=png, animations="disabled")

    assert decoded(png) == url
