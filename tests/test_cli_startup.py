"""What the command lines import, checked without timing (``bench/cli.py`` times them).

Each command runs as users run it, through its console script in a fresh
interpreter, under ``-X importtime`` (which names every module imported): a read
command on a SQLite ledger opens it through the SQLite driver alone (SQLAlchemy,
0.2 s of start-up, is for writes and PostgreSQL) and must not load the web, XML,
JSON Schema or image libraries;
``--help`` loads no database either; ``qiverify --help`` loads neither the
cryptography libraries nor the HTTP client, and an offline check not the HTTP
client nor the certification schemas.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry import marks
from registry.cli import marks as cli_marks

BIN = Path(sys.executable).parent
CERTIFICATE = "DEMO-LAB/DCC-2026-0001"  # registered by the demo

DATABASE = {"sqlalchemy", "sqlite3", "_sqlite3", "psycopg", "psycopg2"}
WEB = {"fastapi", "fastapi_offline", "starlette", "uvicorn", "jinja2", "multipart", "httpx"}
XML = {"lxml", "signxml", "xmlschema"}
JSON_SCHEMA = {"jsonschema", "jsonschema_rs", "referencing"}
IMAGE = {"PIL", "qrcode", "zxingcpp"}
CBOR = {"cbor2", "cwt"}  # marks are encoded by verifier.mark itself
CRYPTOGRAPHY = {"nacl", "cryptography"}
HTTP_CLIENT = {"urllib.request", "http.client"}


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    modules: frozenset[str]

    def loaded(self, names: set[str]) -> list[str]:
        """The modules of ``names`` (packages with their submodules) that were imported."""
        return sorted(
            m for m in self.modules if any(m == n or m.startswith(n + ".") for n in names)
        )


def run(script: str, *argv: str) -> Run:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN / script), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    modules = frozenset(
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    )
    assert modules, done.stderr
    return Run(done.returncode, done.stdout, modules)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo ledger (public demo keys: commands on it need ``--demo``), with its
    verifier key and latest checkpoint written beside it for ``qiverify``."""
    base = tmp_path_factory.mktemp("startup")
    data_dir = base / "ledger"
    subprocess.run(
        [str(BIN / "qiledger"), "--data-dir", str(data_dir), "demo"],
        capture_output=True,
        check=True,
        timeout=300,
    )
    ledger = [str(BIN / "qiledger"), "--demo", "--data-dir", str(data_dir)]
    for name, argv in (("log.vkey", ["log-key"]), ("latest.checkpoint", ["checkpoint"])):
        out = subprocess.run([*ledger, *argv], capture_output=True, check=True, timeout=60)
        (base / name).write_bytes(out.stdout)
    return data_dir


READ_COMMANDS = {
    "checkpoint": ("checkpoint",),
    "proof": ("proof", "--index", "3"),
    "entry": ("entry", "3"),
    "certificate": ("certificate", CERTIFICATE),
    "issuers": ("issuers",),
    "certificates": ("certificates",),
    "consistency": ("consistency", "--from", "3", "--to", "5"),
    "trace": ("trace", CERTIFICATE),
    "impact": ("impact", CERTIFICATE),
}


def _read(demo: Path, name: str) -> Run:
    result = run("qiledger", "--demo", "--data-dir", str(demo), *READ_COMMANDS[name])
    assert result.code == 0, result.stdout  # the command ran to its end
    return result


def test_qiledger_help_loads_no_database_web_xml_schema_or_image_library() -> None:
    result = run("qiledger", "--help")
    assert result.code == 0
    assert "checkpoint" in result.stdout
    assert not result.loaded(DATABASE | WEB | XML | JSON_SCHEMA | IMAGE | CBOR)


@pytest.mark.parametrize("name", list(READ_COMMANDS))
def test_a_read_command_loads_no_web_image_or_postgres_library(demo: Path, name: str) -> None:
    result = _read(demo, name)
    assert result.loaded({"sqlite3"})  # it did open the ledger
    assert not result.loaded(WEB | IMAGE | CBOR | {"sqlalchemy", "psycopg", "psycopg2"})


@pytest.mark.parametrize("name", READ_COMMANDS)
def test_a_read_command_loads_no_xml_or_json_schema_library(demo: Path, name: str) -> None:
    assert not _read(demo, name).loaded(XML | JSON_SCHEMA)


def test_qiverify_help_loads_only_the_parser() -> None:
    result = run("qiverify", "--help")
    assert result.code == 0
    assert "inclusion" in result.stdout
    heavy = DATABASE | WEB | XML | JSON_SCHEMA | IMAGE | CBOR | CRYPTOGRAPHY | HTTP_CLIENT
    assert not result.loaded(heavy | {"registry", "rfc8785"})


def test_an_offline_qiverify_check_loads_no_http_client_or_schema(demo: Path) -> None:
    base = demo.parent
    result = run(
        "qiverify",
        "checkpoint",
        str(base / "latest.checkpoint"),
        "--log-key",
        str(base / "log.vkey"),
    )
    assert result.code == 0, result.stdout
    assert result.loaded({"nacl"})  # the signature was checked
    assert not result.loaded(DATABASE | WEB | XML | JSON_SCHEMA | IMAGE | HTTP_CLIENT)


def test_the_mark_defaults_of_the_parser_are_those_of_registry_marks() -> None:
    # registry.cli.marks repeats them so that building the parser imports no image library.
    assert (cli_marks.DEFAULT_SIZE_MM, cli_marks.DEFAULT_DPI) == (
        marks.DEFAULT_SIZE_MM,
        marks.DEFAULT_DPI,
    )
