"""One passphrase per key file: a passphrase file named for the key, then the
role's variable, then QILEDGER_KEY_PASSPHRASE, then a prompt on a terminal."""

from __future__ import annotations

import getpass
import io
import itertools
import json
import sys
from pathlib import Path

import pytest

from registry.cli.main import main as qiledger
from registry.config import Settings
from registry.demo import DEMO_DOCUMENTS
from registry.errors import KeyFileError
from registry.keys import keyfile
from registry.keys.keyfile import KeyRole, PassphraseSource
from registry.ledger import Ledger
from tests.helpers import key_from

ALL_VARIABLES = [keyfile.PASSPHRASE_ENV, *(role.env for role in KeyRole)]


@pytest.fixture(autouse=True)
def no_passphrase_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*ALL_VARIABLES, "QILEDGER_LOG_KEY_PASSPHRASE_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = qiledger(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_key(path: Path, passphrase: bytes | None, seed: str) -> Path:
    key = key_from(seed)
    keyfile.write_private_key(path.with_suffix(".key"), key, passphrase)
    keyfile.write_public_key(path.with_suffix(".pub.pem"), key.public_key)
    return path.with_suffix(".key")


# --- the passphrase file ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "passphrase"),
    [
        (b"pw", b"pw"),
        (b"pw\n", b"pw"),
        (b"pw\r\n", b"pw"),
        (b"pw\n\n", b"pw\n"),  # only the one trailing newline goes
        (b" pw \n", b" pw "),
        (b"\npw", b"\npw"),
        ("pässwörd\n".encode(), "pässwörd".encode()),
    ],
)
def test_passphrase_file_is_read_without_its_trailing_newline(
    tmp_path: Path, content: bytes, passphrase: bytes
) -> None:
    (tmp_path / "pw").write_bytes(content)
    assert keyfile.read_passphrase_file(tmp_path / "pw") == passphrase


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_empty_passphrase_file_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "pw").write_bytes(content)
    with pytest.raises(KeyFileError, match=f"passphrase file {tmp_path / 'pw'} is empty"):
        keyfile.read_passphrase_file(tmp_path / "pw")


def test_oversized_passphrase_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"x" * (keyfile.MAX_PASSPHRASE_FILE + 1))
    with pytest.raises(KeyFileError, match="larger than 4096 bytes"):
        keyfile.read_passphrase_file(tmp_path / "pw")
    longest = b"x" * (keyfile.MAX_PASSPHRASE_FILE - 1)
    (tmp_path / "pw").write_bytes(longest + b"\n")
    assert keyfile.read_passphrase_file(tmp_path / "pw") == longest


def test_endless_passphrase_file_is_refused() -> None:
    with pytest.raises(KeyFileError, match="larger than"):
        keyfile.read_passphrase_file(Path("/dev/zero"))


def test_missing_passphrase_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"cannot read passphrase file .*/nope"):
        keyfile.read_passphrase_file(tmp_path / "nope")


# --- resolution order ----------------------------------------------------------------

SOURCES = ("file", "role", "shared", "prompt")


@pytest.mark.parametrize(
    "present",
    [c for n in range(len(SOURCES) + 1) for c in itertools.combinations(SOURCES, n)],
    ids=lambda c: "+".join(c) or "none",
)
def test_first_source_present_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: tuple[str, ...]
) -> None:
    """Every subset of the four sources: the first in order gives the passphrase,
    and none gives an error naming the file, the option and both variables."""
    key_path = write_key(tmp_path / "body", b"from-" + (present or ("x",))[0].encode(), "b")
    file = None
    if "file" in present:
        file = tmp_path / "pw"
        file.write_bytes(b"from-file\n")
    if "role" in present:
        monkeypatch.setenv(KeyRole.BODY.env, "from-role")
    if "shared" in present:
        monkeypatch.setenv(keyfile.PASSPHRASE_ENV, "from-shared")
    prompts: list[str] = []
    if "prompt" in present:
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)

        def fake_getpass(prompt: str) -> str:
            prompts.append(prompt)
            return "from-prompt"

        monkeypatch.setattr(getpass, "getpass", fake_getpass)
    source = PassphraseSource(KeyRole.BODY, file, "--body-key-passphrase-file", prompt=True)
    if not present:
        with pytest.raises(KeyFileError) as info:
            keyfile.read_private_key(key_path, source)
        assert info.value.message == (
            f"key file {key_path} is encrypted; pass --body-key-passphrase-file FILE; "
            "set QILEDGER_BODY_KEY_PASSPHRASE or QILEDGER_KEY_PASSPHRASE"
        )
        return
    key = keyfile.read_private_key(key_path, source)
    assert key.public_key == key_from("b").public_key
    assert prompts == ([f"passphrase for {key_path}: "] if present == ("prompt",) else [])


