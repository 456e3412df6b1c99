"""Ed25519 key files: PKCS#8 PEM private keys (passphrase-encrypted by default,
mode 0600) and SubjectPublicKeyInfo PEM public keys.

Private keys never leave this module as text: nothing here prints or logs them,
and a private key file that group or others can read is refused, as ssh does.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from registry.errors import KeyFileError
from registry.keys.demo_keys import DEMO_KEY_IDS
from verifier.errors import MalformedError
from verifier.keys import PublicKey, SigningKey

PASSPHRASE_ENV = "QILEDGER_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)


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


def read_private_key(path: Path, passphrase: bytes | None, *, demo: bool = False) -> SigningKey:
    """Load an Ed25519 PKCS#8 PEM private key.

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


def _load(path: Path, data: bytes, passphrase: bytes | None) -> SigningKey:
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    if encrypted and not passphrase:
        raise KeyFileError(f"key file {path} is encrypted; set {PASSPHRASE_ENV}")
    try:
        key = serialization.load_pem_private_key(data, passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        reason = "wrong passphrase or damaged file" if encrypted else "not a PEM private key"
        raise KeyFileError(f"cannot load key file {path}: {reason}") from None
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


def passphrase_from_env() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None
