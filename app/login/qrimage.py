"""Render the text of a QR code (WeChat's ``url``) as an image, locally, once per url."""

import functools

import segno

#: Images kept per process. A QR code's ``url`` never changes for its ticket, so a reload or a
#: second tab (which get the browser's live attempt back) is answered from here; an image is
#: 2-6 KB, so a full cache holds a few MB.
RENDERED_KEPT = 1024


@functools.lru_cache(maxsize=RENDERED_KEPT)
def qr_data_uri(text: str) -> str:
    """Render ``text`` as an SVG QR code (error correction M), once per process while it stays
    among the ``RENDERED_KEPT`` most recently asked for.

    Args:
        text: what the code encodes (the ``url`` from ``qrcode/create``).

    Returns:
        What ``svg_data_uri`` makes of it.

    Raises:
        segno.DataOverflowError: ``text`` is too long for any QR code (over 2,331 bytes).
    """
    # boost_error=False: level M as asked, where segno would otherwise raise the level as far as
    # the same size allows.
    return svg_data_uri(segno.make_qr(text, error="m", boost_error=False))


def svg_data_uri(code: segno.QRCode) -> str:
    """Draw an encoded QR code as an SVG with a 2-module border.

    Args:
        code: the encoded symbol.

    Returns:
        A ``data:image/svg+xml,...`` URI (the SVG percent-encoded) for an ``<img src>``; the
        SVG has a ``viewBox`` and no size, so the page's CSS sizes it.
    """
    return code.svg_data_uri(
        border=2,
        omitsize=True,
        svgclass=None,
        lineclass=None,
        encode_minimal=True,
        omit_charset=True,
    )