def test_no_prompt_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_path = write_key(tmp_path / "log", b"secret", "l")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: pytest.fail("prompted"))
    with pytest.raises(KeyFileError, match="QILEDGER_LOG_KEY_PASSPHRASE"):
        keyfile.read_private_key(key_path, PassphraseSource(KeyRole.LOG))


def test_unencrypted_key_asks_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_path = write_key(tmp_path / "lab", None, "u")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: pytest.fail("prompted"))
    source = PassphraseSource(KeyRole.ISSUER, tmp_path / "missing", "--key-passphrase-file", True)
    assert keyfile.read_private_key(key_path, source).public_key == key_from("u").public_key


def test_wrong_passphrase_names_the_file_and_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path = write_key(tmp_path / "lab", b"right", "w")
    monkeypatch.setenv(KeyRole.ISSUER.env, "wrong")
    with pytest.raises(KeyFileError) as info:
        keyfile.read_private_key(key_path, PassphraseSource(KeyRole.ISSUER))
    assert info.value.message == (
        f"cannot load key file {key_path}: wrong passphrase or damaged file "
        "(passphrase from QILEDGER_ISSUER_KEY_PASSPHRASE)"
    )


def test_the_server_opens_the_log_key_with_its_own_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "d")
    Ledger.init(settings, origin="t.example/log", passphrase=b"log-pw").close()
    ledger = Ledger.open(settings)
    try:
        monkeypatch.setenv(keyfile.PASSPHRASE_ENV, "wrong")
        monkeypatch.setenv(KeyRole.LOG.env, "log-pw")  # the role's variable wins
        assert ledger.load_log_key().key.public_key == ledger.identity.public_key
        monkeypatch.delenv(KeyRole.LOG.env)
        with pytest.raises(KeyFileError, match="from QILEDGER_KEY_PASSPHRASE"):
            ledger.load_log_key()
    finally:
        ledger.close()


# --- the CLI: each key its own passphrase -------------------------------------------


def grant(tmp_path: Path, issuer: str, kind: str, covers: str, *extra: str) -> list[str]:
    return [
        *("accredit", "grant", "--body-key", str(tmp_path / "body.key"), "--body", "CNAS"),
        *("--issuer", issuer, "--issuer-name", issuer, "--issuer-kind", kind),
        *("--issuer-key", str(tmp_path / f"{issuer}.pub.pem"), "--number", f"N-{issuer}"),
        *("--standard", "ISO/IEC 17025:2017", "--scope", "all", "--covers", covers),
        *("--valid-from", "2020-01-01", "--valid-until", "2099-12-31", *extra),
    ]


def test_body_and_issuer_keys_with_their_own_passphrases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log key, the body key and the issuer key each have another passphrase:
    the log key's from its variable, the others from files or their variables."""
    d = ["--data-dir", str(tmp_path / "data")]
    monkeypatch.setenv(KeyRole.LOG.env, "log-pw")
    assert run(capsys, *d, "init")[0] == 0
    assert keyfile.read_private_key(tmp_path / "data" / "log.key", b"log-pw")
    (tmp_path / "body-pw").write_text("body-pw\n")
    (tmp_path / "cb-pw").write_text("cb-pw\n")
    for name in ("body", "CB-1"):
        pw_file = tmp_path / ("body-pw" if name == "body" else "cb-pw")
        argv = ["keygen", "--out", str(tmp_path / name), "--passphrase-file", str(pw_file)]
        assert run(capsys, *argv)[0] == 0
    body_pub = str(tmp_path / "body.pub.pem")
    add = ["body", "add", "--name", "CNAS", "--country", "CN", "--key", body_pub]
    assert run(capsys, *d, *add)[0] == 0

    # the body key: its file; without it, the log key's variable does not open it
    cb = grant(tmp_path, "CB-1", "certification_body", "management_system")
    code, _, err = run(capsys, *d, *cb)
    assert code == 1
    assert f"key file {tmp_path / 'body.key'} is encrypted; pass --body-key-passphrase-file" in err
    code, _, err = run(capsys, *d, *cb, "--body-key-passphrase-file", str(tmp_path / "body-pw"))
    assert code == 0, err

    # the issuer key: wrong in its variable, then right
    record = json.loads((DEMO_DOCUMENTS / "demo-certification.json").read_bytes())
    record["certification_body"]["id"] = "CB-1"
    (tmp_path / "record.json").write_text(json.dumps(record))
    issue = ["--json", "issue", str(tmp_path / "record.json"), "--key", str(tmp_path / "CB-1.key")]
    issue += ["--issuer", "CB-1"]
    monkeypatch.setenv(KeyRole.ISSUER.env, "body-pw")
    code, _, err = run(capsys, *d, *issue)
    assert code == 1
    detail = json.loads(err)["detail"]
    assert "wrong passphrase" in detail
    assert "QILEDGER_ISSUER_KEY_PASSPHRASE" in detail
    monkeypatch.setenv(KeyRole.ISSUER.env, "cb-pw")
    code, out, err = run(capsys, *d, *issue)
    assert code == 0, err
    assert json.loads(out)["certificate_id"] == f"CB-1/{record['certificate_number']}"
    monkeypatch.delenv(KeyRole.ISSUER.env)
    code, _, err = run(capsys, *d, *issue, "--key-passphrase-file", str(tmp_path / "cb-pw"))
    assert code == 0, err  # already registered, but signed again first

    # the body key from its variable
    monkeypatch.setenv(KeyRole.BODY.env, "body-pw")
    event = ["--body-key", str(tmp_path / "body.key"), "--body", "CNAS", "--issuer", "CB-1"]
    event += ["--number", "N-CB-1", "--reason", "audit"]
    assert run(capsys, *d, "accredit", "suspend", *event)[0] == 0
    assert run(capsys, *d, "fsck")[0] == 0


