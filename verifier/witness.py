"""A C2SP tlog-witness (https://c2sp.org/tlog-witness): cosign a log's checkpoint only
if it extends the last one this witness cosigned for that log.

:meth:`Witness.add_checkpoint` takes the body of ``POST /add-checkpoint``::

    old <size>\\n
    <base64 consistency proof hash>\\n   (0 to 63 lines)
    \\n
    <signed checkpoint note>

and answers the cosignature line(s), or raises a :class:`WitnessRefusal` carrying
the HTTP status the spec prescribes: 400 malformed (or old size above the
checkpoint's), 404 unknown origin, 403 no valid signature by the log's key, 409 old
size is not the size last cosigned (the refusal carries that size) or same size
with another root, 422 the consistency proof does not verify.

The state (per origin: the size and root last cosigned) is saved atomically (temp
file, fsync, rename, fsync of the directory) *before* the answer, and check and
update happen under one lock: a witness that crashes or restarts never cosigns a
tree that does not extend one it cosigned before.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from verifier import checkpoint, merkle, note
from verifier.cosignature import CosignatureSigner, format_line
from verifier.encoding import b64decode, b64encode
from verifier.errors import MalformedError, ProofError, QILedgerError
from verifier.merkle import Hash

MAX_PROOF_LINES = 63
MAX_BODY = 64 << 10
"""Largest request body taken: 63 proof lines and a checkpoint with room for many
signatures (a C2SP checkpoint is about 100 bytes, each signature line about 100)."""
STATE_VERSION = 1


class WitnessRefusal(QILedgerError):
    """The witness does not cosign; ``status`` is the HTTP status C2SP prescribes."""

    code = "witness_refused"
    status = 400


class BadRequest(WitnessRefusal):
    code = "malformed"
    status = 400


class UnknownLog(WitnessRefusal):
    code = "unknown_log"
    status = 404


class Forbidden(WitnessRefusal):
    code = "signature_invalid"
    status = 403


class Conflict(WitnessRefusal):
    """``size`` is the size of the latest checkpoint cosigned for the origin."""

    code = "conflict"
    status = 409

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class Unprocessable(WitnessRefusal):
    code = "proof_invalid"
    status = 422


class WitnessStateError(WitnessRefusal):
    """The state could not be saved: nothing is cosigned."""

    code = "witness_state"
    status = 500


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed ``add-checkpoint`` request body (nothing verified yet)."""

    old_size: int
    proof: tuple[Hash, ...]
    note: bytes


@dataclass(frozen=True)
class Cosigned:
    """What the witness last cosigned of one log."""

    size: int
    root: Hash


