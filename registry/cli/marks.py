"""``qiledger mark``: a certificate's QR accreditation mark as a PNG or SVG file.

Example::

    qiledger --data-dir ./data mark LAB-1/DCC-2026-0001 --out mark.png \\
        --public-url https://registry.example.org --size-mm 20 --dpi 300 --caption

The mark is signed with the log key (it is the log that vouches for it), from the
log's own record of the certificate, so it is the same mark the HTTP API gives.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from registry.cli import context, files
from registry.cli.output import Output
from registry.cli.parsing import Commands
from registry.config import ServerSettings
from registry.errors import ConfigError
from verifier.errors import MalformedError

if TYPE_CHECKING:
    from registry.ledger import Ledger
    from registry.marks import ImageFormat

FORMATS: dict[str, ImageFormat] = {".png": "png", ".svg": "svg"}
# registry.marks' defaults (test_cli_startup checks they agree): written here so
# that building the parser does not import the image libraries.
DEFAULT_SIZE_MM = 20.0
DEFAULT_DPI = 300


def configured_public_url(option: str | None) -> str | None:
    """The public base URL from the flag, then QILEDGER_PUBLIC_URL, if any;
    checked now (not after a certificate was logged) that marks can live under it."""
    from verifier import mark

    url = ServerSettings.from_env(option).public_url
    if url is not None:
        mark.mark_url(url, "A")
    return url


def public_url(option: str | None) -> str:
    """:func:`configured_public_url`, required: a command has no request whose
    host could stand in for it."""
    url = configured_public_url(option)
    if url is None:
        raise ConfigError(
            "a mark URL needs the public verifier's address: "
            "--public-url https://HOST or QILEDGER_PUBLIC_URL"
        )
    return url


def certificate_mark_url(ledger: Ledger, certificate_id: str, base_url: str) -> str:
    """The mark URL of a logged certificate, signed by the log key."""
    from registry import marks
    from verifier import mark

    claims = marks.claims_for(ledger.trust_state(), certificate_id)
    return mark.mark_url(base_url, ledger.sign_mark(claims))


def cmd_mark(args: argparse.Namespace, out: Output) -> int:
    from registry import marks

    fmt = FORMATS.get(Path(args.out).suffix.lower())
    if fmt is None:
        raise MalformedError(f"--out {args.out}: the file name ends in .png or .svg")
    base_url = public_url(args.public_url)
    ledger = context.ledger(args)
    url = certificate_mark_url(ledger, args.certificate_id, base_url)
    image = marks.render(
        url,
        fmt,
        size_mm=args.size_mm,
        dpi=args.dpi,
        caption=args.certificate_id if args.caption else None,
    )
    symbol = marks.symbol(url)
    files.write_new(args.out, image, 0o644)
    out.emit(
        f"wrote the mark of {args.certificate_id} to {args.out} "
        f"(QR version {symbol.version}, {symbol.modules} modules, {args.size_mm:g} mm)\n{url}",
        {
            "certificate_id": args.certificate_id,
            "file": args.out,
            "format": fmt,
            "mark_url": url,
            "qr_version": symbol.version,
            "modules": symbol.modules,
            "size_mm": args.size_mm,
            "dpi": args.dpi,
        },
    )
    return 0


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def register(commands: Commands) -> None:
    p = commands.add("mark", cmd_mark, "write a certificate's QR accreditation mark (PNG or SVG)")
    p.add_argument("certificate_id", metavar="CERT-ID", help="e.g. LAB-1/DCC-2026-0001")
    p.add_argument("--out", required=True, metavar="FILE", help="a new .png or .svg file")
    p.add_argument(
        "--size-mm",
        type=_number,
        default=DEFAULT_SIZE_MM,
        help=f"side of the code with its quiet zone, in mm (default {DEFAULT_SIZE_MM:g})",
    )
    p.add_argument(
        "--dpi",
        type=int,
        default=DEFAULT_DPI,
        help=f"PNG resolution (default {DEFAULT_DPI})",
    )
    p.add_argument("--caption", action="store_true", help="print the certificate id below")
    p.add_argument(
        "--public-url",
        help="scheme://host[:port] of the public verifier (env QILEDGER_PUBLIC_URL)",
    )
