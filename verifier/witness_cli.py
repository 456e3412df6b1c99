"""``qiverify witness``: run a C2SP tlog-witness for QI Ledger (or any C2SP) logs.

::

    qiverify witness keygen --name witness.example/w1 --out witness.key
    qiverify witness serve --key witness.key --log-key log.vkey --state witness.json \\
        --listen 127.0.0.1:7380

``keygen`` writes the private key (mode 0600, one line
``PRIVATE+KEY+<name>+<hex8>+<base64(0x04 ‖ seed)>``, see :mod:`verifier.cosignature`)
and prints the verifier key string a log and its clients configure. ``serve``
answers ``POST /add-checkpoint`` for the logs named by ``--log-key`` (repeatable),
keeping what it cosigned in ``--state``.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from verifier.errors import QILedgerError
from verifier.verdict import EXIT_UNCHECKED, Report, Stop

if TYPE_CHECKING:  # imported when a command runs: --help stays fast
    from verifier.cosignature import CosignatureSigner

DEFAULT_LISTEN = "127.0.0.1:7380"


def cmd_keygen(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier.cosignature import CosignatureSigner
    from verifier.keys import SigningKey

    try:
        signer = CosignatureSigner(args.name, SigningKey.generate(os.urandom(32)))
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, f"--name {args.name!r}: {exc.message}") from None
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Stop(EXIT_UNCHECKED, f"{args.out} exists; not overwriting a key") from None
    except OSError as exc:
        raise Stop(EXIT_UNCHECKED, f"cannot write {args.out}: {exc.strerror}") from None
    try:
        os.write(fd, signer.private_text().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    vkey = str(signer.verifier)
    report.facts.update(name=signer.name, verifier_key=vkey, key_file=args.out)
    report.lines.append(vkey)


def read_signer(path: str) -> CosignatureSigner:
    """The witness key in ``path`` (refused if others may read it, as ssh does)."""
    from verifier.cosignature import CosignatureSigner

    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise Stop(EXIT_UNCHECKED, f"{path} is readable by others: chmod 600 {path}")
        with open(path, encoding="utf-8") as file:
            text = file.read(4096)
    except OSError as exc:
        raise Stop(EXIT_UNCHECKED, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise Stop(EXIT_UNCHECKED, f"{path} is not a witness key file") from None
    try:
        return CosignatureSigner.parse_private(text)
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, f"{path}: {exc.message}") from None


def _listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise Stop(EXIT_UNCHECKED, f"--listen {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port_text)


def cmd_serve(args: argparse.Namespace, report: Report, now: datetime) -> None:
    import logging
    import time
    from pathlib import Path

    from verifier.cli import _log_key
    from verifier.witness import Witness
    from verifier.witness_server import WitnessServer

    signer = read_signer(args.key)
    log_keys = [_log_key(value) for value in args.log_key]
    host, port = _listen(args.listen)
    try:
        witness = Witness(signer, log_keys, Path(args.state), time.time)
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, exc.message) from None
    try:
        server = WitnessServer(witness, host, port)
    except OSError as exc:
        raise Stop(EXIT_UNCHECKED, f"cannot listen on {args.listen}: {exc.strerror}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logs = ", ".join(sorted(witness.log_keys))
    print(f"witness {signer.verifier} serving {server.url} for {logs}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()


def add_parser(
    sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser
) -> None:
    """``qiverify witness keygen|serve`` (registered by :func:`verifier.cli.build_parser`)."""
    p = sub.add_parser("witness", help="run a C2SP tlog-witness that cosigns checkpoints")
    commands = p.add_subparsers(dest="witness_command", required=True, metavar="COMMAND")
    k = commands.add_parser("keygen", parents=[common], help="make a witness key")
    k.add_argument("--name", required=True, help="the witness's name, e.g. witness.example/w1")
    k.add_argument("--out", required=True, metavar="FILE", help="private key file to create")
    k.set_defaults(func=cmd_keygen)
    s = commands.add_parser("serve", parents=[common], help="serve POST /add-checkpoint")
    s.add_argument("--key", required=True, metavar="FILE", help="the witness key (keygen)")
    s.add_argument(
        "--log-key",
        required=True,
        action="append",
        metavar="VKEY",
        help="a log's verifier key string or file (repeatable: one per log)",
    )
    s.add_argument("--state", required=True, metavar="FILE", help="what it cosigned, per log")
    s.add_argument(
        "--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help="(default %(default)s)"
    )
    s.set_defaults(func=cmd_serve)
