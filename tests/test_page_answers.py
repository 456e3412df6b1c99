"""Every public page's answer, byte for byte, as recorded in
``tests/vectors/page_answers.json.gz``: a scan page (``/m/``, ``/M/``) and a
certificate page (``/c/``) of each verdict (valid, superseded, suspended,
withdrawn, expired; a forged, truncated and disagreeing mark; an unknown or
hostile id), in English and Chinese (query, cookie, Accept-Language), of
certificates traced to others (the chain diagram, a traceability risk, an
external and a mismatched link), under witnesses' cosignatures; and the file
check and witnesses pages. Status, headers and body must be the recorded ones,
through the hot-read layer and through FastAPI alike, on SQLite and PostgreSQL.

The registry is built on a fixed clock with fixed keys, so every byte of it
(entries, checkpoints, proofs, marks) is the same on every run. The pages are a
speed-sensitive path (bench/verify.py): this pins what they say while their
rendering changes. After a deliberate change to a page, record the answers
again and review the diff::

    .venv/bin/python -m tests.test_page_answers
"""

from __future__ import annotations

import difflib
import gzip
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from registry.api.app import create_app
from registry.config import Settings
from registry.keys import keyfile
from registry.ledger import Ledger
from registry.witnessing import WitnessEndpoint
from tests.helpers import (
    BODY_KEY,
    body_add,
    certification_fields,
    demo_dcc,
    envelope_bytes,
    grant,
    key_from,
    register_document,
    submit_with_documents,
)
from tests.test_hot_reads import Answer, call, scope_for
from tests.test_pages import CB, LAB, LOG_KEY, ORIGIN, numbered_dcc
from verifier import mark, statement
from verifier.cosignature import CosignatureSigner, format_line
from verifier.entry import format_time
from verifier.links import EQUIPMENT, DocumentLinks, Link

ANSWERS = Path(__file__).resolve().parent / "vectors" / "page_answers.json.gz"
START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
"""The registry's clock while it is built and for every page but the expired ones."""
LATER = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
"""After the certification certificate's expiry (1 January 2027)."""

NMI = key_from("answers nmi")
W1 = CosignatureSigner("witness.test/one", key_from("answers witness 1"))
W2 = CosignatureSigner("witness.test/two", key_from("answers witness 2"))

VALID = "LAB-1/DCC-2026-0001-A1"
SUPERSEDED = "LAB-1/DCC-2026-0001"
SUSPENDED = "LAB-1/DCC-2026-0002"
WITHDRAWN = "LAB-1/DCC-2026-0003"
EXPIRING = "CB-1/QMS-OLD"
ROOT = "NMI-1/ROOT-1"
ROOT_WITHDRAWN = "NMI-1/ROOT-2"
REFERENCE = "LAB-1/REF-1"
WORKING = "LAB-1/WORK-1"
ALL = (VALID, SUPERSEDED, SUSPENDED, WITHDRAWN, EXPIRING, ROOT, ROOT_WITHDRAWN, REFERENCE, WORKING)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Built:
    ledger: Ledger
    clock: Clock
    marks: dict[str, str]
    """Name → token: each certificate's mark, and the hostile ones."""


def _at(fields: dict[str, Any], when: datetime) -> dict[str, Any]:
    return {**fields, "signed_at": format_time(when)}


def _traced(
    issuer: str, number: str, key: Any, digests: dict[str, str], to: list[Link]
) -> tuple[bytes, str]:
    certificate_id = f"{issuer}/{number}"
    digest = register_document(f"page answers {certificate_id}".encode())
    digests[certificate_id] = digest
    fields = statement.CertificateIssue(
        issuer_id=issuer,
        certificate_id=certificate_id,
        kind="dcc",
        document_sha256=digest,
        issued=date(2026, 11, 2),
        valid_until=date(2028, 11, 1),
        links=DocumentLinks(tuple(to), ("GUM",)).links_json(),
        standards=DocumentLinks(tuple(to), ("GUM",)).standards_json(),
    ).to_json(START)
    return envelope_bytes(fields, key), certificate_id


