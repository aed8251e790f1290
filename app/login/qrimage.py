"""Render the text of a QR code (WeChat's ``url``) as an image, locally, once per url."""

import functools
import re

import zxingcpp

#: Images kept per process. A QR code's ``url`` never changes for its ticket, so a reload or a
#: second tab (which get the browser's live attempt back) is answered from here; an image is
#: 2-6 KB, so a full cache holds a few MB.
RENDERED_KEPT = 1024
#: Light modules drawn around the symbol, on each side.
BORDER_MODULES = 2
#: A run of dark modules in a row of the symbol's bitmap (one byte a module, 0 for dark).
DARK_RUN = re.compile(rb"\x00+")


@functools.lru_cache(maxsize=RENDERED_KEPT)
def qr_data_uri(text: str) -> str:
    """Render ``text`` as an SVG QR code (error correction M), once per process while it stays
    among the ``RENDERED_KEPT`` most recently asked for.

    zxing-cpp encodes with zint, in C: the smallest version that holds ``text`` at level M,
    and the data mask chosen as ISO/IEC 18004:2015 7.8.3.1 says (the penalty of each of the
    8 masks, format information included, the lowest one kept).

    Args:
        text: what the code encodes (the ``url`` from ``qrcode/create``).

    Returns:
        What ``svg_data_uri`` makes of it.

    Raises:
        ValueError: ``text`` is too long for any QR code at level M (over 2,331 bytes).
    """
    # zxingcpp ignores keyword arguments it does not know: ec_level, spelt so, is what sets M.
    symbol = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    return svg_data_uri(symbol)


def svg_data_uri(symbol: zxingcpp.Barcode) -> str:
    """Draw an encoded QR code as an SVG with a ``BORDER_MODULES`` border: a path of one
    horizontal line per run of dark modules.

    Args:
        symbol: the encoded QR code.

    Returns:
        A ``data:image/svg+xml,...`` URI (the SVG percent-encoded) for an ``<img src>``; the
        SVG has a ``viewBox`` and no size, so the page's CSS sizes it.
    """
    bitmap = symbol.to_image(add_quiet_zones=False)
    height, width = bitmap.shape
    pixels = memoryview(bitmap).tobytes()
    lines = []
    for y in range(height):
        row = y * width
        for run in DARK_RUN.finditer(pixels, row, row + width):
            # A 1-unit stroke along the middle of the row covers the run exactly.
            x = run.start() - row + BORDER_MODULES
            lines.append(f"M{x} {y + BORDER_MODULES}.5h{run.end() - run.start()}")
    side = width + 2 * BORDER_MODULES
    # Only "<", ">" and "#" need escaping in this SVG (no "%", no double quote).
    return (
        "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'"
        f" viewBox='0 0 {side} {side}'%3E%3Cpath stroke='%23000' d='{''.join(lines)}'/%3E%3C/svg%3E"
    )