def parse_request(body: bytes) -> AddCheckpoint:
    """Split a request body strictly; MalformedError for anything else."""
    if len(body) > MAX_BODY:
        raise MalformedError("add-checkpoint body is too large")
    head, sep, cp_note = body.partition(b"\n\n")
    if not sep:
        raise MalformedError("add-checkpoint body has no empty line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise MalformedError("add-checkpoint old size and proof lines are not ASCII") from None
    first, proof_lines = lines[0], lines[1:]
    size_text = first.removeprefix("old ")
    if (
        first == size_text
        or not size_text.isdigit()
        or not size_text.isascii()
        or (size_text != "0" and size_text.startswith("0"))
        or len(size_text) > len(str(checkpoint.MAX_TREE_SIZE))
    ):
        raise MalformedError("add-checkpoint must start with 'old <size>' (decimal)")
    old_size = int(size_text)
    if old_size > checkpoint.MAX_TREE_SIZE:
        raise MalformedError("add-checkpoint old size is too large")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise MalformedError(f"add-checkpoint has more than {MAX_PROOF_LINES} proof lines")
    proof = []
    for n, line in enumerate(proof_lines):
        raw = b64decode(line, f"consistency proof line {n + 1}")
        if len(raw) != merkle.HASH_SIZE:
            raise MalformedError(f"consistency proof line {n + 1} is not a 32-byte hash")
        proof.append(Hash(raw))
    return AddCheckpoint(old_size, tuple(proof), cp_note)


def format_request(old_size: int, proof: Iterable[bytes], cp_note: bytes) -> bytes:
    """The ``add-checkpoint`` body a log sends (the inverse of :func:`parse_request`)."""
    lines = "".join(b64encode(h) + "\n" for h in proof)
    return f"old {old_size}\n{lines}\n".encode("ascii") + cp_note


class WitnessState:
    """The last cosigned size and root of each log origin, in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.logs = self._load()

    def _load(self) -> dict[str, Cosigned]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise MalformedError(f"cannot read witness state {self.path}: {exc.strerror}") from None
        try:
            value = json.loads(raw)
            if value.get("v") != STATE_VERSION or not isinstance(value.get("logs"), dict):
                raise ValueError
            logs = {}
            for origin, item in value["logs"].items():
                size, root = item["size"], b64decode(item["root"], "state root")
                if (
                    not isinstance(size, int)
                    or isinstance(size, bool)
                    or size < 0
                    or len(root) != merkle.HASH_SIZE
                ):
                    raise ValueError
                logs[str(origin)] = Cosigned(size, Hash(root))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError, MalformedError):
            raise MalformedError(f"{self.path} is not a witness state file") from None
        return logs

    def save(self, logs: dict[str, Cosigned]) -> None:
        """Replace the file atomically and durably: temp file, fsync, rename, fsync dir."""
        text = json.dumps(
            {
                "v": STATE_VERSION,
                "logs": {o: {"size": c.size, "root": b64encode(c.root)} for o, c in logs.items()},
            },
            indent=1,
            sort_keys=True,
        )
        directory = self.path.parent
        part = directory / f".{self.path.name}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (text + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.logs = dict(logs)


class Witness:
    """Cosigns checkpoints of the logs whose keys it is configured with."""

    def __init__(
        self,
        signer: CosignatureSigner,
        log_keys: Iterable[note.NoteVerifier],
        state_path: Path,
        clock: Callable[[], float],
    ) -> None:
        self.signer = signer
        self.clock = clock
        self.log_keys: dict[str, list[note.NoteVerifier]] = {}
        for key in log_keys:
            self.log_keys.setdefault(key.name, []).append(key)
        self.state = WitnessState(state_path)
        self._lock = threading.Lock()

    def cosigned(self, origin: str) -> Cosigned | None:
        return self.state.logs.get(origin)

    def add_checkpoint(self, body: bytes) -> bytes:
        """The cosignature line(s) for a request body, or a :class:`WitnessRefusal`."""
        try:
            request = parse_request(body)
            unverified = note.parse(request.note)
            cp = checkpoint.Checkpoint.from_text(unverified.text)
        except MalformedError as exc:
            raise BadRequest(exc.message) from None
        keys = self.log_keys.get(cp.origin)
        if not keys:
            raise UnknownLog(f"this witness does not know the log {cp.origin!r}")
        try:
            checkpoint.verify(request.note, keys)
        except QILedgerError as exc:
            raise Forbidden(f"not signed by the log's key: {exc.message}") from None
        if request.old_size > cp.size:
            raise BadRequest(f"old size {request.old_size} is above the checkpoint size {cp.size}")
        with self._lock:
            last = self.state.logs.get(cp.origin)
            last_size = 0 if last is None else last.size
            if request.old_size != last_size:
                raise Conflict(
                    f"old size {request.old_size} is not the size last cosigned, {last_size}",
                    last_size,
                )
            last_root = Hash(merkle.EMPTY_ROOT) if last is None else last.root
            if last is not None and cp.size == last.size:
                if request.proof:
                    raise Unprocessable("the proof between equal sizes must be empty")
                if cp.root != last.root:
                    raise Conflict(
                        f"a different tree of size {cp.size} was cosigned before", last_size
                    )
            else:
                try:
                    merkle.verify_consistency(
                        request.old_size, cp.size, request.proof, last_root, cp.root
                    )
                except ProofError as exc:
                    raise Unprocessable(exc.message) from None
                logs = dict(self.state.logs)
                logs[cp.origin] = Cosigned(cp.size, cp.root)
                try:
                    self.state.save(logs)
                except OSError as exc:
                    raise WitnessStateError(f"cannot save the witness state: {exc}") from None
            timestamp = int(self.clock())
            signature = self.signer.cosign(unverified.text, timestamp)
        return format_line(signature).encode("utf-8")
