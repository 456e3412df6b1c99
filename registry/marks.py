"""QR accreditation marks of registered certificates: their claims, re-derived
from the log, and their images (PNG, SVG).

A certificate's mark is signed afresh from the registry's state whenever it is
asked for: certificate id, document digest, the index of the entry that created
it (its ``certificate.issue`` or ``certificate.amend``) and that entry's
``logged_at`` in whole seconds. Ed25519 is deterministic, so a certificate has
exactly one mark, whoever asks and whenever.

Images: ``qrcode`` builds the symbol (error correction M, the whole upper-case
URL as one alphanumeric segment); the pixels and the SVG path are drawn here, so
the printed size is exact. ``size_mm`` is the side of the square symbol with its
4-module quiet zone; a caption (the certificate id) goes in a band below it.

- SVG: width and height in millimetres, one module is ``size_mm / modules`` mm
  exactly; the caption is SVG text (any script the viewer's fonts have).
- PNG: ``size_mm`` at ``dpi`` gives the side in pixels; a module must be a whole
  number of pixels to scan reliably, so it is the largest that fits and the rest
  is extra quiet zone. The PNG records ``dpi``, so it prints at ``size_mm``. The
  caption uses Pillow's built-in font (Latin script; other characters may not
  render; the SVG caption has no such limit).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from html import escape
from typing import Literal

import qrcode
import qrcode.constants
import qrcode.exceptions
import qrcode.util
from PIL import Image, ImageDraw, ImageFont

from registry.errors import NotFoundError
from verifier import entry, mark
from verifier.errors import MalformedError, TooLargeError
from verifier.trust import Certificate, TrustState

ImageFormat = Literal["png", "svg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}
QUIET_ZONE = 4  # modules (ISO/IEC 18004 §7.3.8)
DEFAULT_SIZE_MM = 20.0
DEFAULT_DPI = 300
MIN_SIZE_MM, MAX_SIZE_MM = 5.0, 500.0
MIN_DPI, MAX_DPI = 72, 2400
MAX_PIXELS = 4096
"""Side of a PNG at most (4096² one-bit pixels are 2 MB before compression)."""
_ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
_MM_PER_INCH = 25.4
CAPTION_BAND_MM = 3.0  # height of the caption band under the symbol
CAPTION_FONT_MM = 2.0  # caption text height at most (shrunk to fit the width)


def claims_of(certificate: Certificate) -> mark.MarkClaims:
    """The mark claims of a certificate of the trust state."""
    created = certificate.events[0]  # the issue (or amend) entry that created it
    return mark_claims(
        certificate.certificate_id, certificate.document_sha256, created.index, created.logged_at
    )


def mark_claims(
    certificate_id: str, document_sha256_hex: str, index: int, logged_at: str
) -> mark.MarkClaims:
    """Mark claims from a certificate's creating entry (``logged_at`` as logged)."""
    return mark.MarkClaims(
        certificate_id=certificate_id,
        document_sha256=bytes.fromhex(document_sha256_hex),
        index=index,
        issued_at=int(entry.parse_time(logged_at).timestamp()),
    )


def claims_for(state: TrustState, certificate_id: str) -> mark.MarkClaims:
    """The mark claims of ``certificate_id``; NotFoundError if the log has none."""
    certificate = state.certificate(certificate_id)
    if certificate is None or not certificate.events:
        raise NotFoundError(f"no certificate {certificate_id!r} in the log")
    return claims_of(certificate)


# --- images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Symbol:
    """A QR symbol of a mark URL: its version and its modules (quiet zone included)."""

    url: str
    version: int
    matrix: tuple[tuple[bool, ...], ...]

    @property
    def modules(self) -> int:
        """Side in modules, quiet zone included."""
        return len(self.matrix)


