"""``qiledger statement FILE --issuer ID [--record JSON]``: the exact statement the
registry requires for a document, as ``POST /api/v1/statements/prepare`` answers
it, for a lab's system to sign (DSSE) and upload.

It reads the document as the registry does (the same limits, schema and
signature checks, with the schema and trust-store settings of the environment)
and needs no ledger: a lab can run it with nothing but the package. Output: the
canonical statement JSON (the payload bytes to sign, ``signed_at`` now), or with
``--json`` the whole prepared answer (payload in base64, the PAE, the envelope
to fill in, when it expires).

    qiledger statement dcc.xml --issuer LAB-1 > statement.json
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from registry.cli import context, files
from registry.cli.output import Output
from registry.cli.parsing import Commands


def cmd_statement(args: argparse.Namespace, out: Output) -> int:
    from registry.api.models import prepared_statement
    from registry.documents.intake import DocumentReader
    from verifier import statement

    document = files.read_document(args.document)
    record = None if args.record is None else files.read_document(args.record)
    now = datetime.now(UTC)
    derived = DocumentReader(context.settings(args)).statement(document, args.issuer, now, record)
    prepared = prepared_statement(derived.fields, derived.media_type, now)
    if out.as_json:
        out.emit("", prepared)
    else:
        # The exact payload bytes (RFC 8785), not a re-indented copy of them.
        sys.stdout.buffer.write(statement.encode(prepared["statement"]) + b"\n")
        sys.stdout.flush()
    return 0


def register(commands: Commands) -> None:
    p = commands.add(
        "statement",
        cmd_statement,
        "print the exact statement the registry requires for a document (canonical "
        "JSON, signed_at now; with global JSON output: its base64 payload, PAE and the "
        "envelope to sign too)",
    )
    p.add_argument("document", metavar="FILE", help="DCC XML, certification JSON, or PDF")
    p.add_argument("--issuer", required=True, metavar="ID", help="the issuer that will sign it")
    p.add_argument(
        "--record", metavar="JSON", help="with a PDF only: the certificate as certification JSON"
    )
