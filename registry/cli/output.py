"""How ``qiledger`` prints: human-readable by default, JSON with ``--json``."""

from __future__ import annotations

import json
from typing import Any


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, human: str, data: Any) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            print(human)