@functools.lru_cache(maxsize=256)
def symbol(url: str) -> Symbol:
    """The QR symbol of ``url`` at error correction M, in alphanumeric mode when
    every character allows it (a mark URL from :func:`verifier.mark.mark_url` does).
    Cached: qrcode takes about 0.1 s to choose a mask, and a certificate's mark URL
    (so its symbol) never changes; 256 symbols are about 10 MB."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=QUIET_ZONE)
    if url and set(url) <= _ALPHANUMERIC:
        code.add_data(qrcode.util.QRData(url, mode=qrcode.util.MODE_ALPHA_NUM))
    else:
        code.add_data(url)
    try:
        code.make(fit=True)
    except (ValueError, qrcode.exceptions.DataOverflowError):
        raise TooLargeError(f"{len(url)} characters do not fit in a QR code") from None
    matrix = tuple(tuple(bool(cell) for cell in row) for row in code.get_matrix())
    return Symbol(url, code.version, matrix)


def render(
    url: str,
    fmt: ImageFormat,
    *,
    size_mm: float = DEFAULT_SIZE_MM,
    dpi: int = DEFAULT_DPI,
    caption: str | None = None,
) -> bytes:
    """The image of the mark URL ``url`` as PNG or SVG bytes."""
    if not MIN_SIZE_MM <= size_mm <= MAX_SIZE_MM:
        raise MalformedError(f"a mark is {MIN_SIZE_MM:g} to {MAX_SIZE_MM:g} mm wide")
    if caption is not None and any(ord(c) < 0x20 or 0xD800 <= ord(c) < 0xE000 for c in caption):
        # Not drawable, and not even allowed in XML text.
        raise MalformedError("a mark caption has no control characters")
    if fmt == "svg":
        return render_svg(symbol(url), size_mm, caption)
    if fmt == "png":
        if not MIN_DPI <= dpi <= MAX_DPI:
            raise MalformedError(f"a mark is rendered at {MIN_DPI} to {MAX_DPI} dpi")
        return render_png(symbol(url), size_mm, dpi, caption)
    raise MalformedError(f"a mark image is png or svg, not {fmt!r}")


def render_svg(sym: Symbol, size_mm: float, caption: str | None = None) -> bytes:
    """SVG in module units, sized in millimetres; dark modules as one path."""
    n = sym.modules
    # One rectangle per horizontal run of dark modules: small, and exact at any zoom.
    runs: list[str] = []
    for y, row in enumerate(sym.matrix):
        x = 0
        while x < n:
            if row[x]:
                start = x
                while x < n and row[x]:
                    x += 1
                runs.append(f"M{start} {y}h{x - start}v1h{start - x}z")
            else:
                x += 1
    per_mm = n / size_mm  # modules per millimetre
    band = 0.0 if caption is None else CAPTION_BAND_MM * per_mm
    height_mm = size_mm + (0.0 if caption is None else CAPTION_BAND_MM)
    text = ""
    if caption is not None:
        # Monospace glyphs are about 0.6 em wide: shrink a long id to the width.
        font = min(CAPTION_FONT_MM * per_mm, 0.95 * n / (0.6 * max(len(caption), 1)))
        text = (
            f'<text x="{n / 2:g}" y="{n + band / 2:g}" font-family="monospace" '
            f'font-size="{font:.3f}" text-anchor="middle" '
            f'dominant-baseline="middle">{escape(caption)}</text>'
        )
    svg = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
        f'width="{size_mm:g}mm" height="{height_mm:g}mm" viewBox="0 0 {n} {n + band:g}" '
        'shape-rendering="crispEdges">'
        f"<title>{escape(sym.url)}</title>"
        f'<rect width="{n}" height="{n + band:g}" fill="#fff"/>'
        f'<path fill="#000" d="{"".join(runs)}"/>'
        f"{text}</svg>\n"
    )
    return svg.encode("utf-8")


def render_png(sym: Symbol, size_mm: float, dpi: int, caption: str | None = None) -> bytes:
    """A one-bit PNG ``size_mm`` wide at ``dpi``, with whole-pixel modules."""
    side = round(size_mm / _MM_PER_INCH * dpi)
    if side > MAX_PIXELS:
        raise TooLargeError(f"{size_mm:g} mm at {dpi} dpi is over {MAX_PIXELS} pixels wide")
    module = side // sym.modules
    if module < 1:
        raise MalformedError(
            f"{size_mm:g} mm at {dpi} dpi is {side} pixels; this code needs at least "
            f"{sym.modules} (one per module): use a larger size or dpi"
        )
    offset = (side - module * sym.modules) // 2  # the spare pixels widen the quiet zone
    band = 0 if caption is None else max(12, round(CAPTION_BAND_MM / _MM_PER_INCH * dpi))
    image = Image.new("1", (side, side + band), 1)
    draw = ImageDraw.Draw(image)
    for y, row in enumerate(sym.matrix):
        for x, dark in enumerate(row):
            if dark:
                left, top = offset + x * module, offset + y * module
                draw.rectangle((left, top, left + module - 1, top + module - 1), fill=0)
    if caption is not None:
        _draw_caption(draw, caption, side, band)
    out = io.BytesIO()
    image.save(out, format="PNG", dpi=(dpi, dpi), optimize=True)
    return out.getvalue()


def _draw_caption(draw: ImageDraw.ImageDraw, caption: str, width: int, band: int) -> None:
    """The caption centred in the band below the symbol, shrunk to fit its width."""
    size = max(8, round(band * CAPTION_FONT_MM / CAPTION_BAND_MM))
    while True:
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        if right - left <= width * 0.95 or size <= 6:
            break
        size -= 1
    x = (width - (right - left)) / 2 - left
    y = width + (band - (bottom - top)) / 2 - top
    draw.text((x, y), caption, font=font, fill=0)
