"""What a ``qiverify`` command found: its exit codes, every check with its result, and
the verdict, as text or one JSON object.

Each check is recorded on a :class:`Report`; a failed one raises :class:`Stop`, which
carries the exit code its kind means (see :mod:`verifier.cli` for the codes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from verifier.errors import QILedgerError

EXIT_VALID, EXIT_NOT_VALID, EXIT_NOT_AUTHENTIC, EXIT_UNCHECKED = 0, 1, 2, 3
MEANING = {
    EXIT_VALID: "authentic and valid",
    EXIT_NOT_VALID: "authentic but not valid",
    EXIT_NOT_AUTHENTIC: "not authentic or not found",
    EXIT_UNCHECKED: "could not check",
}

T = TypeVar("T")


class Stop(Exception):
    """Ends a command early with an exit code; the failed check is already recorded."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Check:
    name: str
    result: str  # "ok" | "failed" | "not checked"
    detail: str


@dataclass
class Report:
    """What one command checked: facts, every check with its result, and the verdict."""

    command: str
    facts: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    """Human output of the older single-check commands."""
    code: int = EXIT_VALID
    note: str = ""
    """Qualifies the verdict (``mark`` offline: what was not asked)."""

    def ok(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "ok", detail))

    def skip(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "not checked", detail))

    def fail(self, name: str, detail: str, code: int = EXIT_NOT_AUTHENTIC) -> NoReturn:
        self.checks.append(Check(name, "failed", detail))
        raise Stop(code, f"{name}: {detail}")

    def run(
        self,
        name: str,
        action: Callable[[], T],
        detail: str | Callable[[T], str] = "",
        *,
        not_found: int = EXIT_NOT_AUTHENTIC,
    ) -> T:
        """``action()``, recorded as check ``name``: a project error fails it with
        the exit code its kind means (unreachable registry 3, anything else 2)."""
        try:
            value = action()
        except QILedgerError as exc:
            # Imported only to classify a failure: verifier.online brings the HTTP
            # client, which --help and the offline commands never need.
            from verifier.online import NetworkError, NotFoundError, RegistryRefusedError

            if isinstance(exc, NetworkError | RegistryRefusedError):
                self.fail(name, exc.message, EXIT_UNCHECKED)
            if isinstance(exc, NotFoundError):
                self.fail(name, exc.message, not_found)
            self.fail(name, f"{exc.message} ({exc.code})")
        self.ok(name, detail(value) if callable(detail) else detail)
        return value

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "verdict": MEANING[self.code],
            "exit_code": self.code,
            **({"note": self.note} if self.note else {}),
            "meaning": {str(k): v for k, v in MEANING.items()},
            **self.facts,
            "checks": [
                {"name": c.name, "result": c.result, "detail": c.detail} for c in self.checks
            ],
        }

    def to_text(self) -> str:
        out = [f"{name.replace('_', ' ')}: {value}" for name, value in self.facts.items()]
        marks = {"ok": "OK     ", "failed": "FAILED ", "not checked": "--     "}
        out += [f"{marks[c.result]}{c.name}: {c.detail}" for c in self.checks]
        note = f" ({self.note})" if self.note else ""
        out.append(f"VERDICT: {MEANING[self.code]}{note}")
        return "\n".join(out)