def build(settings: Settings) -> Built:
    """The registry: the trust chain, certificates of each status, a traced chain
    (root, reference standard, working instrument; a withdrawn root, an external
    and a mismatched link) and two witnesses' cosignatures on the latest checkpoint."""
    clock = Clock()
    settings.log_key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    keyfile.write_private_key(settings.log_key_file, LOG_KEY, None)
    ledger = Ledger.init(
        settings, origin=ORIGIN, passphrase=None, clock=clock, existing_key=LOG_KEY
    )
    seq = ledger.sequencer
    seq.submit(envelope_bytes(_at(body_add(), START), ledger.load_log_key().key))
    seq.submit(envelope_bytes(_at(grant("LAB-1", [LAB]), START), BODY_KEY))
    seq.submit(envelope_bytes(_at(grant("NMI-1", [NMI]), START), BODY_KEY))
    cb = grant("CB-1", [CB], kind="certification_body", covers=("management_system",))
    seq.submit(envelope_bytes(_at(cb, START), BODY_KEY))
    ledger.issue_certificate(demo_dcc(), "LAB-1", LAB)
    ledger.issue_certificate(demo_dcc("demo-dcc-amended.xml"), "LAB-1", LAB)
    ledger.issue_certificate(numbered_dcc("DCC-2026-0002"), "LAB-1", LAB)
    ledger.issue_certificate(numbered_dcc("DCC-2026-0003"), "LAB-1", LAB)
    old = certification_fields("QMS-OLD", issue_date="2026-01-01", expiry_date="2027-01-01")
    ledger.issue_certificate(json.dumps(old).encode(), "CB-1", CB)

    digests: dict[str, str] = {}
    envelopes = []
    for number in ("ROOT-1", "ROOT-2"):
        envelope, _ = _traced("NMI-1", number, NMI, digests, [])
        envelopes.append(envelope)
    envelope, _ = _traced(
        "LAB-1",
        "REF-1",
        LAB,
        digests,
        [Link(EQUIPMENT, c, "SHA-256", digests[c]) for c in (ROOT, ROOT_WITHDRAWN)],
    )
    envelopes.append(envelope)
    to = [
        Link(EQUIPMENT, REFERENCE, "SHA-256", digests[REFERENCE]),
        Link(EQUIPMENT, ROOT, "SHA-256", "0" * 64),  # does not match its document
        Link(EQUIPMENT, "FOREIGN-NMI/REF-9", "SHA-256", "e" * 64),  # not in this log
    ]
    envelope, _ = _traced("LAB-1", "WORK-1", LAB, digests, to)
    envelopes.append(envelope)
    outcomes = submit_with_documents(seq, envelopes)
    assert all(getattr(o, "index", None) is not None for o in outcomes), outcomes

    for kind, certificate_id, key in (
        (statement.CertificateSuspend, SUSPENDED, LAB),
        (statement.CertificateWithdraw, WITHDRAWN, LAB),
        (statement.CertificateWithdraw, ROOT_WITHDRAWN, NMI),
    ):
        fields = kind(
            issuer_id=certificate_id.split("/", 1)[0],
            certificate_id=certificate_id,
            reason=f"{kind.TYPE} <for the page answers> & more",
        ).to_json(START)
        seq.submit(envelope_bytes(fields, key))

    state = ledger.trust_state()

    def sign(of: str, **changes: Any) -> str:
        cert = state.certificate(of)
        fields: dict[str, Any] = {
            "certificate_id": of,
            "document_sha256": bytes.fromhex(cert.document_sha256),
            "index": cert.events[0].index,
            "issued_at": int(START.timestamp()),
        }
        return ledger.sign_mark(mark.MarkClaims(**{**fields, **changes}))

    marks = {c: sign(c) for c in ALL}
    marks["other digest"] = sign(VALID, document_sha256=b"\x01" * 32)
    marks["other index"] = sign(VALID, index=1)
    marks["no such certificate"] = sign(VALID, certificate_id="LAB-1/NO-SUCH")
    marks["truncated"] = marks[VALID][:-3]
    last = marks[VALID][-1]
    marks["altered"] = marks[VALID][:-1] + ("A" if last != "A" else "B")
    marks["garbage"] = "<script>alert(1)</script>&amp;"

    latest = ledger.latest_checkpoint()
    text = latest.note.decode("utf-8").split("\n\n", 1)[0] + "\n"
    for n, signer in enumerate((W1, W2)):
        line = format_line(signer.cosign(text, int(START.timestamp()) + n))
        ledger.storage.add_cosignature(latest.size, str(signer.verifier), line, format_time(START))
    return Built(ledger, clock, marks)


