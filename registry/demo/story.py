"""How the demo prints: numbered steps, labelled artifacts, one line per check.

An artifact is shown with its label, as a short prefix where nobody needs the
full value (hashes, digests) and in full where a reader would copy it; a check
that passed is followed by an ``OK:`` line saying what it proved. Checks raise
when they fail, so an ``OK:`` line is never printed for a failed one.
"""

from __future__ import annotations

from collections.abc import Sequence

from verifier.encoding import b64encode
from verifier.errors import VerificationError

LABEL_WIDTH = 22


def step(title: str) -> None:
    print(f"\n== {title}")


def short(value: bytes | str, length: int = 12) -> str:
    """A prefix of a hash (base64, as proofs and checkpoints carry it) or hex digest."""
    text = b64encode(value) if isinstance(value, bytes) else value
    return text[:length] + "…" if len(text) > length else text


def hashes(values: Sequence[bytes]) -> str:
    """A proof's hashes, counted, each as an 8-character prefix."""
    return f"{len(values)} hashes " + " ".join(short(h, 8) for h in values)


def artifact(label: str, value: str, meaning: str | None = None) -> None:
    print(f"  {label + ':':{LABEL_WIDTH}}{value}")
    if meaning is not None:
        print(f"  {'':{LABEL_WIDTH}}{meaning}")


def note(text: str) -> None:
    """What the lines above mean, where no check is involved."""
    print(f"  ({text})")


def ok(meaning: str) -> None:
    """Say what a check that has just passed proved."""
    print(f"  OK: {meaning}")


def check(holds: bool, meaning: str) -> None:
    """A comparison the demo makes itself: ``OK:`` when it holds, an error when not."""
    if not holds:
        raise VerificationError(f"the demo's check failed: {meaning}")
    ok(meaning)
