"""The "last checkpoint seen" state of ``qiverify``: the newest checkpoint verified of
each log, kept in a small JSON file (``--state``; default
``$XDG_STATE_HOME/qiverify/checkpoints.json``, saved atomically), and the check that
every later checkpoint is consistent with it, so a registry cannot show this user a
forked history."""

from __future__ import annotations

import json
import os
from pathlib import Path

from verifier import checkpoint, merkle
from verifier.encoding import b64decode
from verifier.errors import QILedgerError, VerificationError
from verifier.local_input import read_input
from verifier.note import NoteVerifier
from verifier.online import NotFoundError, Registry, RegistryRefusedError
from verifier.online import field as json_field
from verifier.verdict import EXIT_UNCHECKED, Report, Stop

STATE_VERSION = 1


def state_path(value: str | None) -> Path:
    if value:
        return Path(value)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qiverify" / "checkpoints.json"


def _load_state(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        value = json.loads(read_input(str(path)))
        logs = value["logs"] if value.get("v") == STATE_VERSION else None
    except (ValueError, AttributeError, KeyError, TypeError, RecursionError):
        logs = None
    if not isinstance(logs, dict) or not all(isinstance(v, str) for v in logs.values()):
        raise Stop(EXIT_UNCHECKED, f"{path} is not a qiverify state file (remove it or --state)")
    return logs


def _save_state(path: Path, logs: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        part.write_text(json.dumps({"v": STATE_VERSION, "logs": logs}, indent=1) + "\n")
        part.replace(path)  # atomic: a crash leaves the old state, never half of one
    except OSError as exc:
        raise Stop(EXIT_UNCHECKED, f"cannot write {path}: {exc.strerror}") from None


def check_state(
    report: Report,
    registry: Registry,
    key: NoteVerifier,
    new: checkpoint.Checkpoint,
    note: bytes,
    path: Path,
) -> None:
    logs = _load_state(path)
    name = "consistency with the last checkpoint seen"
    seen = logs.get(str(key))
    if seen is None:
        logs[str(key)] = note.decode("utf-8")
        _save_state(path, logs)
        report.ok(name, f"first checkpoint seen of this log (size {new.size}), saved to {path}")
        return
    try:
        old = checkpoint.verify(seen.encode("utf-8"), key).checkpoint
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, f"{path}: the saved checkpoint: {exc.message}") from None
    if old.size == new.size:
        if old.root != new.root:
            report.fail(name, f"two different trees of size {new.size}: the log forked")
        report.ok(name, f"the same tree of size {new.size} as seen before")
        return
    small, large = (old, new) if old.size < new.size else (new, old)

    def consistent() -> None:
        try:
            answer = registry.consistency(small.size, large.size)
        except (NotFoundError, RegistryRefusedError) as exc:
            if large is old:
                raise  # a lagging mirror cannot prove the newer size: could not check
            # It signed this size itself, so it must be able to prove it extends the old.
            raise VerificationError(
                f"the registry signed size {new.size} but does not prove that it "
                f"extends size {old.size}: {exc.message}"
            ) from None
        hashes = [
            b64decode(h, "proof hash") if isinstance(h, str) else b""
            for h in json_field(answer, "hashes", list, "consistency proof")
        ]
        merkle.verify_consistency(small.size, large.size, hashes, small.root, large.root)

    report.run(name, consistent, f"size {new.size} is consistent with size {old.size} seen before")
    if new.size > old.size:
        logs[str(key)] = note.decode("utf-8")
        _save_state(path, logs)