# --- the requests -------------------------------------------------------------------

ZH = ((b"accept-language", b"zh-CN,zh;q=0.9,en;q=0.5"),)
ZH_COOKIE = ((b"cookie", b"lang=zh"),)


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    query: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    method: str = "GET"
    later: bool = False
    """On the clock after the certification certificate expired."""
    witnessed: bool = False
    """On the application that names the two witnesses."""


def cases(built: Built) -> list[Case]:
    out: list[Case] = []
    for name, token in built.marks.items():
        out.append(Case(f"m {name}", f"/m/{token}"))
        out.append(Case(f"m {name} zh", f"/m/{token}", "lang=zh"))
    for certificate_id in ALL:
        out.append(Case(f"c {certificate_id}", f"/c/{certificate_id}"))
        out.append(Case(f"c {certificate_id} zh", f"/c/{certificate_id}", headers=ZH))
        out.append(Case(f"c {certificate_id} witnessed", f"/c/{certificate_id}", witnessed=True))
    valid = built.marks[VALID]
    out += [
        Case("M valid", f"/M/{valid}"),
        Case("m valid lower case", f"/m/{valid.lower()}"),
        Case("m valid en query", f"/m/{valid}", "lang=en"),
        Case("m valid zh cookie", f"/m/{valid}", headers=ZH_COOKIE),
        Case("m valid zh accept-language", f"/m/{valid}", headers=ZH),
        Case("m valid cookie beats header", f"/m/{valid}", headers=(*ZH, (b"cookie", b"lang=en"))),
        Case("m valid unknown lang", f"/m/{valid}", "lang=fr"),
        Case("m valid other query", f"/m/{valid}", "a=1&lang=zh&b=%3Cx%3E&lang=en"),
        Case("m valid head", f"/m/{valid}", method="HEAD"),
        Case("m valid witnessed", f"/m/{valid}", witnessed=True),
        Case("m valid witnessed zh", f"/m/{valid}", "lang=zh", witnessed=True),
        Case("m working witnessed", f"/m/{built.marks[WORKING]}", witnessed=True),
        Case("m expiring later", f"/m/{built.marks[EXPIRING]}", later=True),
        Case("m expiring later zh", f"/m/{built.marks[EXPIRING]}", "lang=zh", later=True),
        Case("c expiring later", f"/c/{EXPIRING}", later=True),
        Case("m valid later", f"/m/{valid}", later=True),
        Case("m empty", "/m/"),
        Case("c unknown", "/c/LAB-1/NO-SUCH"),
        Case("c unknown zh", "/c/LAB-1/NO-SUCH", "lang=zh"),
        Case("c hostile", "/c/<b>\"'&amp;/x y"),
        Case("c too long", "/c/" + "A" * 299 + "/B"),
        Case("c no slash", "/c/NO-SLASH"),
        Case("verify", "/verify"),
        Case("verify zh", "/verify", "lang=zh"),
        Case("witnesses", "/witnesses"),
        Case("witnesses zh witnessed", "/witnesses", headers=ZH, witnessed=True),
    ]
    return out


# --- answers --------------------------------------------------------------------------


def _recorded(answer: Answer) -> dict[str, Any]:
    """An answer in the recording's form (JSON: text headers and body)."""
    return {
        "status": answer.status,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in answer.headers],
        "body": answer.body.decode("utf-8"),
    }


def answers(built: Built, hot_reads: bool = True) -> dict[str, dict[str, Any]]:
    """Every case's answer (status, headers, body) from a fresh application."""
    endpoints = [
        WitnessEndpoint.parse(f"http://witness.invalid/{n}={signer.verifier}")
        for n, signer in enumerate((W1, W2))
    ]
    # No lifespan is run: the witnesses are never asked (their cosignatures are stored).
    plain: FastAPI = create_app(built.ledger, hot_reads=hot_reads)
    witnessed = create_app(built.ledger, witnesses=endpoints, hot_reads=hot_reads)
    out: dict[str, dict[str, Any]] = {}
    try:
        for case in cases(built):
            built.clock.now = LATER if case.later else START
            app = witnessed if case.witnessed else plain
            scope = scope_for(case.method, case.path, case.query, case.headers)
            out[case.name] = _recorded(call(app, scope))
    finally:
        built.clock.now = START
        for app in (plain, witnessed):
            app.state.service.close()
    return out


