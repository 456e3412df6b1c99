"""Reading mark texts out of an image: every QR code in a photo or scan, decoded with
zxing-cpp and Pillow, both imported only when an image is read so that importing
:mod:`verifier` (and ``qiverify``) stays light."""

from __future__ import annotations

import io

from verifier.local_input import read_input
from verifier.verdict import EXIT_UNCHECKED, Stop

MAX_IMAGE_PIXELS = 50_000_000
"""A photo of a certificate is far smaller; a larger image is refused before decoding."""


def qr_texts(path: str) -> list[str]:
    """The texts of every QR code in an image file (zxing-cpp, imported only here so
    that importing ``verifier`` stays light)."""
    data = read_input(path)
    try:
        import zxingcpp
        from PIL import Image
    except ImportError:
        raise Stop(
            EXIT_UNCHECKED, "reading a QR image needs zxing-cpp and pillow (pip install them)"
        ) from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise Stop(EXIT_UNCHECKED, f"{path} has more than {MAX_IMAGE_PIXELS} pixels")
            grey = image.convert("L")
    except Stop:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise Stop(
            EXIT_UNCHECKED, f"{path} is not a readable image ({type(exc).__name__})"
        ) from None
    found = zxingcpp.read_barcodes(
        grey, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    )
    return [result.text for result in found]
