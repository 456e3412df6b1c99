"""Ed25519 key files: PKCS#8 PEM private keys (passphrase-encrypted by default,
mode 0600) and SubjectPublicKeyInfo PEM public keys.

Private keys never leave this module as text: nothing here prints or logs them,
and a private key file that group or others can read is refused, as ssh does.

Each key file has its own passphrase (:class:`PassphraseSource`), asked for only
when the file is encrypted; first found wins:

1. a passphrase file named for that key (the CLI's ``--…-passphrase-file``),
2. the variable of the key's role: QILEDGER_LOG_KEY_PASSPHRASE,
   QILEDGER_BODY_KEY_PASSPHRASE or QILEDGER_ISSUER_KEY_PASSPHRASE,
3. QILEDGER_KEY_PASSPHRASE, the one passphrase for all keys of older setups,
4. a prompt naming the file, if the caller allows one and stdin is a terminal;

else a :class:`KeyFileError` naming the file and where a passphrase could come
from.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from registry.config import Settings
from registry.errors import KeyFileError
from registry.keys.demo_keys import DEMO_KEY_IDS
from verifier.errors import MalformedError
from verifier.keys import PublicKey, SigningKey

PASSPHRASE_ENV = "QILEDGER_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
"""The fallback for every key file without a passphrase of its own."""


class KeyRole(Enum):
    """Whose key a file holds; each role has its own passphrase variable."""

    LOG = "log"
    BODY = "body"
    ISSUER = "issuer"

    @property
    def env(self) -> str:
        return f"QILEDGER_{self.name}_KEY_PASSPHRASE"


@dataclass(frozen=True)
class PassphraseSource:
    """Where one key file's passphrase comes from (order in the module docstring).

    ``role`` None (a key of any role, e.g. ``qiledger sign --key``) skips the
    role variable; ``option`` is the command-line option that names ``file``,
    so an error can say what to pass.
    """

    role: KeyRole | None = None
    file: Path | None = None
    option: str | None = None
    prompt: bool = False

    def for_key(self, path: Path) -> tuple[bytes, str]:
        """The passphrase of the existing key file ``path`` and where it came from."""
        found = self._given()
        if found is not None:
            return found
        if self.prompt and sys.stdin.isatty():
            return getpass.getpass(f"passphrase for {path}: ").encode("utf-8"), "the prompt"
        raise KeyFileError(f"key file {path} is encrypted; {self._choices()}")

    def for_new_key(self, path: Path, *, unencrypted: bool) -> bytes | None:
        """The passphrase to encrypt a new key file ``path`` with; None stores it
        unencrypted, which only ``unencrypted`` (--no-passphrase) allows."""
        found = self._given()
        if found is not None:
            return found[0]
        if unencrypted:
            return None
        if self.prompt and sys.stdin.isatty():
            first = getpass.getpass(f"passphrase for the new key {path}: ")
            if first != getpass.getpass("again: "):
                raise KeyFileError("the passphrases differ")
            if not first:
                raise KeyFileError(
                    "empty passphrase; use --no-passphrase to store the key unencrypted"
                )
            return first.encode("utf-8")
        raise KeyFileError(
            f"no passphrase for the new key {path}: {self._choices()}, or pass --no-passphrase"
        )

    def _given(self) -> tuple[bytes, str] | None:
        """A passphrase given without asking: the file, then the variables."""
        if self.file is not None:
            return read_passphrase_file(self.file), str(self.file)
        for name in self._variables():
            value = os.environ.get(name)
            if value:
                return value.encode("utf-8"), name
        return None

    def _variables(self) -> list[str]:
        return [self.role.env, PASSPHRASE_ENV] if self.role else [PASSPHRASE_ENV]

    def _choices(self) -> str:
        ways = [f"pass {self.option} FILE"] if self.option else []
        ways.append("set " + " or ".join(self._variables()))
        return "; ".join(ways)


MAX_PASSPHRASE_FILE = 4096


def read_passphrase_file(path: Path) -> bytes:
    """A passphrase file's content without its trailing newline (as ``echo`` or
    an editor leave one); an empty passphrase is refused."""
    try:
        with path.open("rb") as file:  # bounded: the path may name /dev/zero or a log
            data = file.read(MAX_PASSPHRASE_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if len(data) > MAX_PASSPHRASE_FILE:
        raise KeyFileError(
            f"passphrase file {path} is larger than {MAX_PASSPHRASE_FILE} bytes; "
            "is it the right file?"
        )
    passphrase = data.removesuffix(b"\n").removesuffix(b"\r")
    if not passphrase:
        raise KeyFileError(f"passphrase file {path} is empty")
    return passphrase


def log_key_passphrase(settings: Settings) -> PassphraseSource:
    """Where the log key's passphrase comes from under ``settings``."""
    return PassphraseSource(
        KeyRole.LOG,
        settings.log_key_passphrase_file,
        "--log-key-passphrase-file",
        prompt=settings.passphrase_prompt,
    )


def write_private_key(path: Path, key: SigningKey, passphrase: bytes | None) -> None:
    """Create ``path`` (never overwrite) with mode 0600 holding the PKCS#8 PEM."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(key.seed())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def write_public_key(path: Path, key: PublicKey) -> None:
    try:
        path.write_bytes(key.to_pem())
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None


def read_private_key(
    path: Path, passphrase: bytes | PassphraseSource | None, *, demo: bool = False
) -> SigningKey:
    """Load an Ed25519 PKCS#8 PEM private key; a :class:`PassphraseSource` is
    asked only if the file is encrypted.

    Refuses group/world-readable files, and the public demo keys of
    ``keys.example/`` unless ``demo`` (whose files may be world-readable: they
    are public anyway).
    """
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    key = _load(path, data, passphrase)
    if key.public_key.key_id in DEMO_KEY_IDS:
        if not demo:
            raise KeyFileError(
                f"{path} holds the public demo key '{DEMO_KEY_IDS[key.public_key.key_id]}' "
                "from keys.example/; it is refused outside --demo"
            )
        return key
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    return key


def _load(path: Path, data: bytes, passphrase: bytes | PassphraseSource | None) -> SigningKey:
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    secret, origin = None, ""
    if encrypted:
        if isinstance(passphrase, PassphraseSource):
            secret, origin = passphrase.for_key(path)
            origin = f" (passphrase from {origin})"
        elif not passphrase:
            raise KeyFileError(f"key file {path} is encrypted; set {PASSPHRASE_ENV}")
        else:
            secret = passphrase
    try:
        key = serialization.load_pem_private_key(data, secret)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        reason = "wrong passphrase or damaged file" if encrypted else "not a PEM private key"
        raise KeyFileError(f"cannot load key file {path}: {reason}{origin}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} does not hold an Ed25519 key")
    return SigningKey.from_seed(key.private_bytes_raw())


def read_public_key(path: Path) -> PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    try:
        return PublicKey.from_pem(data)
    except MalformedError as exc:
        raise KeyFileError(f"{path}: {exc.message}") from None
