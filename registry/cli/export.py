"""``qiledger export``: write an audit bundle (DESIGN.md item 10) that an auditor
checks offline with ``qiverify audit FILE.zip --log-key VKEY``."""

from __future__ import annotations

import argparse
from pathlib import Path

from registry.cli import context
from registry.cli.output import Output
from registry.cli.parsing import Commands
from verifier.errors import MalformedError


def _index(text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise argparse.ArgumentTypeError(f"{text!r} is not a log index")
    return int(text)


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from registry import export

    selection = export.selection_of(
        certificate=args.certificate,
        issuer=args.issuer,
        from_time=args.from_time,
        to_time=args.to_time,
        from_index=args.from_index,
        to_index=args.to_index,
    )
    out_path = Path(args.out)
    if out_path.exists():  # an output never replaces a file (registry.cli.files)
        raise MalformedError(f"{args.out} exists; refusing to overwrite it")
    ledger = context.ledger(args)
    try:
        planned = export.plan(ledger, selection, with_documents=args.with_documents)
        result = export.export_to_file(ledger, planned, out_path)
    except OSError as exc:
        raise MalformedError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    finally:
        ledger.close()
    out.emit(
        f"wrote {args.out}: {result.entries} certificate entries and {result.trust} trust "
        f"entries ({result.selected} selected, {result.documents} documents) under "
        f"checkpoint {result.checkpoint_size}; check it with: qiverify audit {args.out} "
        "--log-key log.vkey",
        {
            "out": str(args.out),
            "selection": selection.to_json(),
            "checkpoint_size": result.checkpoint_size,
            "entries": result.entries,
            "trust": result.trust,
            "selected": result.selected,
            "documents": result.documents,
        },
    )
    return 0


def register(commands: Commands) -> None:
    p = commands.add(
        "export",
        cmd_export,
        "write an audit bundle (ZIP: entries, proofs, checkpoints, reports) that verifies "
        "offline with nothing but the log's key (qiverify audit)",
    )
    p.add_argument("--out", required=True, metavar="FILE.zip", help="the bundle to write")
    p.add_argument("--certificate", metavar="ID", help="one certificate's history")
    p.add_argument("--issuer", metavar="ID", help="everything about one issuer")
    p.add_argument("--from-time", metavar="RFC3339", help="entries logged at or after")
    p.add_argument("--to-time", metavar="RFC3339", help="entries logged at or before")
    p.add_argument("--from-index", type=_index, metavar="N", help="first index (inclusive)")
    p.add_argument("--to-index", type=_index, metavar="N", help="last index (inclusive)")
    p.add_argument(
        "--with-documents", action="store_true", help="include the selected certificates' documents"
    )
