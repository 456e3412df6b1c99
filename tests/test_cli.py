"""The qiledger and qiverify command lines, end to end on a real SQLite ledger."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from registry.cli.main import main as qiledger
from registry.demo import DEMO_DOCUMENTS
from registry.keys import keyfile
from tests.helpers import LUTAML, SIGNED_AT, b64key, envelope_bytes, key_from
from verifier import checkpoint, merkle
from verifier import proof as tlog_proof
from verifier.cli import main as qiverify
from verifier.note import NoteVerifier


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = qiledger(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A ledger whose trusted body CNAS accredits LAB-1 (entries 0 and 1), built
    with the CLI's own trust commands; e0..e2.json are LAB-1 statements."""
    data = tmp_path / "data"
    d = ["--data-dir", str(data)]
    assert run(capsys, *d, "init", "--no-passphrase")[0] == 0
    for name in ("body", "lab"):
        code = run(capsys, "keygen", "--out", str(tmp_path / name), "--no-passphrase")[0]
        assert code == 0
    code, out, _ = run(
        capsys,
        *d,
        "body",
        "add",
        "--name",
        "CNAS",
        "--country",
        "CN",
        "--key",
        str(tmp_path / "body.pub.pem"),
    )
    assert code == 0, out
    assert "logged at index 0" in out
    code, out, err = run(
        capsys,
        *d,
        "accredit",
        "grant",
        "--body-key",
        str(tmp_path / "body.key"),
        "--body",
        "CNAS",
        "--issuer",
        "LAB-1",
        "--issuer-name",
        "Lab One",
        "--issuer-kind",
        "calibration_laboratory",
        "--issuer-key",
        str(tmp_path / "lab.pub.pem"),
        "--number",
        "CNAS L0001",
        "--standard",
        "ISO/IEC 17025:2017",
        "--scope",
        "Temperature",
        "--covers",
        "dcc",
        "--valid-from",
        "2020-01-01",
        "--valid-until",
        "2099-12-31",
    )
    assert code == 0, err
    assert "logged at index 1" in out
    lab = keyfile.read_private_key(tmp_path / "lab.key", None)
    for n in range(3):
        (tmp_path / f"e{n}.json").write_bytes(envelope_bytes(key_add(n), lab))
    return data


def key_add(n: int) -> dict[str, object]:
    """A document-free statement LAB-1 can log: adding one more key."""
    return {
        "type": "issuer.key.add",
        "issuer_id": "LAB-1",
        "signed_at": SIGNED_AT,
        "public_key": b64key(key_from(f"extra-{n}")),
    }


