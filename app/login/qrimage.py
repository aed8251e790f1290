"""Render the text of a QR code (WeChat's ``url``) as an image, locally."""

import base64

import qrcode
import qrcode.image.svg


def qr_data_uri(text: str) -> str:
    """Render ``text`` as an SVG QR code.

    Args:
        text: what the code encodes (the ``url`` from ``qrcode/create``).

    Returns:
        A ``data:image/svg+xml;base64,...`` URI for an ``<img src>``.
    """
    image = qrcode.make(
        text,
        image_factory=qrcode.image.svg.SvgPathImage,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        border=2,
    )
    return "data:image/svg+xml;base64," + base64.b64encode(image.to_string()).decode("ascii")
