"""Audit bundles: ``qiledger export`` / ``GET /api/v1/export`` → ``qiverify audit``.

Logs are built from real signed statements (a body, two accredited laboratories,
issues, status changes, an amendment, a key rotation with a compromise report) on
both engines; every bundle is checked by :func:`verifier.bundle.audit` alone. The
tampering tests rewrite one member of a real bundle and require the audit to name
it; the container tests feed it hostile ZIPs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import export
from registry.api.app import create_app
from registry.cli.main import main as qiledger
from registry.config import Settings
from registry.ledger import Ledger
from tests.conftest import make_ledger
from tests.helpers import (
    BODY_KEY,
    SIGNED_AT_TIME,
    body_add,
    envelope_bytes,
    grant,
    issue_document,
    issue_statement,
    key_from,
    submit_one,
)
from verifier import audit_report, bundle, checkpoint, entry, merkle, statement, trust
from verifier.bundle import BundleError, BundleUnreadableError, Selection
from verifier.cli import main as qiverify
from verifier.keys import SigningKey
from verifier.note import NoteVerifier
from verifier.proof import TlogProof

LAB2 = key_from("lab-2")
LAB1_NEW = key_from("lab-1-rotated")


@dataclass
class Log:
    ledger: Ledger
    lab: SigningKey
    logged_at: dict[int, str]
    compromised_index: int
    """The first LAB-1 certificate entry logged at or after the reported compromise."""


def _submit(ledger: Ledger, fields: dict[str, object], key: SigningKey) -> int:
    accepted = submit_one(ledger.sequencer, envelope_bytes(fields, key))
    return accepted.index


def _change(verb: str, certificate_id: str, issuer: str = "LAB-1") -> dict[str, object]:
    builder = statement.CERTIFICATE_CHANGES[verb]
    return builder(issuer_id=issuer, certificate_id=certificate_id, reason=f"audit {verb}").to_json(
        SIGNED_AT_TIME
    )


def build_log(ledger: Ledger, lab: SigningKey) -> Log:
    """Entries 0-1 (body, LAB-1) come from the fixture; then a history with every
    kind of event, a key rotation and a compromise report that voids some."""
    for n in range(1, 5):
        _submit(ledger, issue_statement(n), lab)
    _submit(ledger, grant("LAB-2", [LAB2]), BODY_KEY)
    _submit(ledger, issue_statement(1, "LAB-2"), LAB2)
    _submit(ledger, issue_statement(2, "LAB-2"), LAB2)
    _submit(ledger, _change("suspend", "LAB-1/DCC-000001"), lab)
    amend = statement.CertificateAmend(
        issuer_id="LAB-1",
        certificate_id="LAB-1/DCC-000005",
        kind="dcc",
        document_sha256=hashlib.sha256(issue_document(5)).hexdigest(),
        issued=SIGNED_AT_TIME.date(),
        supersedes="LAB-1/DCC-000002",
    ).to_json(SIGNED_AT_TIME)
    _submit(ledger, amend, lab)
    _submit(ledger, _change("reinstate", "LAB-1/DCC-000001"), lab)
    compromised_index = _submit(ledger, _change("withdraw", "LAB-2/DCC-000001", "LAB-2"), LAB2)
    compromised_index = _submit(ledger, _change("withdraw", "LAB-1/DCC-000003"), lab)
    _submit(
        ledger,
        statement.IssuerKeyAdd(issuer_id="LAB-1", public_key=LAB1_NEW.public_key).to_json(
            SIGNED_AT_TIME
        ),
        lab,
    )
    _submit(ledger, issue_statement(6), LAB1_NEW)
    size = ledger.latest_checkpoint().size
    logged = {i: ledger.entry(i).logged_at for i in range(size)}
    revoke = statement.IssuerKeyRevoke(
        issuer_id="LAB-1",
        key_id=lab.public_key.key_id,
        reason="stolen",
        compromised_at=entry.parse_time(logged[compromised_index]),
    ).to_json(SIGNED_AT_TIME)
    _submit(ledger, revoke, LAB1_NEW)
    _submit(ledger, _change("suspend", "LAB-1/DCC-000006"), LAB1_NEW)
    size = ledger.latest_checkpoint().size
    logged = {i: ledger.entry(i).logged_at for i in range(size)}
    return Log(ledger, lab, logged, compromised_index)


@pytest.fixture
def log(ledger: Ledger, lab_key: SigningKey) -> Log:
    return build_log(ledger, lab_key)


def _export(ledger: Ledger, selection: Selection, path: Path, *, documents: bool = False) -> Path:
    planned = export.plan(ledger, selection, with_documents=documents)
    export.export_to_file(ledger, planned, path)
    return path


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist()}


def _lines(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.splitlines()]


def _selections(log: Log) -> dict[str, Selection]:
    middle = sorted(log.logged_at)[len(log.logged_at) // 2]
    return {
        "log": Selection("log"),
        "certificate": Selection("certificate", certificate_id="LAB-1/DCC-000002"),
        "issuer": Selection("issuer", issuer_id="LAB-2"),
        "time": Selection(
            "time", from_time=log.logged_at[middle], to_time=log.logged_at[middle + 3]
        ),
        "open time": Selection("time", from_time=log.logged_at[middle]),
        "index": Selection("index", from_index=9, to_index=13),
    }


# --- round trips on both engines --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["log", "certificate", "issuer", "time", "open time", "index"])
def test_export_then_audit_round_trip(log: Log, kind: str, tmp_path: Path) -> None:
    ledger = log.ledger
    selection = _selections(log)[kind]
    path = _export(ledger, selection, tmp_path / "bundle.zip", documents=True)
    result = bundle.audit(path, ledger.identity.verifier, workers=0)
    members = _members(path)
    lines = _lines(members[bundle.ENTRIES]) + _lines(members[bundle.TRUST])
    size = ledger.latest_checkpoint().size
    assert result.checkpoint_size == size
    assert result.lines == len(lines) == sum(1 for n in members if n.startswith("proofs/"))
    # Every line is the stored entry at its index, and the selected ones are exactly
    # the ones the selection names (checked against the ledger, not the bundle).
    for line in lines:
        index = line["index"]
        assert isinstance(index, int)
        stored = ledger.entry(index)
        from verifier import jcs

        assert jcs.canonical_bytes(line["entry"]) == stored.data
        stmt = statement.parse(entry.parse(stored.data).envelope.payload)
        assert line["selected"] == selection.selects(
            index, stmt, entry.parse_time(stored.logged_at)
        )
    every_selected = [
        i
        for i in range(size)
        if selection.selects(
            i,
            statement.parse(entry.parse(ledger.entry(i).data).envelope.payload),
            entry.parse_time(ledger.entry(i).logged_at),
        )
    ]
    assert sorted(line["index"] for line in lines if line["selected"]) == every_selected
    assert result.selected == len(every_selected)
    # A trust entry is never left out; the whole log is complete.
    trust_indices = [i for i, _ in ledger.trust_entries(size)]
    assert [line["index"] for line in _lines(members[bundle.TRUST])] == trust_indices
    assert result.complete == (kind == "log")
    # The report's rows are the selected entries, with the status the registry's own
    # replay gives after each.
    rows = members[bundle.REPORT_CSV].decode().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows] == every_selected
    replayed = trust.TrustState(ledger.identity.public_key)
    statuses = {}
    for i in range(size):
        stmt = trust.replay_one(replayed, i, ledger.entry(i).data, trust_append_checks=True)
        if stmt.type.startswith("certificate."):
            at = entry.parse_time(ledger.entry(i).logged_at)
            cert = replayed.certificate(stmt["certificate_id"])
            assert cert is not None
            statuses[i] = trust.status_of(replayed, cert, at).status
    for r in rows:
        fields = r.split(",")
        if fields[4].startswith("certificate."):
            assert fields[5] == statuses[int(fields[1])]
    documents = [n for n in members if n.startswith("documents/")]
    for name in documents:
        assert hashlib.sha256(members[name]).hexdigest() == name.removeprefix("documents/")
    assert result.documents == len(documents)


def test_compromise_voids_rows_and_statuses(log: Log, tmp_path: Path) -> None:
    path = _export(log.ledger, Selection("issuer", issuer_id="LAB-1"), tmp_path / "b.zip")
    result = bundle.audit(path, log.ledger.identity.verifier, workers=0)
    rows = [r.split(",") for r in _members(path)[bundle.REPORT_CSV].decode().splitlines()[1:]]
    lab_rows = [
        r for r in rows if r[4].startswith("certificate.") and int(r[1]) >= log.compromised_index
    ]
    rotated = {"LAB-1/DCC-000006"}
    assert any(r[6] == "void" for r in lab_rows)
    for r in lab_rows:
        assert (r[6] == "void") == (r[2] not in rotated)
    assert result.summary["events_by_verdict"]["void"] == sum(r[6] == "void" for r in rows)


def test_certificate_selection_carries_its_predecessor_and_successor(
    log: Log, tmp_path: Path
) -> None:
    """DCC-000005 amends DCC-000002: a bundle of DCC-000002 holds the amendment as
    selected, and a bundle of DCC-000005 holds DCC-000002's history as context."""
    ledger = log.ledger
    old = _members(
        _export(
            ledger,
            Selection("certificate", certificate_id="LAB-1/DCC-000002"),
            tmp_path / "old.zip",
        )
    )
    new_path = _export(
        ledger, Selection("certificate", certificate_id="LAB-1/DCC-000005"), tmp_path / "new.zip"
    )
    bundle.audit(new_path, ledger.identity.verifier, workers=0)
    selected = [line["entry"] for line in _lines(old[bundle.ENTRIES]) if line["selected"]]
    assert len(selected) == 2  # its issue, and the amendment superseding it
    new_lines = _lines(_members(new_path)[bundle.ENTRIES])
    context = [line for line in new_lines if not line["selected"]]
    assert len(context) == 1
    assert len(new_lines) == 2
    assert b"superseded" not in old[bundle.REPORT_CSV]  # the rows say the status after each
    assert _members(new_path)[bundle.REPORT_CSV].count(b"\r\n") == 2


