"""The checking side stands alone: importing every ``verifier`` module, in a fresh
interpreter, loads neither ``registry`` nor a database or web framework (DESIGN.md:
"It never imports registry, SQLModel/SQLAlchemy or a database driver")."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import verifier

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "registry",
    "sqlalchemy",
    "sqlmodel",
    "fastapi",
    "starlette",
    "psycopg",
    "psycopg_binary",
    "psycopg_c",
    "psycopg2",
    "uvicorn",
}
# Importing verifier.__main__ would run the CLI.
NOT_IMPORTABLE = {"__main__"}


def verifier_modules() -> list[str]:
    """Every module and subpackage under verifier/, found on disk (not imported)."""
    return sorted(
        info.name
        for info in pkgutil.walk_packages(verifier.__path__, prefix="verifier.")
        if info.name.rsplit(".", 1)[-1] not in NOT_IMPORTABLE
    )


def test_discovery_finds_the_core_modules() -> None:
    found = set(verifier_modules())
    core = {"errors", "jcs", "encoding", "keys", "merkle", "note", "checkpoint", "dsse", "entry"}
    assert {f"verifier.{name}" for name in core | {"statement", "proof", "cli"}} <= found
    assert "verifier.__main__" not in found


def test_verifier_imports_nothing_from_the_writing_side() -> None:
    modules = verifier_modules()
    code = (
        "import json, sys\n"
        f"import verifier, {', '.join(modules)}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert set(modules) <= loaded  # the imports really happened
    leaked = sorted(name for name in loaded if name.split(".", 1)[0] in FORBIDDEN)
    assert not leaked, f"importing verifier loaded {leaked}"
