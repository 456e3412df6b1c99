"""Local inputs of ``qiverify``: files named on the command line (or ``-``, standard
input), read size-limited; any failure means "could not check" (exit 3)."""

from __future__ import annotations

import sys
from pathlib import Path

from verifier.verdict import EXIT_UNCHECKED, Stop

MAX_INPUT = 64 << 20


def read_input(path: str) -> bytes:
    """A local file, size-limited; any failure means "could not check" (3)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_INPUT + 1)
    except OSError as exc:
        raise Stop(EXIT_UNCHECKED, f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_INPUT:
        raise Stop(EXIT_UNCHECKED, f"{path} is larger than {MAX_INPUT} bytes")
    return data


def is_file(value: str) -> bool:
    """Whether ``value`` names an existing file (a name that cannot be one is not)."""
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # a name too long or with NUL is no file of ours
        return False