def test_index_selection_proves_its_ends(log: Log, tmp_path: Path) -> None:
    path = _export(log.ledger, _selections(log)["index"], tmp_path / "b.zip")
    result = bundle.audit(path, log.ledger.identity.verifier, workers=0)
    assert len(result.checkpoints) >= 2
    assert result.checkpoints[0] <= 9
    assert result.checkpoints[-1] == result.checkpoint_size
    names = _members(path)
    for old, new in zip(result.checkpoints, result.checkpoints[1:], strict=False):
        assert bundle.consistency_name(old, new) in names


def test_unknown_certificate_issuer_and_range_are_not_found(log: Log) -> None:
    from registry.errors import NotFoundError

    for selection in (
        Selection("certificate", certificate_id="LAB-1/NOPE"),
        Selection("issuer", issuer_id="LAB-9"),
        Selection("index", from_index=10_000),
    ):
        with pytest.raises(NotFoundError):
            export.plan(log.ledger, selection)


def test_signature_workers_agree_with_inline_checks(log: Log, tmp_path: Path) -> None:
    path = _export(log.ledger, Selection("log"), tmp_path / "b.zip")
    inline = bundle.audit(path, log.ledger.identity.verifier, workers=0)
    pooled = bundle.audit(path, log.ledger.identity.verifier, workers=1)
    assert inline == pooled
    assert pooled.signatures == pooled.lines