def recorded() -> dict[str, dict[str, Any]]:
    value: dict[str, dict[str, Any]] = json.loads(gzip.decompress(ANSWERS.read_bytes()))
    return value


@pytest.fixture
def built(settings: Settings) -> Iterator[Built]:
    b = build(settings)
    yield b
    b.ledger.close()


@pytest.mark.parametrize("hot_reads", [True, False], ids=["hot-reads", "fastapi"])
def test_every_page_answer_is_as_recorded(built: Built, hot_reads: bool) -> None:
    expected = recorded()
    got = answers(built, hot_reads)
    assert sorted(got) == sorted(expected)
    differ = [name for name in expected if got[name] != expected[name]]
    for name in differ[:3]:  # the first differences, readable
        assert got[name]["status"] == expected[name]["status"], name
        assert got[name]["headers"] == expected[name]["headers"], name
        diff = difflib.unified_diff(
            expected[name]["body"].splitlines(), got[name]["body"].splitlines(), lineterm=""
        )
        raise AssertionError(f"{name}: the body differs\n" + "\n".join(diff))
    assert not differ


def test_the_cases_cover_every_verdict_and_language(built: Built) -> None:
    """The recorded answers are the cases they claim to be (else pinning them
    would prove little)."""
    got = recorded()
    verdicts = {
        name: a["body"].split('data-verdict="', 1)[1].split('"', 1)[0]
        for name, a in got.items()
        if 'data-verdict="' in a["body"]
    }
    assert verdicts[f"m {VALID}"] == "active"
    assert verdicts[f"m {SUPERSEDED}"] == "superseded"
    assert verdicts[f"m {SUSPENDED}"] == "suspended"
    assert verdicts[f"m {WITHDRAWN}"] == "withdrawn"
    assert verdicts["m expiring later"] == "expired"
    assert verdicts[f"m {EXPIRING}"] == "active"
    for name in ("truncated", "altered", "garbage", "other digest", "other index"):
        assert verdicts[f"m {name}"] == "invalid", name
    assert verdicts["m no such certificate"] == "invalid"
    assert verdicts["c unknown"] == "not_found"
    assert 'lang="zh-CN"' in got[f"m {VALID} zh"]["body"]
    assert 'lang="zh-CN"' in got[f"c {VALID} zh"]["body"]
    assert 'lang="zh-CN"' in got["m valid zh cookie"]["body"]
    assert 'lang="en"' in got["m valid cookie beats header"]["body"]
    working = got[f"c {WORKING}"]["body"]
    assert 'id="chain"' in working
    assert "link mismatch" in working
    assert 'data-status="external"' in working
    assert 'id="traceability-risk"' in got[f"c {REFERENCE}"]["body"]
    assert 'id="chain"' not in got[f"c {VALID}"]["body"]
    assert "witness.test/one" in got[f"c {VALID} witnessed"]["body"]
    assert "witness.test/one" not in got[f"c {VALID}"]["body"]
    assert any(k == "set-cookie" for k, _ in got[f"m {VALID} zh"]["headers"])
    assert got["m valid head"]["body"] == ""
    assert 'id="accreditations"' in got[f"c {VALID}"]["body"]


def main() -> None:
    """Records the answers of the code as it is now (review the diff)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        built = build(Settings(data_dir=Path(tmp) / "data"))
        try:
            got = answers(built)
            assert got == answers(built, hot_reads=False), "the hot reads answer otherwise"
        finally:
            built.ledger.close()
    ANSWERS.parent.mkdir(exist_ok=True)
    text = json.dumps(got, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    # mtime=0: the same answers make the same file.
    ANSWERS.write_bytes(gzip.compress(text.encode("utf-8"), 9, mtime=0))
    print(f"{ANSWERS}: {len(got)} answers", file=sys.stderr)


if __name__ == "__main__":
    main()
