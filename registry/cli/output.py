"""How ``qiledger`` reports: results on stdout (human-readable, or JSON with
``--json``), each error as one line on stderr, and the exit code.

An error under ``--json`` is one JSON object on one line of stderr, named like
the HTTP API's problem details (``code`` is the same stable code)::

    {"code": "not_found", "detail": "no entry at index 7"}

Some carry more fields: ``file`` (``append``), ``where`` (``fsck``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
"""Refused by a trust rule, invalid input, or a configuration, key or database error."""
EXIT_USAGE = 2
"""The command line does not parse (argparse's own code)."""
EXIT_DAMAGED = 3
"""Stored data does not check (``fsck``)."""
EXIT_NOT_FOUND = 4
"""What was asked for is not in the log (code ``not_found``)."""
EXIT_INTERRUPTED = 130


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, human: str, data: Any) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            print(human)

    def error(self, code: str, detail: str, human: str, **extra: Any) -> None:
        """One error on stderr: ``human`` (the line after ``qiledger: ``), or
        under ``--json`` the object of the module docstring."""
        if self.as_json:
            line = json.dumps({"code": code, "detail": detail, **extra}, ensure_ascii=False)
        else:  # one line even when a driver's message has several
            line = "qiledger: " + " ".join(part.strip() for part in human.splitlines())
        print(line, file=sys.stderr)
