"""The files commands read and write: documents read with the registry's size limit
before they are read whole, and outputs created new, never over an existing file."""

from __future__ import annotations

import os
from pathlib import Path

from verifier.errors import DocumentTooLargeError, MalformedError


def read_document(path: str) -> bytes:
    """A certificate document (or its record) from ``path``, at most the document limit."""
    from verifier.dcc import MAX_DOCUMENT_SIZE  # with the XML library: not for every command

    try:
        size = Path(path).stat().st_size
        if size > MAX_DOCUMENT_SIZE:  # refuse before reading it all
            raise DocumentTooLargeError(
                f"{path} is {size} bytes; the document limit is {MAX_DOCUMENT_SIZE}"
            )
        return Path(path).read_bytes()
    except OSError as exc:
        raise MalformedError(f"cannot read {path}: {exc.strerror}") from None


def write_new(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data``; refuse if it exists (an output never replaces
    a file, e.g. a document or a mark printed earlier)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise MalformedError(f"{path} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise MalformedError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
