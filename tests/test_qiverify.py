"""``qiverify mark`` and ``qiverify document`` against a real ``qiledger serve``:
marks from real receipts, QR images rendered with ``qrcode`` and read back with
zxing-cpp, and a small relay in front of the real server that alters what it sends
(a forged checkpoint, a broken proof, a lie about the status, a fork) — a test
double of the registry's answers, never of the verifier. Every hostile input gets
its exit code and one line of explanation, never a traceback."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import qrcode
from PIL import Image

from registry.ledger import Ledger
from tests.helpers import key_from
from tests.test_http_edges import Server, _envelope, _new_registry, bearer, dcc
from verifier import checkpoint, dsse, jcs, mark, statement
from verifier.cli import main as qiverify
from verifier.encoding import b64encode
from verifier.keys import SigningKey
from verifier.note import NoteVerifier

LAB = key_from("lab-1")
VALID, SUSPENDED, LATER = "QV-VALID-1", "QV-SUSPENDED-1", "QV-LATER-1"

Alter = Callable[[str, bytes], bytes | None]


class Relay:
    """An HTTP server in front of the real registry that passes every answer
    through :attr:`alter` (``None``: answer 500 instead)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.alter: Alter = lambda path, body: body
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    url = relay.upstream + self.path  # http: the real server
                    with urllib.request.urlopen(url, timeout=30) as got:  # noqa: S310
                        status, body = got.status, got.read()
                        kind = got.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
                    kind = exc.headers.get("Content-Type", "application/json")
                changed = relay.alter(self.path, body)
                if changed is None:
                    status, changed = 500, b"{}"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(changed)))
                self.end_headers()
                self.wfile.write(changed)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Served:
    server: Server
    settings: Any
    tokens: dict[str, str]
    vkey: str
    log_key: SigningKey
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.parse(self.vkey)

    def register(self, number: str) -> dict[str, Any]:
        document = dcc(number)
        response = httpx.post(
            f"{self.url}/api/v1/certificates",
            files={
                "document": ("dcc.xml", document),
                "envelope": ("envelope.json", _envelope(document, self.settings)),
            },
            headers=bearer(self.tokens["lab"]),
            timeout=60,
        )
        assert response.status_code == 201, response.text
        receipt: dict[str, Any] = response.json()
        self.receipts[number], self.documents[number] = receipt, document
        return receipt


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("qiverify")
    settings, tokens = _new_registry(root / "data")
    ledger = Ledger.open(settings)
    try:
        vkey, log_key = str(ledger.identity.verifier), ledger.sequencer.signer.key
    finally:
        ledger.close()
    server = Server.start(settings, root / "server.log")
    try:
        registry = Served(server, settings, tokens, vkey, log_key)
        registry.register(VALID)
        registry.register(SUSPENDED)
        suspend = statement.CertificateSuspend(
            issuer_id="LAB-1", certificate_id=f"LAB-1/{SUSPENDED}", reason="audit pending"
        )
        envelope = dsse.sign(suspend.encode(datetime.now(UTC)), LAB)
        response = httpx.post(
            f"{server.url}/api/v1/statements",
            content=jcs.canonical_bytes(envelope.to_json()),
            headers={**bearer(tokens["lab"]), "Content-Type": "application/json"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        yield registry
    finally:
        server.stop()


@pytest.fixture
def relay(served: Served) -> Iterator[Relay]:
    relay = Relay(served.url)
    yield relay
    relay.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """qiverify with ``--json``: its exit code and its one JSON object."""
    code = qiverify([*argv, "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["exit_code"] == code
    return code, report


def results(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["result"] for c in report["checks"]}


def png(path: Path, *texts: str) -> str:
    """A PNG holding one QR code per text, side by side (none: a blank image)."""
    images = [qrcode.make(t, error_correction=qrcode.constants.ERROR_CORRECT_M) for t in texts]
    width = sum(i.pixel_size for i in images) or 200
    height = max((i.pixel_size for i in images), default=200)
    canvas = Image.new("L", (width, height), 255)
    x = 0
    for image in images:
        canvas.paste(image.get_image(), (x, 0))
        x += image.pixel_size
    canvas.save(path, format="PNG")
    return str(path)


def signed_mark(served: Served, claims: mark.MarkClaims, key: SigningKey | None = None) -> str:
    """A mark signed with the registry's own log key (or ``key``, a foreign log's)."""
    if key is None:
        return mark.sign(claims, served.log_key, served.verifier)
    return mark.sign(claims, key, NoteVerifier.for_key("other.example/log", key.public_key))


# --- marks, offline -----------------------------------------------------------------------


def test_a_printed_mark_verifies_offline_from_its_png(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = served.receipts[VALID]
    image = png(tmp_path / "mark.png", receipt["mark_url"])
    code, report = run(capsys, "mark", image, "--log-key", served.vkey)
    assert code == 0, report
    assert report["qr_text"] == receipt["mark_url"]
    assert report["certificate_id"] == f"LAB-1/{VALID}"
    assert report["document_sha256"] == hashlib.sha256(served.documents[VALID]).hexdigest()
    assert report["log_index"] == receipt["index"]
    assert report["log"] == served.verifier.name
    assert results(report)["mark signature"] == "ok"
    assert results(report)["live status"] == "not checked"

    # Human output, the log key from a file.
    (tmp_path / "log.vkey").write_text(served.vkey + "\n")
    assert qiverify(["mark", image, "--log-key", str(tmp_path / "log.vkey")]) == 0
    out = capsys.readouterr().out
    assert f"certificate id: LAB-1/{VALID}" in out
    assert "VERDICT: authentic and valid" in out


def _mixed(text: str) -> str:
    return "".join(c.lower() if i % 2 else c.upper() for i, c in enumerate(text))


@pytest.mark.parametrize(
    "spelling", [str.upper, str.lower, _mixed], ids=["upper", "lower", "mixed"]
)
def test_mark_urls_and_tokens_in_any_case(
    served: Served, capsys: pytest.CaptureFixture[str], spelling: Callable[[str], str]
) -> None:
    receipt = served.receipts[VALID]
    for value in (receipt["mark_url"], receipt["mark"]):
        code, report = run(capsys, "mark", spelling(value), "--log-key", served.vkey)
        assert code == 0, report
        assert report["certificate_id"] == f"LAB-1/{VALID}"


def _altered(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t[:-7],
        lambda t: t[:20],
        _altered,
        lambda t: t + "AAAA",
        lambda t: t * 40,
        lambda t: "A" * 100_000,
        lambda t: t[:10] + "0189" + t[14:],  # not base32
        lambda t: "",
    ],
    ids=["truncated", "cut", "altered", "extended", "oversized", "huge", "not-base32", "empty"],
)
def test_damaged_tokens_are_not_authentic(
    served: Served, capsys: pytest.CaptureFixture[str], damage: Callable[[str], str]
) -> None:
    token = damage(served.receipts[VALID]["mark"])
    for value in (token, f"HTTPS://REGISTRY.EXAMPLE/M/{token}"):
        code, report = run(capsys, "mark", value, "--log-key", served.vkey)
        assert code == 2, report
        assert report["verdict"] == "not authentic or not found"
        assert "failed" in results(report).values()


def test_a_foreign_logs_mark_is_not_authentic(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = mark.MarkClaims(f"LAB-1/{VALID}", b"\x11" * 32, 2, 1_800_000_000)
    token = signed_mark(served, claims, key_from("another log"))
    code, report = run(capsys, "mark", token, "--log-key", served.vkey)
    assert code == 2
    assert results(report)["mark signature"] == "failed"
    assert "foreign_log" in report["error"]


def test_images_without_exactly_one_mark_qr_are_refused(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = served.receipts[VALID]["mark_url"]
    cases = {
        "none": png(tmp_path / "none.png"),
        "two": png(tmp_path / "two.png", url, served.receipts[SUSPENDED]["mark_url"]),
        "other": png(tmp_path / "other.png", "https://example.com/not-a-mark"),
        "text": png(tmp_path / "text.png", "hello, I am a QR code"),
    }
    expected = {
        "none": "no QR code",
        "two": "2 QR codes",
        "other": "not a QI Ledger mark URL",
        "text": "not base32",
    }
    for name, image in cases.items():
        code, report = run(capsys, "mark", image, "--log-key", served.vkey)
        assert code == 2, (name, report)
        if name != "text":
            assert expected[name] in report["error"], report
    # A file that is no image, and one that is not there: could not check.
    (tmp_path / "notes.png").write_bytes(b"this is not a PNG")
    for path in (tmp_path / "notes.png", tmp_path / "missing.png"):
        code, report = run(capsys, "mark", str(path), "--log-key", served.vkey)
        assert code == 3, report
        assert report["verdict"] == "could not check"


# --- marks, online ------------------------------------------------------------------------


def test_a_valid_mark_online(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = png(tmp_path / "mark.png", served.receipts[VALID]["mark_url"])
    state = str(tmp_path / "state.json")
    argv = ["mark", image, "--log-key", served.vkey, "--online", served.url, "--state", state]
    code, report = run(capsys, *argv)
    assert code == 0, report
    assert report["status"] == "Active"
    checks = results(report)
    for name in (
        "mark signature",
        "certificate in registry",
        "checkpoint signature",
        "consistency with the last checkpoint seen",
        f"entry {served.receipts[VALID]['index']}",
        "document digest",
        "mark's log index",
        "log contents",
        "trust replay",
        "issuer signature",
        "issuer key and accreditation at log time",
        "status",
    ):
        assert checks[name] == "ok", (name, report)
    assert "not checked" not in checks.values()
    assert json.loads(Path(state).read_text())["logs"][served.vkey].startswith(
        served.verifier.name + "\n"
    )
    # Human output
    assert qiverify(argv) == 0
    out = capsys.readouterr().out
    assert "OK     trust replay" in out
    assert out.rstrip().endswith("authentic and valid")


def test_a_suspended_certificate_is_authentic_but_not_valid(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state.json")
    argv = ["--log-key", served.vkey, "--state", state]
    code, report = run(
        capsys, "mark", served.receipts[SUSPENDED]["mark_url"], "--online", served.url, *argv
    )
    assert (code, report["status"], report["reason"]) == (1, "Suspended", "audit pending")
    assert report["verdict"] == "authentic but not valid"
    path = tmp_path / "suspended.xml"
    path.write_bytes(served.documents[SUSPENDED])
    code, report = run(capsys, "document", str(path), "--registry", served.url, *argv)
    assert (code, report["status"]) == (1, "Suspended")


def test_a_signed_mark_of_an_unknown_certificate(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    claims = mark.MarkClaims("LAB-1/NEVER-ISSUED", b"\x22" * 32, 0, 1_800_000_000)
    token = signed_mark(served, claims)
    state = str(tmp_path / "state.json")
    assert run(capsys, "mark", token, "--log-key", served.vkey)[0] == 0  # the log signed it
    code, report = run(
        capsys, "mark", token, "--log-key", served.vkey, "--online", served.url, "--state", state
    )
    assert code == 2
    assert results(report)["certificate in registry"] == "failed"


def test_a_mark_naming_the_wrong_entry_or_digest(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    receipt = served.receipts[VALID]
    digest = hashlib.sha256(served.documents[VALID]).digest()
    state = str(tmp_path / "state.json")
    online = ["--log-key", served.vkey, "--online", served.url, "--state", state]
    wrong_index = mark.MarkClaims(f"LAB-1/{VALID}", digest, 0, 1_800_000_000)
    code, report = run(capsys, "mark", signed_mark(served, wrong_index), *online)
    assert (code, results(report)["mark's log index"]) == (2, "failed")
    wrong_digest = mark.MarkClaims(f"LAB-1/{VALID}", b"\x33" * 32, receipt["index"], 1)
    code, report = run(capsys, "mark", signed_mark(served, wrong_digest), *online)
    assert (code, results(report)["document digest"]) == (2, "failed")


# --- documents ----------------------------------------------------------------------------


def test_a_registered_document_and_the_state_file(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dcc.xml"
    path.write_bytes(served.documents[VALID])
    state = tmp_path / "state" / "checkpoints.json"
    argv = ["document", str(path), "--registry", served.url, "--log-key", served.vkey]
    argv += ["--state", str(state)]
    code, report = run(capsys, *argv)
    assert code == 0, report
    assert report["certificates"] == [f"LAB-1/{VALID}"]
    assert "first checkpoint seen" in report["checks"][3]["detail"] or any(
        "first checkpoint seen" in c["detail"] for c in report["checks"]
    )
    size = report["tree_size"]
    code, report = run(capsys, *argv)
    assert code == 0
    assert any("the same tree of size" in c["detail"] for c in report["checks"])
    # The log grows; the next run proves the new checkpoint extends the saved one.
    served.register(f"{LATER}-{size}")
    code, report = run(capsys, *argv)
    assert code == 0, report
    assert report["tree_size"] > size
    assert any(f"consistent with size {size}" in c["detail"] for c in report["checks"])
    # Human output names every check.
    assert qiverify(argv) == 0
    assert "OK     issuer signature" in capsys.readouterr().out


def test_without_a_replay_it_says_what_it_did_not_check(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dcc.xml"
    path.write_bytes(served.documents[VALID])
    code, report = run(
        capsys,
        "document",
        str(path),
        "--registry",
        served.url,
        "--log-key",
        served.vkey,
        "--state",
        str(tmp_path / "s.json"),
        "--max-replay",
        "1",
    )
    assert code == 0, report
    checks = results(report)
    assert checks["issuer signature"] == "not checked"
    assert checks["issuer key and accreditation at log time"] == "not checked"
    assert checks["status"] == "not checked"
    assert checks[f"entry {served.receipts[VALID]['index']}"] == "ok"


def test_an_unregistered_document_is_not_found(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dcc.xml"
    path.write_bytes(dcc("NEVER-REGISTERED"))
    code, report = run(
        capsys, "document", str(path), "--registry", served.url, "--log-key", served.vkey
    )
    assert code == 2
    assert results(report)["registered"] == "failed"


def _document_argv(served: Served, url: str, tmp_path: Path, state: str = "s.json") -> list[str]:
    path = tmp_path / "dcc.xml"
    path.write_bytes(served.documents[VALID])
    return [
        "document",
        str(path),
        "--registry",
        url,
        "--log-key",
        served.vkey,
        "--state",
        str(tmp_path / state),
    ]


def test_could_not_check(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _document_argv(served, served.url, tmp_path)
    # Nobody listens on the relay's port once it is closed.
    gone = Relay(served.url)
    gone.close()
    code, report = run(capsys, *argv[:3], gone.url, *argv[4:])
    assert (code, report["verdict"]) == (3, "could not check")
    assert "cannot reach" in report["error"]
    # A local file that is not there; a log key that is no key; a wrong command line.
    code, report = run(capsys, "document", str(tmp_path / "nope.xml"), *argv[2:])
    assert code == 3
    assert "cannot read" in report["error"]
    code, report = run(capsys, *argv[:5], "a+b+c", *argv[6:])
    assert code == 3
    assert "log key" in report["error"]
    assert qiverify(["document", "--registry", served.url]) == 3
    assert "usage" in capsys.readouterr().err
    assert qiverify(["mark", "X", "--log-key", served.vkey, "--online", "ftp://x"]) == 3
    assert "COULD NOT CHECK" in capsys.readouterr().err
    # A state file that is not one.
    (tmp_path / "s.json").write_text("[1, 2]")
    code, report = run(capsys, *argv)
    assert code == 3
    assert "not a qiverify state file" in report["error"]


def test_a_registry_error_is_could_not_check(
    served: Served, relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relay.alter = lambda path, body: None if "/log/entries/" in path else body
    code, report = run(capsys, *_document_argv(served, relay.url, tmp_path))
    assert code == 3, report
    assert "HTTP 500" in report["error"]


def _forged_checkpoint(body: bytes) -> bytes:
    """The same note with one byte of its root changed (its signature no longer fits)."""
    origin, size, root, rest = body.decode().split("\n", 3)
    raw = bytearray(base64.b64decode(root))
    raw[0] ^= 1
    return "\n".join([origin, size, b64encode(bytes(raw)), rest]).encode()


def _in_json(field_name: str, change: Callable[[Any], Any]) -> Callable[[bytes], bytes]:
    def alter(body: bytes) -> bytes:
        value = json.loads(body)
        value[field_name] = change(value[field_name])
        return json.dumps(value).encode()

    return alter


def _flip_first(hashes: list[str]) -> list[str]:
    raw = bytearray(base64.b64decode(hashes[0]))
    raw[-1] ^= 0x80
    return [b64encode(bytes(raw)), *hashes[1:]]


@pytest.mark.parametrize(
    ("route", "change", "failed"),
    [
        ("/api/v1/log/checkpoint", _forged_checkpoint, "checkpoint signature"),
        (
            "/api/v1/log/entries/",
            _in_json("inclusion_proof", _flip_first),
            "entry {index}",
        ),
        (
            "/api/v1/log/entries/",
            _in_json("checkpoint", lambda note: _forged_checkpoint(note.encode()).decode()),
            "entry {index}",
        ),
        ("/api/v1/log/entries/", lambda body: b"<html>not json", "entry {index}"),
        ("/api/v1/certificates/", _in_json("history", lambda h: h[:0]), "registry answer"),
        ("/tile/entries/", lambda body: body[:-1], "log contents"),
        ("/api/v1/certificates/", lambda body: body + b" " * (16 << 20), "certificate in registry"),
    ],
    ids=["checkpoint", "proof", "pinned-checkpoint", "not-json", "no-history", "bundle", "huge"],
)
def test_a_registry_sending_what_does_not_verify(
    served: Served,
    relay: Relay,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    route: str,
    change: Callable[[bytes], bytes],
    failed: str,
) -> None:
    relay.alter = lambda path, body: change(body) if path.startswith(route) else body
    index = served.receipts[VALID]["index"]
    mark_argv = ["mark", served.receipts[VALID]["mark"], "--log-key", served.vkey]
    mark_argv += ["--online", relay.url, "--state", str(tmp_path / "m.json")]
    for argv in (_document_argv(served, relay.url, tmp_path), mark_argv):
        code, report = run(capsys, *argv)
        assert code == 2, report
        assert results(report)[failed.format(index=index)] == "failed", report


def test_a_registry_lying_about_the_status(
    served: Served, relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry's status answer says Active; its own log says Suspended."""
    relay.alter = lambda path, body: (
        _in_json("status", lambda s: "Active")(body)
        if path.startswith("/api/v1/certificates/")
        else body
    )
    code, report = run(
        capsys,
        "mark",
        served.receipts[SUSPENDED]["mark"],
        "--log-key",
        served.vkey,
        "--online",
        relay.url,
        "--state",
        str(tmp_path / "s.json"),
    )
    assert code == 2
    assert results(report)["status"] == "failed"
    assert "its own log says Suspended" in report["error"]


def test_a_forked_log_is_caught_by_the_state_file(
    served: Served, relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints properly signed with the log key, but not of the tree this user saw:
    the same size with another root, and a larger tree that does not extend it."""
    argv = _document_argv(served, relay.url, tmp_path)
    assert run(capsys, *argv)[0] == 0
    saved = (tmp_path / "s.json").read_text()
    real = checkpoint.verify(
        httpx.get(f"{served.url}/api/v1/log/checkpoint").content, served.verifier
    )

    def fork(size: int) -> bytes:
        forked = checkpoint.Checkpoint(real.checkpoint.origin, size, b"\x44" * 32)  # type: ignore[arg-type]
        return checkpoint.sign(forked, served.log_key)

    for size in (real.checkpoint.size, real.checkpoint.size + 5):
        relay.alter = lambda path, body, s=size: (
            fork(s) if path == "/api/v1/log/checkpoint" else body
        )
        code, report = run(capsys, *argv)
        assert code == 2, report
        assert results(report)["consistency with the last checkpoint seen"] == "failed"
        # The evidence of the fork does not replace what this user saw.
        assert (tmp_path / "s.json").read_text() == saved


def test_importing_the_verifier_cli_loads_no_image_library() -> None:
    code = "import sys, verifier.cli; print(sorted({'zxingcpp', 'PIL'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_console_script_shows_no_traceback(served: Served, tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    for argv, expected in (
        (["mark", "AAAA", "--log-key", served.vkey], 2),
        (["mark", str(tmp_path / "bad.png"), "--log-key", served.vkey], 3),
        (["mark"], 3),
    ):
        result = subprocess.run(
            [str(bindir / "qiverify"), *argv], capture_output=True, text=True, check=False
        )
        assert result.returncode == expected, result.stderr
        assert "Traceback" not in result.stderr


def test_the_single_evidence_commands_share_the_exit_codes(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = served.receipts[VALID]["index"]
    proof = httpx.get(f"{served.url}/api/v1/log/proof/inclusion", params={"index": index}).json()
    leaf = httpx.get(f"{served.url}/api/v1/log/entries/{index}").json()
    (tmp_path / "p").write_text(proof["tlog_proof"])
    (tmp_path / "e").write_bytes(base64.b64decode(leaf["leaf_data"]))
    (tmp_path / "bad-e").write_bytes(base64.b64decode(leaf["leaf_data"]) + b" ")
    (tmp_path / "cp").write_text(proof["checkpoint"])
    (tmp_path / "bad-cp").write_bytes(_forged_checkpoint(proof["checkpoint"].encode()))
    key = ["--log-key", served.vkey]
    code, report = run(capsys, "inclusion", str(tmp_path / "p"), str(tmp_path / "e"), *key)
    assert (code, report["index"], results(report)) == (0, index, {"inclusion proof": "ok"})
    assert run(capsys, "inclusion", str(tmp_path / "p"), str(tmp_path / "bad-e"), *key)[0] == 2
    assert run(capsys, "inclusion", str(tmp_path / "p"), str(tmp_path / "none"), *key)[0] == 3
    assert run(capsys, "checkpoint", str(tmp_path / "cp"), *key)[0] == 0
    assert run(capsys, "checkpoint", str(tmp_path / "bad-cp"), *key)[0] == 2
    assert qiverify(["checkpoint", str(tmp_path / "cp"), *key]) == 0
    assert capsys.readouterr().out.startswith(f"OK: checkpoint of {served.verifier.name}")
    assert qiverify(["--help"]) == 0
    assert qiverify([]) == 3
    assert qiverify(["no-such-command"]) == 3


@pytest.mark.parametrize("query", [{}, {"size_mm": "20", "dpi": "300", "caption": "true"}])
def test_the_registrys_own_mark_image_verifies(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], query: dict[str, str]
) -> None:
    image = httpx.get(f"{served.url}/api/v1/marks/png/LAB-1/{VALID}", params=query, timeout=30)
    assert image.status_code == 200, image.text
    (tmp_path / "mark.png").write_bytes(image.content)
    code, report = run(
        capsys,
        "mark",
        str(tmp_path / "mark.png"),
        "--log-key",
        served.vkey,
        "--online",
        served.url,
        "--state",
        str(tmp_path / "s.json"),
    )
    assert code == 0, report
    assert report["certificate_id"] == f"LAB-1/{VALID}"
    assert report["qr_text"].startswith("HTTP://127.0.0.1:")
