"""Registry-side errors. All derive from :class:`verifier.errors.QILedgerError`,
so the CLI and (later) the HTTP layer translate one hierarchy in one place."""

from __future__ import annotations

from verifier.errors import MalformedError, QILedgerError


class ConfigError(QILedgerError):
    """The registry is misconfigured (missing data dir, bad URL, demo key outside demo)."""

    code = "config_invalid"


class KeyFileError(QILedgerError):
    """A key file is missing, unreadable, too permissive or wrongly encrypted."""

    code = "key_file_invalid"


class NotFoundError(QILedgerError):
    code = "not_found"


class RequestInvalidError(MalformedError):
    """A request's parameters (HTTP or command line) are well-formed but do not make
    sense together."""

    code = "request_invalid"


class DocumentRequiredError(MalformedError):
    """A certificate issue/amend statement came without the document it is about."""

    code = "document_required"


class SchemaUnavailableError(MalformedError):
    """Schema validation is required, but no DCC schema folder is configured."""

    code = "schema_unavailable"


class StorageError(QILedgerError):
    """The database refused or lost a write, or holds data the registry cannot read."""

    code = "storage_error"


def database_error_detail(exc: BaseException) -> str:
    """The first line of what the database driver said (SQLAlchemy wraps it)."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


class IntegrityError(QILedgerError):
    """``fsck`` found stored data that does not check; names the first bad place."""

    code = "integrity_failed"

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where