# --- determinism -----------------------------------------------------------------------------


@pytest.fixture
def small_log(sqlite_settings: Settings, lab_key: SigningKey) -> Log:
    ledger = make_ledger(sqlite_settings, lab_key)
    try:
        yield build_log(ledger, lab_key)  # type: ignore[misc]
    finally:
        ledger.close()


def test_two_exports_cli_and_http_are_byte_identical(
    small_log: Log, sqlite_settings: Settings, tmp_path: Path
) -> None:
    ledger = small_log.ledger
    selection = Selection("issuer", issuer_id="LAB-1")
    first = _export(ledger, selection, tmp_path / "1.zip").read_bytes()
    second = _export(ledger, selection, tmp_path / "2.zip").read_bytes()
    assert first == second
    cli = tmp_path / "cli.zip"
    code = qiledger(
        [
            "--data-dir",
            str(sqlite_settings.data_dir),
            "export",
            "--out",
            str(cli),
            "--issuer",
            "LAB-1",
        ]
    )
    assert code == 0
    assert cli.read_bytes() == first
    token = ledger.tokens.create("auditor", "")[0]
    with TestClient(create_app(ledger)) as client:
        got = client.get(
            "/api/v1/export",
            params={"issuer": "LAB-1"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/zip"
    assert "attachment" in got.headers["content-disposition"]
    assert got.content == first
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {bundle.ZIP_DATE}
    assert {i.external_attr >> 16 for i in infos} == {bundle.ZIP_PERMISSIONS}


def test_the_route_is_for_auditors_only(small_log: Log) -> None:
    ledger = small_log.ledger
    tokens = {
        "issuer": ledger.tokens.create("issuer", "LAB-1")[0],
        "operator": ledger.tokens.create("operator", "")[0],
        "auditor": ledger.tokens.create("auditor", "")[0],
    }
    with TestClient(create_app(ledger)) as client:
        assert client.get("/api/v1/export").status_code == 401
        for role in ("issuer", "operator"):
            got = client.get("/api/v1/export", headers={"Authorization": f"Bearer {tokens[role]}"})
            assert got.status_code == 403, role
            assert got.headers["content-type"] == "application/problem+json"
        auditor = {"Authorization": f"Bearer {tokens['auditor']}"}
        for params, status in (
            ({"from_time": "yesterday"}, 422),
            ({"certificate": "LAB-1/DCC-000001", "issuer": "LAB-1"}, 422),
            ({"from_index": "5", "to_index": "2"}, 422),
            ({"from_index": "-1"}, 422),
            ({"certificate": "LAB-1/NOPE"}, 404),
            ({"issuer": "LAB-9"}, 404),
        ):
            got = client.get("/api/v1/export", params=params, headers=auditor)
            assert got.status_code == status, (params, got.text)
            assert got.headers["content-type"] == "application/problem+json"


# --- tampering ---------------------------------------------------------------------------------


def _zip_info(name: str) -> zipfile.ZipInfo:
    """A member header like the bundle's own, for rebuilding bundles with zipfile."""
    info = zipfile.ZipInfo(name, date_time=bundle.ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = bundle.ZIP_PERMISSIONS << 16
    return info


def _rewrite(
    members: dict[str, bytes],
    path: Path,
    changes: dict[str, bytes] | None = None,
    extra: list[tuple[str, bytes]] | None = None,
) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in sorted({**members, **(changes or {})}.items()):
            archive.writestr(_zip_info(name), data)
        for name, data in extra or []:
            archive.writestr(_zip_info(name), data)
    return path


@pytest.fixture
def tiny(small_log: Log, tmp_path: Path) -> tuple[dict[str, bytes], Callable[[Path], object]]:
    ledger = small_log.ledger
    path = _export(
        ledger,
        Selection("certificate", certificate_id="LAB-1/DCC-000001"),
        tmp_path / "tiny.zip",
        documents=True,
    )
    key = ledger.identity.verifier
    bundle.audit(path, key, workers=0)  # the untouched bundle verifies
    return _members(path), lambda p: bundle.audit(p, key, workers=0)


def _positions(length: int) -> list[int]:
    if length <= 160:
        return list(range(length))
    step = max(1, length // 120)
    return sorted({*range(20), *range(0, length, step), *range(length - 20, length)})


def _assert_named(
    check: Callable[[Path], object],
    members: dict[str, bytes],
    name: str,
    position: int,
    value: int,
    path: Path,
) -> None:
    data = bytearray(members[name])
    if data[position] == value:
        return
    data[position] = value
    with pytest.raises(BundleError) as caught:
        check(_rewrite(members, path, {name: bytes(data)}))
    error = caught.value
    if name == bundle.MANIFEST:
        assert bundle.MANIFEST in str(error), (name, position, str(error))
    else:
        assert error.member == name, (name, position, str(error))


def test_every_member_names_its_own_byte_changes(
    tiny: tuple[dict[str, bytes], Callable[[Path], object]], tmp_path: Path
) -> None:
    members, check = tiny
    assert any(n.startswith("documents/") for n in members)
    assert any(n.startswith("proofs/") for n in members)
    for name, data in members.items():
        for position in _positions(len(data)):
            _assert_named(check, members, name, position, data[position] ^ 0x01, tmp_path / "t.zip")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_byte_change_is_caught_and_named(
    tiny: tuple[dict[str, bytes], Callable[[Path], object]], tmp_path: Path, data: st.DataObject
) -> None:
    members, check = tiny
    name = data.draw(st.sampled_from(sorted(members)))
    position = data.draw(st.integers(0, len(members[name]) - 1))
    value = data.draw(st.integers(0, 255))
    _assert_named(check, members, name, position, value, tmp_path / "h.zip")


@pytest.mark.parametrize("chunk", [1, 3, 17, 256, 1 << 18])
def test_lines_are_read_whatever_the_chunks_they_inflate_in(
    tiny: tuple[dict[str, bytes], Callable[[Path], object]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
) -> None:
    # The reader cuts lines out of a buffer filled a chunk at a time: a line may span
    # any number of chunks, and the end of a member may fall anywhere.
    members, check = tiny
    monkeypatch.setattr(bundle._Member, "CHUNK", chunk)
    check(_rewrite(members, tmp_path / "whole.zip"))
    entries = members[bundle.ENTRIES]
    for broken, why in (
        (entries[:-1], "lacks its newline"),  # the last line cut short of its newline
        (entries + b"\n", ""),  # an empty line after the last
    ):
        with pytest.raises(BundleError) as caught:
            check(_rewrite(members, tmp_path / "broken.zip", {bundle.ENTRIES: broken}))
        assert caught.value.member == bundle.ENTRIES
        assert why in str(caught.value)
    shortest = min(len(line) for line in entries.splitlines(keepends=True))
    monkeypatch.setattr(bundle, "MAX_LINE", shortest - 1)  # every line is now too long
    with pytest.raises(BundleError) as caught:
        check(_rewrite(members, tmp_path / "long.zip"))
    assert caught.value.member in (bundle.ENTRIES, bundle.TRUST)
    assert "too long" in str(caught.value)


def test_a_member_left_out_or_added_is_named(
    tiny: tuple[dict[str, bytes], Callable[[Path], object]], tmp_path: Path
) -> None:
    members, check = tiny
    for name in sorted(members):
        if name == bundle.MANIFEST:
            continue
        rest = {n: d for n, d in members.items() if n != name}
        with pytest.raises(BundleError) as caught:
            check(_rewrite(rest, tmp_path / "missing.zip"))
        assert caught.value.member == name
    for name in ("proofs/99.tlog-proof", "documents/" + "0" * 64, "notes.txt", "../evil"):
        with pytest.raises(BundleError) as caught:
            check(_rewrite(members, tmp_path / "extra.zip", extra=[(name, b"x")]))
        assert caught.value.member == name


# --- hostile containers ---------------------------------------------------------------------------


def test_hostile_containers_are_refused_cleanly(
    tiny: tuple[dict[str, bytes], Callable[[Path], object]], tmp_path: Path
) -> None:
    members, check = tiny
    whole = _rewrite(members, tmp_path / "whole.zip").read_bytes()
    for cut in (0, 10, len(whole) // 2, len(whole) - 1):
        truncated = tmp_path / "cut.zip"
        truncated.write_bytes(whole[:cut])
        with pytest.raises(BundleUnreadableError):
            check(truncated)
    with pytest.raises(BundleUnreadableError):
        check(tmp_path / "absent.zip")
    twice = tmp_path / "twice.zip"
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile warns, then writes it
        _rewrite(members, twice, extra=[(bundle.ENTRIES, members[bundle.ENTRIES])])
    with pytest.raises(BundleError) as caught:
        check(twice)
    assert caught.value.code == "duplicate_member"
    bomb = tmp_path / "bomb.zip"
    _rewrite(members, bomb, {bundle.TRUST: bytes(16 << 20)})
    with pytest.raises(BundleError) as caught:
        check(bomb)
    assert caught.value.member == bundle.TRUST
    assert "bomb" in caught.value.message


# --- qiverify audit -------------------------------------------------------------------------------


def test_qiverify_audit_exit_codes(
    tiny: tuple[dict[str, bytes], Callable[[Path], object]],
    small_log: Log,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    members, _ = tiny
    vkey = tmp_path / "log.vkey"
    vkey.write_text(str(small_log.ledger.identity.verifier) + "\n")
    good = _rewrite(members, tmp_path / "good.zip")
    assert qiverify(["audit", str(good), "--log-key", str(vkey)]) == 0
    assert "OK: audit bundle" in capsys.readouterr().out
    assert qiverify(["audit", str(good), "--log-key", str(vkey), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["exit_code"] == 0
    assert facts["selection"]["kind"] == "certificate"
    forged = bytearray(members[bundle.REPORT_CSV])
    forged[-5] ^= 0x01
    bad = _rewrite(members, tmp_path / "bad.zip", {bundle.REPORT_CSV: bytes(forged)})
    assert qiverify(["audit", str(bad), "--log-key", str(vkey), "--json"]) == 2
    facts = json.loads(capsys.readouterr().out)
    assert facts["bad_file"] == bundle.REPORT_CSV
    assert qiverify(["audit", str(bad), "--log-key", str(vkey)]) == 2
    assert "report.csv" in capsys.readouterr().err
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[:100])
    assert qiverify(["audit", str(cut), "--log-key", str(vkey)]) == 3
    assert qiverify(["audit", str(tmp_path / "none.zip"), "--log-key", str(vkey)]) == 3
    other = key_from("another log")
    foreign = str(NoteVerifier.for_key(small_log.ledger.identity.origin, other.public_key))
    assert qiverify(["audit", str(good), "--log-key", foreign]) == 2
    capsys.readouterr()


def test_summary_counts_each_certificate_once(log: Log, tmp_path: Path) -> None:
    path = _export(log.ledger, Selection("log"), tmp_path / "b.zip")
    result = bundle.audit(path, log.ledger.identity.verifier, workers=0)
    rows = [r.split(",") for r in _members(path)[bundle.REPORT_CSV].decode().splitlines()[1:]]
    last: dict[str, str] = {}
    for r in rows:
        if r[2]:
            last[r[2]] = r[5]
    assert result.summary["certificates_by_status"] == dict(sorted(Counter(last.values()).items()))
    assert result.summary["rows"] == len(rows)
    assert timedelta(0) <= entry.parse_time(rows[-1][0]) - entry.parse_time(rows[0][0])


# --- a registry that lies: a log signed by its key, holding what it should not -----------------


def _path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 PATH(m, D): the inclusion proof of leaf ``index`` (leaf hashes)."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return [*_path(index, leaves[:k]), merkle.root_from_leaf_hashes(leaves[k:])]
    return [*_path(index - k, leaves[k:]), merkle.root_from_leaf_hashes(leaves[:k])]


def _forged_bundle(path: Path, log_key: SigningKey, signed: list[tuple[bytes, bool]]) -> Path:
    """A whole-log bundle of envelopes ``signed`` (canonical JSON, and whether to spoil
    its signature), built from ``verifier`` alone and signed with the log's own key:
    every proof and checkpoint is genuine, so only the entries can be wrong."""
    origin = "forged.example/log"
    verifier_key = NoteVerifier.for_key(origin, log_key.public_key)
    leaves, hashes, prev = [], [], entry.GENESIS_PREV
    logged_at = entry.format_time(SIGNED_AT_TIME)
    for envelope_json, spoil in signed:
        value = json.loads(envelope_json)
        if spoil:
            sig = bytearray(base64.b64decode(value["signatures"][0]["sig"]))
            sig[0] ^= 0x01
            value["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        leaf = entry.encode(prev, logged_at, value)
        leaves.append(leaf)
        prev = merkle.leaf_hash(leaf)
        hashes.append(prev)
    size = len(leaves)
    note = checkpoint.sign(
        checkpoint.Checkpoint(origin, size, merkle.root_from_leaf_hashes(hashes)), log_key
    )
    selection = Selection("log")
    statements = [statement.parse(entry.parse(leaf).envelope.payload) for leaf in leaves]
    replay = bundle.BundleReplay(
        log_key.public_key,
        bundle.compromise_times(s for s in statements if not s.type.startswith("certificate.")),
        check=False,
    )
    members: dict[str, bytes] = {bundle.checkpoint_name(size): note}
    entries, trust_lines = b"", b""
    facts = {
        "origin": origin,
        "log_key": str(verifier_key),
        "checkpoint_size": size,
        "selection": selection.to_json(),
    }
    csv, html = audit_report.csv_head(), audit_report.html_head(facts)
    last: dict[str, str] = {}
    for index, (leaf, stmt) in enumerate(zip(leaves, statements, strict=True)):
        line = bundle.encode_line(index, leaf, True)
        if stmt.type.startswith("certificate."):
            entries += line
        else:
            trust_lines += line
        members[bundle.proof_name(index, size)] = TlogProof(
            index, tuple(_path(index, hashes)), note
        ).to_bytes()
        row, _ = replay.feed(index, entry.parse(leaf), stmt, True)
        assert row is not None
        csv += audit_report.csv_row(row)
        html += audit_report.html_row(row)
        if row.certificate_id:
            last[row.certificate_id] = row.status_after
    replay.summary.certificates_by_status.update(last.values())
    html += audit_report.html_tail(replay.summary.to_json())
    members.update(
        {
            bundle.ENTRIES: entries,
            bundle.TRUST: trust_lines,
            bundle.REPORT_CSV: csv,
            bundle.REPORT_HTML: html,
        }
    )
    counts = {
        "documents": 0,
        "entries": entries.count(b"\n"),
        "selected": size,
        "trust": trust_lines.count(b"\n"),
    }
    files = {n: hashlib.sha256(d).hexdigest() for n, d in members.items()}
    members[bundle.MANIFEST] = bundle.Manifest(
        origin, str(verifier_key), selection, size, counts, False, files
    ).to_bytes()
    return _rewrite(members, path)


def _forged_log(lab_fields: dict[str, object]) -> tuple[SigningKey, list[bytes]]:
    log_key = key_from("forged log")
    lab = key_from("forged lab")
    return log_key, [
        envelope_bytes(body_add(), log_key),
        envelope_bytes(grant("LAB-1", [lab]), BODY_KEY),
        envelope_bytes(lab_fields, lab),
    ]


def test_a_logged_envelope_whose_signature_fails_is_caught(tmp_path: Path) -> None:
    log_key, envelopes = _forged_log(issue_statement(1))
    spoiled = [(e, i == 2) for i, e in enumerate(envelopes)]
    verifier_key = NoteVerifier.for_key("forged.example/log", log_key.public_key)
    honest = _forged_bundle(tmp_path / "honest.zip", log_key, [(e, False) for e in envelopes])
    assert bundle.audit(honest, verifier_key, workers=0).complete
    forged = _forged_bundle(tmp_path / "forged.zip", log_key, spoiled)
    for workers in (0, 1):
        with pytest.raises(BundleError) as caught:
            bundle.audit(forged, verifier_key, workers=workers)
        assert (caught.value.member, caught.value.index) == (bundle.ENTRIES, 2)
        assert caught.value.code == "signature_invalid"


def test_a_logged_statement_the_trust_rules_refuse_is_caught(tmp_path: Path) -> None:
    """The log key signed a checkpoint over an issue for a kind LAB-1 is not
    accredited for: every proof holds, the replay does not."""
    log_key, envelopes = _forged_log(issue_statement(1, kind="management_system"))
    verifier_key = NoteVerifier.for_key("forged.example/log", log_key.public_key)
    forged = _forged_bundle(tmp_path / "forged.zip", log_key, [(e, False) for e in envelopes])
    with pytest.raises(BundleError) as caught:
        bundle.audit(forged, verifier_key, workers=0)
    assert (caught.value.member, caught.value.index) == (bundle.ENTRIES, 2)
    assert caught.value.code == "scope_not_covered"


def test_zip64_records_are_written_where_needed(
    small_log: Log, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lowered limits make a small bundle need every ZIP64 record (member sizes,
    offsets, the member count); it must read back the same members and verify."""
    ledger = small_log.ledger
    selection = Selection("certificate", certificate_id="LAB-1/DCC-000001")
    plain = _members(_export(ledger, selection, tmp_path / "plain.zip", documents=True))
    monkeypatch.setattr(export, "_ZIP32_LIMIT", 1024)
    monkeypatch.setattr(export, "_ZIP16_LIMIT", 5)
    path = _export(ledger, selection, tmp_path / "zip64.zip", documents=True)
    data = path.read_bytes()
    assert b"PK\x06\x06" in data  # the ZIP64 end of central directory record
    assert b"PK\x06\x07" in data  # and its locator
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert any(i.file_size > 1024 for i in archive.infolist())
        assert any(i.header_offset > 1024 for i in archive.infolist())
    assert _members(path) == plain
    bundle.audit(path, ledger.identity.verifier, workers=0)


def test_qiledger_export_refusals(
    small_log: Log, sqlite_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = ["--data-dir", str(sqlite_settings.data_dir)]
    out = tmp_path / "out.zip"
    assert qiledger([*data_dir, "export", "--out", str(out), "--certificate", "LAB-1/NOPE"]) == 4
    assert not out.exists()
    assert (
        qiledger([*data_dir, "export", "--out", str(out), "--issuer", "A", "--to-index", "3"]) == 1
    )
    assert qiledger([*data_dir, "export", "--out", str(out), "--to-time", "soon"]) == 1
    assert qiledger([*data_dir, "export", "--out", str(tmp_path / "no" / "b.zip")]) == 1
    assert qiledger([*data_dir, "--json", "export", "--out", str(out), "--to-index", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["selected"] == 5
    assert qiledger([*data_dir, "export", "--out", str(out)]) == 1  # never overwrites
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err
    assert "Traceback" not in err
    bundle.audit(out, small_log.ledger.identity.verifier, workers=0)
