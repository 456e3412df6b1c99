"""Key IDs of the public demo keys in ``keys.example/``.

Anyone can sign with those keys, so the registry refuses to run with a demo
log key, or to sign with any of them, unless ``--demo`` is given.
``tests/test_demo_keys.py`` checks this list against the files.
"""

from __future__ import annotations

from pathlib import Path

from verifier.keys import KeyId

DEMO_KEYS_DIR = Path(__file__).resolve().parents[2] / "keys.example"

DEMO_KEY_IDS: dict[KeyId, str] = {
    KeyId("8d35773ace6a6b8fa65566928448479ec358a44211ffb90c28b7e62411ff2e94"): "accreditation-body",
    KeyId("c470e84f59474b37fbbb381393af71b0b64a8bf7f54bef0ed15007405ec0a515"): "calibration-lab",
    KeyId("23298f5cbab8bfa5281668f1010291e7290649aaec980291eae8c93d5b0b9ce7"): "certification-body",
    KeyId("973f77720640072617e06ff8a97ea6714a804177bd850eb7f5efa37984749c85"): "log",
}
