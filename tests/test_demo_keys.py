"""The public demo keys work only with --demo, and the list of them is right."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.cli.main import main as qiledger
from registry.config import Settings
from registry.errors import ConfigError, KeyFileError
from registry.keys import keyfile
from registry.keys.demo_keys import DEMO_KEY_IDS, DEMO_KEYS_DIR
from registry.ledger import Ledger
from tests.helpers import DEMO_DOCUMENTS


def test_demo_key_list_matches_the_files() -> None:
    found = {
        keyfile.read_public_key(p).key_id: p.name.removesuffix(".pub.pem")
        for p in DEMO_KEYS_DIR.glob("*.pub.pem")
    }
    assert found == DEMO_KEY_IDS
    for name in DEMO_KEY_IDS.values():
        private = keyfile.read_private_key(DEMO_KEYS_DIR / f"{name}.key", None, demo=True)
        assert DEMO_KEY_IDS[private.public_key.key_id] == name


@pytest.mark.parametrize("name", sorted(DEMO_KEY_IDS.values()))
def test_demo_keys_are_refused_outside_demo(name: str) -> None:
    with pytest.raises(KeyFileError, match="refused outside --demo"):
        keyfile.read_private_key(DEMO_KEYS_DIR / f"{name}.key", None)


def test_ledger_with_demo_log_key_runs_only_with_demo(tmp_path: Path) -> None:
    log_key = keyfile.read_private_key(DEMO_KEYS_DIR / "log.key", None, demo=True)
    demo = Settings(data_dir=tmp_path, log_key_path=DEMO_KEYS_DIR / "log.key", demo=True)
    with pytest.raises(ConfigError, match="only with --demo"):
        Ledger.init(
            Settings(data_dir=tmp_path / "x"), origin="o", passphrase=None, existing_key=log_key
        )
    Ledger.init(demo, origin="demo/log", passphrase=None, existing_key=log_key).close()
    with pytest.raises(ConfigError, match="only with --demo"):
        Ledger.open(Settings(data_dir=tmp_path))
    Ledger.open(demo).close()


def test_cli_signing_with_a_demo_key_needs_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statement = tmp_path / "s.json"
    statement.write_text(
        '{"type":"issuer.key.add","issuer_id":"DEMO-LAB","public_key":"' + "A" * 43 + '="}'
    )
    key = str(DEMO_KEYS_DIR / "calibration-lab.key")
    assert qiledger(["sign", str(statement), "--key", key]) == 1
    assert "refused outside --demo" in capsys.readouterr().err
    assert qiledger(["--demo", "sign", str(statement), "--key", key]) == 0
    assert '"payloadType":"application/vnd.qiledger.statement+json"' in capsys.readouterr().out


def test_demo_command_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert qiledger(["demo", "--data-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for expected in [
        "REFUSED (signature_invalid)",
        "REFUSED (key_not_issuer)",
        "REFUSED (document_mismatch)",
        "REFUSED (self_accreditation)",
        "REFUSED (accreditation_suspended)",
        "the reinstate with a 2nd signature   REFUSED (signature_count)",
        "the reinstate in other JSON          already logged at index 9",
        "the same amended DCC again           already logged at index 7",
        "OK: entry 3's inclusion proof verifies against checkpoint B (tree size 10)",
        "OK: tree size 10 (B) extends tree size 5 (A)",
        "DEMO-LAB/DCC-2026-0001           Superseded",
        "DEMO-LAB/DCC-2026-0001-A1        Active",
        f"OK: the stored DCC ({len((DEMO_DOCUMENTS / 'demo-dcc.xml').read_bytes())} bytes) "
        "has the logged SHA-256",
        "POST /api/v1/certificates -> 201: DEMO-LAB/DCC-2026-0002 at index 10",
        "OK: the receipt's proof of entry 10 verifies against its signed checkpoint",
        "GET /api/v1/certificates/DEMO-LAB/DCC-2026-0002 -> 200: Active",
        "POST /api/v1/statements without a token -> 401 token_missing",
        "OK: 11 entries, 19 tree nodes, 12 checkpoints and 4 documents re-checked",
    ]:
        assert expected in out