def test_the_one_old_passphrase_still_opens_every_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = ["--data-dir", str(tmp_path / "data")]
    monkeypatch.setenv(keyfile.PASSPHRASE_ENV, "one-for-all")
    assert run(capsys, *d, "init")[0] == 0
    for name in ("body", "LAB-1"):
        assert run(capsys, "keygen", "--out", str(tmp_path / name))[0] == 0
        assert b"ENCRYPTED" in (tmp_path / f"{name}.key").read_bytes()
    body_pub = str(tmp_path / "body.pub.pem")
    add = ["body", "add", "--name", "CNAS", "--country", "CN", "--key", body_pub]
    assert run(capsys, *d, *add)[0] == 0
    code, _, err = run(capsys, *d, *grant(tmp_path, "LAB-1", "calibration_laboratory", "dcc"))
    assert code == 0, err
    new = write_key(tmp_path / "new", None, "new")
    key_add = ["key", "add", "--issuer", "LAB-1", "--signing-key", str(tmp_path / "LAB-1.key")]
    key_add += ["--new-key", str(new.with_suffix(".pub.pem"))]
    assert run(capsys, *d, *key_add)[0] == 0


def test_a_new_key_without_a_passphrase_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "keygen", "--out", str(tmp_path / "k"))
    assert code == 1
    assert f"no passphrase for the new key {tmp_path / 'k.key'}: pass --passphrase-file" in err
    assert not (tmp_path / "k.key").exists()


def test_new_key_prompt_names_the_file_and_asks_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["typed", "typed", "one", "other"])
    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert run(capsys, "keygen", "--out", str(tmp_path / "k"))[0] == 0
    assert prompts == [f"passphrase for the new key {tmp_path / 'k.key'}: ", "again: "]
    assert keyfile.read_private_key(tmp_path / "k.key", b"typed")
    code, _, err = run(capsys, "keygen", "--out", str(tmp_path / "k2"))
    assert (code, err.strip()) == (1, "qiledger: error: the passphrases differ")


def test_init_takes_the_log_key_passphrase_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pw").write_text("file-pw\n")
    argv = ["--data-dir", str(tmp_path / "d"), "--log-key-passphrase-file", str(tmp_path / "pw")]
    assert run(capsys, *argv, "init")[0] == 0
    assert keyfile.read_private_key(tmp_path / "d" / "log.key", b"file-pw")


def test_log_key_passphrase_file_opens_the_log_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pw").write_text("file-pw\n")
    argv = ["--data-dir", str(tmp_path / "d"), "--log-key-passphrase-file", str(tmp_path / "pw")]
    assert run(capsys, *argv, "init")[0] == 0
    body = write_key(tmp_path / "body", None, "body")
    add = ["body", "add", "--name", "CNAS", "--country", "CN"]
    add += ["--key", str(body.with_suffix(".pub.pem"))]
    code, _, err = run(capsys, *argv, *add)
    assert code == 0, err
