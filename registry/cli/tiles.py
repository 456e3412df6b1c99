"""``qiledger tiles``: write the log's C2SP tlog-tiles static read API to a directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from registry.cli import context
from registry.cli.output import Output
from registry.cli.parsing import Commands


def cmd_tiles(args: argparse.Namespace, out: Output) -> int:
    from registry.tiles import write_static_tree

    ledger = context.ledger(args)
    try:
        report = write_static_tree(ledger, Path(args.out))
    finally:
        ledger.close()
    out.emit(
        f"tree size {report.size}: wrote {report.written} tiles and entry bundles, "
        f"{report.skipped} already there; checkpoint written to {Path(args.out) / 'checkpoint'}",
        {
            "out": str(args.out),
            "size": report.size,
            "written": report.written,
            "skipped": report.skipped,
        },
    )
    return 0


def register(commands: Commands) -> None:
    p = commands.add(
        "tiles",
        cmd_tiles,
        "write the checkpoint, tiles and entry bundles (C2SP tlog-tiles) under DIR, "
        "for any static web server",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where to write (created)")