def test_full_cycle(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(data_dir)]
    code, out, _ = run(capsys, *d, "append", str(tmp_path / "e0.json"), str(tmp_path / "e1.json"))
    assert code == 0
    assert "appended at index 2" in out
    assert "appended at index 3" in out
    assert run(capsys, *d, "checkpoint")[0] == 0
    old_cp = tmp_path / "old.cp"
    old_cp.write_text(run(capsys, *d, "checkpoint")[1])
    code, out, _ = run(capsys, *d, "append", str(tmp_path / "e2.json"), str(tmp_path / "e0.json"))
    assert code == 0
    assert "appended at index 4" in out
    assert "already logged at index 2" in out

    code, out, _ = run(capsys, *d, "log-key")
    vkey = out.splitlines()[0]
    verifier = NoteVerifier.parse(vkey)
    assert "BEGIN PUBLIC KEY" in out

    new_cp = tmp_path / "new.cp"
    new_cp.write_text(run(capsys, *d, "checkpoint")[1])
    signed = checkpoint.verify(new_cp.read_bytes(), verifier)
    assert signed.checkpoint.size == 5

    # entry --raw writes the exact hashed bytes; proof prints a tlog-proof for them.
    code = qiledger([*d, "entry", "3", "--raw"])
    raw = capsys.readouterr().out.encode()
    proof_text = run(capsys, *d, "proof", "--index", "3")[1]
    assert proof_text.startswith("c2sp.org/tlog-proof@v1\nindex 3\n")
    assert tlog_proof.verify(proof_text.encode(), raw, verifier).checkpoint.size == 5
    (tmp_path / "e1.bin").write_bytes(raw)
    (tmp_path / "e1.proof").write_text(proof_text)
    (tmp_path / "log.vkey").write_text(vkey + "\n")
    assert (
        qiverify(
            [
                "inclusion",
                str(tmp_path / "e1.proof"),
                str(tmp_path / "e1.bin"),
                "--log-key",
                str(tmp_path / "log.vkey"),
            ]
        )
        == 0
    )
    assert "OK: entry 3 is included" in capsys.readouterr().out

    cons = run(capsys, *d, "consistency", "--from", "4", "--to", "5")[1]
    (tmp_path / "p.txt").write_text(cons)
    old = checkpoint.verify(old_cp.read_bytes(), verifier).checkpoint
    merkle.verify_consistency(
        4, 5, tlog_proof.parse_consistency(cons.encode()), old.root, signed.checkpoint.root
    )
    assert (
        qiverify(
            [
                "consistency",
                "--old",
                str(old_cp),
                "--new",
                str(new_cp),
                "--proof",
                str(tmp_path / "p.txt"),
                "--log-key",
                vkey,
            ]
        )
        == 0
    )
    assert (
        qiverify(
            [
                "consistency",
                "--old",
                str(new_cp),
                "--new",
                str(old_cp),
                "--proof",
                str(tmp_path / "p.txt"),
                "--log-key",
                vkey,
            ]
        )
        == 2  # not authentic (qiverify exit codes)
    )

    assert "extends size 4" in capsys.readouterr().out
    code, out, _ = run(capsys, *d, "--json", "fsck")
    assert code == 0
    assert (json.loads(out)["entries"], json.loads(out)["certificates"]) == (5, 0)
    code, out, _ = run(capsys, *d, "--json", "reindex")
    assert code == 0
    assert sorted(json.loads(out)) == ["certificates", "entries", "seconds"]
    assert (json.loads(out)["entries"], json.loads(out)["certificates"]) == (5, 0)
    code, out, _ = run(capsys, *d, "reindex")
    assert code == 0
    assert re.fullmatch(r"reindexed 5 entries: 0 certificates in \d+\.\d s\n", out), out
    code, out, _ = run(capsys, *d, "--json", "fsck")
    assert (code, json.loads(out)["entries"]) == (0, 5)
    code, out, _ = run(capsys, *d, "entry", "4", "--json")
    assert json.loads(out)["statement"]["public_key"] == b64key(key_from("extra-2"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["append", "/nonexistent/e.json"], "cannot read /nonexistent/e.json"),
        (
            ["body", "add", "--name", "X", "--country", "CN", "--key", "/nonexistent.pem"],
            "cannot read public key",
        ),
        (
            ["body", "add", "--name", "CNAS", "--country", "CN", "--key", "/dev/null"],
            "not a PEM public key",
        ),
        (["body", "remove", "NOPE", "--reason", "test"], "body NOPE is not a trusted body"),
        (["init", "--no-passphrase"], "a ledger already exists"),
    ],
)
def test_errors_are_one_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "--data-dir", str(data_dir), *argv)
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_refused_append_names_the_file(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(envelope_bytes(key_add(9), key_from("stranger")))
    code, _, err = run(capsys, "--data-dir", str(data_dir), "append", str(bad))
    assert code == 1
    assert f"{bad}: refused: key " in err
    assert run(capsys, "--data-dir", str(data_dir), "--json", "checkpoint")[0] == 0


def test_no_ledger_and_bad_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--data-dir", str(tmp_path / "none"), "checkpoint")
    assert code == 1
    assert "no ledger in" in err
    code, _, err = run(capsys, "--database-url", "mysql://x/y", "checkpoint")
    assert code == 1
    assert "unsupported database URL" in err


def test_keygen_writes_private_key_0600(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keygen", "--out", str(tmp_path / "lab"), "--no-passphrase")
    assert code == 0
    mode = stat.S_IMODE((tmp_path / "lab.key").stat().st_mode)
    assert mode == 0o600
    assert "PRIVATE KEY" not in out
    code, _, err = run(capsys, "keygen", "--out", str(tmp_path / "lab"), "--no-passphrase")
    assert code == 1
    assert "refusing to overwrite" in err


def test_init_without_passphrase_source_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QILEDGER_KEY_PASSPHRASE", raising=False)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 (not a terminal)
    code, _, err = run(capsys, "--data-dir", str(tmp_path / "d"), "init")
    assert code == 1
    assert "QILEDGER_KEY_PASSPHRASE" in err
    assert not (tmp_path / "d" / "log.key").exists()


def test_encrypted_log_key_needs_its_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = ["--data-dir", str(tmp_path / "d")]
    monkeypatch.setenv("QILEDGER_KEY_PASSPHRASE", "correct horse")
    assert run(capsys, *d, "init")[0] == 0
    assert b"ENCRYPTED" in (tmp_path / "d" / "log.key").read_bytes()
    body = key_from("body")
    (tmp_path / "body.pub.pem").write_bytes(body.public_key.to_pem())
    add = [
        "body",
        "add",
        "--name",
        "CNAS",
        "--country",
        "CN",
        "--key",
        str(tmp_path / "body.pub.pem"),
    ]
    monkeypatch.setenv("QILEDGER_KEY_PASSPHRASE", "wrong")
    code, _, err = run(capsys, *d, *add)
    assert code == 1
    assert "wrong passphrase" in err
    monkeypatch.delenv("QILEDGER_KEY_PASSPHRASE")
    code, _, err = run(capsys, *d, *add)
    assert code == 1
    assert "is encrypted" in err
    (tmp_path / "d" / "log.key").chmod(0o644)
    monkeypatch.setenv("QILEDGER_KEY_PASSPHRASE", "correct horse")
    code, _, err = run(capsys, *d, *add)
    assert code == 1
    assert "accessible by group or others" in err
    (tmp_path / "d" / "log.key").chmod(0o600)
    assert run(capsys, *d, *add)[0] == 0
    code, out, _ = run(capsys, *d, "body", "list")
    assert code == 0
    assert "CNAS" in out


def test_console_scripts_run_without_traceback(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bindir / "qiledger"), "--data-dir", str(tmp_path / "none"), "fsck"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no ledger" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "verifier", "checkpoint", "/nonexistent", "--log-key", "a+b+c"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3  # a malformed log key: could not check
    assert "COULD NOT CHECK" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.shared
def test_trust_commands(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(data_dir)]
    body = [
        "--body-key",
        str(tmp_path / "body.key"),
        "--body",
        "CNAS",
        "--issuer",
        "LAB-1",
        "--number",
        "CNAS L0001",
    ]
    code, out, err = run(capsys, *d, "accredit", "suspend", *body, "--reason", "audit")
    assert code == 0, err
    assert "logged at index 2" in out
    issue = [
        "issue",
        str(LUTAML / "valid.xml"),
        "--key",
        str(tmp_path / "lab.key"),
        "--issuer",
        "LAB-1",
    ]
    code, _, err = run(capsys, *d, *issue)
    assert code == 1
    assert "CNAS L0001 is suspended" in err
    code, _, err = run(capsys, *d, "accredit", "suspend", *body, "--reason", "again")
    assert code == 1
    assert "cannot suspend an accreditation that is suspended" in err
    assert run(capsys, *d, "accredit", "restore", *body, "--reason", "ok")[0] == 0

    assert run(capsys, "keygen", "--out", str(tmp_path / "lab2"), "--no-passphrase")[0] == 0
    code, _, err = run(
        capsys,
        *d,
        "key",
        "add",
        "--issuer",
        "LAB-1",
        "--signing-key",
        str(tmp_path / "lab.key"),
        "--new-key",
        str(tmp_path / "lab2.pub.pem"),
    )
    assert code == 0, err
    code, _, err = run(
        capsys,
        *d,
        "key",
        "revoke",
        "--issuer",
        "LAB-1",
        "--signing-key",
        str(tmp_path / "lab2.key"),
        "--revoke",
        str(tmp_path / "lab.pub.pem"),
        "--reason",
        "stolen",
        "--compromised-at",
        "2026-01-01T00:00:00Z",
    )
    assert code == 0, err
    code, _, err = run(capsys, *d, *issue)
    assert code == 1
    assert "compromised since 2026-01-01T00:00:00.000Z" in err

    code, out, _ = run(capsys, *d, "issuers")
    assert code == 0
    assert "LAB-1" in out
    assert "CNAS L0001 (CNAS): granted" in out
    code, out, _ = run(capsys, *d, "--json", "issuer", "LAB-1")
    summary = json.loads(out)
    assert [h["status"] for h in summary["accreditations"][0]["history"]] == [
        "granted",
        "suspended",
        "granted",
    ]
    assert [k["revoked_at"] is not None for k in summary["keys"]] == [True, False]
    code, out, _ = run(capsys, *d, "issuer", "LAB-1")
    assert "compromised since" in out
    assert run(capsys, *d, "fsck")[0] == 0


def test_token_create_list_revoke(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(data_dir)]
    code, out, _ = run(capsys, *d, "--json", "token", "create", "--issuer", "LAB-1")
    assert code == 0
    created = json.loads(out)
    assert (created["role"], created["subject"]) == ("issuer", "LAB-1")
    assert created["token"].startswith(f"qil_{created['token_id']}_")
    code, out, _ = run(capsys, *d, "token", "create", "--role", "auditor", "--label", "audit 2026")
    assert code == 0
    assert "shown once" in out
    code, out, _ = run(capsys, *d, "--json", "token", "list")
    listed = json.loads(out)
    assert [(t["role"], t["subject"]) for t in listed] == [("issuer", "LAB-1"), ("auditor", "")]
    assert created["token"] not in out  # secrets are never listed
    code, out, _ = run(capsys, *d, "token", "revoke", created["token_id"])
    assert code == 0
    code, out, err = run(capsys, *d, "token", "revoke", created["token_id"])
    assert code == 4  # not found (tests/test_cli_exit_codes.py)
    assert "no active API token" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [[], ["--issuer", "LAB-1", "--role", "auditor"], ["--issuer", "LAB-1", "--body", "CNAS"]],
)
def test_token_create_needs_exactly_one_holder(
    data_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, _, err = run(capsys, "--data-dir", str(data_dir), "token", "create", *args)
    assert code == 1
    assert "exactly one of --issuer" in err


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"QILEDGER_RATE_LIMIT": "lots"}, [], "QILEDGER_RATE_LIMIT must be a number >= 0"),
        ({"QILEDGER_RATE_BURST": "-5"}, [], "QILEDGER_RATE_BURST must be a whole number >= 0"),
        ({"QILEDGER_PUBLIC_URL": "ftp://x"}, [], "QILEDGER_PUBLIC_URL must be an http(s) URL"),
        ({}, ["--public-url", "verify.example.org"], "QILEDGER_PUBLIC_URL must be an http(s)"),
        ({}, ["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_serve_refuses_bad_settings_before_starting(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: list[str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # serve exports settings
    code, _, err = run(capsys, "--data-dir", str(data_dir), "serve", "--port", "1", *args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err


def test_issue_a_pdf_certification_certificate_with_its_record(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--data-dir", str(data_dir)]
    assert run(capsys, "keygen", "--out", str(tmp_path / "cb"), "--no-passphrase")[0] == 0
    grant = [
        *("accredit", "grant", "--body-key", str(tmp_path / "body.key"), "--body", "CNAS"),
        *("--issuer", "CB-1", "--issuer-name", "CB One", "--issuer-kind", "certification_body"),
        *("--issuer-key", str(tmp_path / "cb.pub.pem"), "--number", "CNAS C0001"),
        *("--standard", "ISO/IEC 17021-1:2015", "--scope", "QMS", "--covers"),
        *("management_system", "--valid-from", "2020-01-01", "--valid-until", "2099-12-31"),
    ]
    code, _, err = run(capsys, *d, *grant)
    assert code == 0, err
    record = json.loads((DEMO_DOCUMENTS / "demo-certification.json").read_bytes())
    record["certification_body"]["id"] = "CB-1"
    (tmp_path / "record.json").write_text(json.dumps(record))
    pdf = b"%PDF-1.7\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
    (tmp_path / "cert.pdf").write_bytes(pdf)
    issue = ["issue", str(tmp_path / "cert.pdf"), "--key", str(tmp_path / "cb.key")]
    issue += ["--issuer", "CB-1"]

    code, _, err = run(capsys, *d, *issue)
    assert code == 1
    assert "a PDF certificate needs its record" in err
    code, out, err = run(capsys, *d, "--json", *issue, "--record", str(tmp_path / "record.json"))
    assert code == 0, err
    certificate_id = json.loads(out)["certificate_id"]
    assert certificate_id == f"CB-1/{record['certificate_number']}"
    code, _, err = run(capsys, *d, "document", certificate_id, "--out", str(tmp_path / "out.pdf"))
    assert code == 0, err
    assert (tmp_path / "out.pdf").read_bytes() == pdf
    assert run(capsys, *d, "fsck")[0] == 0


@pytest.mark.parametrize(
    "damage",
    [
        b"this is not a database at all\n" * 100,
        b"SQLite format 3\x00" + b"\xff" * 4080,  # the header, then nothing it can read
        b"",
    ],
    ids=["text", "header-only", "empty"],
)
def test_a_damaged_database_file_is_one_line(tmp_path: Path, damage: bytes) -> None:
    # Read commands open a SQLite file through the driver itself (no SQLAlchemy):
    # a file that is not a ledger must still be one clear line, never a traceback.
    # Each command in a process of its own, as users run them.
    (tmp_path / "ledger.db").write_bytes(damage)
    bindir = Path(sys.executable).parent
    for argv in (["checkpoint"], ["entry", "0"], ["issuers"], ["certificate", "LAB/C-1"]):
        result = subprocess.run(
            [str(bindir / "qiledger"), "--data-dir", str(tmp_path), *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        err = result.stderr
        assert result.returncode == 1, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
        assert "cannot open database" in err or "no ledger in" in err, err
