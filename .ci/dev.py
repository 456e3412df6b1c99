#!/usr/bin/env python3
"""Set up everything from a bare Python 3.11+, then run the demo or the tests.

    python3 .ci/dev.py demo      # the main job on the embedded SQLite default
    python3 .ci/dev.py test      # the whole test suite (extra args go to pytest)

Standard library only: it creates ``.venv`` beside the project, installs the
project with its test extras when ``pyproject.toml`` changed since the last
install, and runs the command inside that environment.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("QILEDGER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".qiledger-installed"


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (this script runs before any check)
        sys.exit(f"QI Ledger needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing QI Ledger and its dependencies", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[test,bench]"], check=True)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "setup"}:
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "setup":
        return 0
    if command == "demo":
        argv_run = [str(BIN / "qiledger"), "demo", *rest]
    else:
        argv_run = [str(BIN / "python"), "-m", "pytest", "-n", "2", *rest]
    return subprocess.run(argv_run, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
