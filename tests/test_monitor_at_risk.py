"""``qiverify monitor --watch ISSUER`` tells an issuer when one of its certificates
becomes traceability at risk, and when it stops being so (issue 15, item 3).

A generated calibration hierarchy is served by a real registry over HTTP; the
monitor follows it from its state file. After a suspension, a withdrawal and a
reinstatement, the monitor reports exactly the watched issuer's certificates that
the registry's own status read flags (``traceability_at_risk``), with the same
``at_risk_because``, each change once, nothing for issuers not watched, and a
newly watched issuer's certificates already at risk once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from registry.api.app import create_app
from registry.config import Settings
from tests.test_monitor import json_stream, serve
from tests.test_traceability import Graph, build_graph, change
from verifier import monitor
from verifier.cli import main as qiverify

OK = 0


@pytest.fixture
def capture(capsys: pytest.CaptureFixture[str]) -> Any:
    """Runs ``qiverify monitor --once --json`` at the registry's clock; its
    at-risk events."""

    def run(g: Graph, url: str, state: Path, *watch: str) -> list[dict[str, Any]]:
        argv = ["monitor", "--registry", url, "--log-key", str(g.ledger.identity.verifier)]
        argv += ["--state", str(state), "--once", "--json"]
        for issuer in watch:
            argv += ["--watch", issuer]
        code = qiverify(argv, now=g.world.clock())
        events = json_stream(capsys.readouterr().out)
        assert code == OK, events[-1]
        return [e for e in events if e.get("event") in ("at_risk", "no_longer_at_risk")]

    return run


def flagged(g: Graph, issuer: str) -> dict[str, list[str]]:
    """The registry's own answer: the issuer's certificates its status read flags."""
    with TestClient(create_app(g.ledger)) as client:
        out = {}
        for cert_id in g.ids:
            if not cert_id.startswith(issuer + "/"):
                continue
            body = client.get(f"/api/v1/certificates/{cert_id}").json()
            if body["traceability_at_risk"]:
                out[cert_id] = body["at_risk_because"]
        return out


def as_map(events: list[dict[str, Any]], kind: str) -> dict[str, list[str]]:
    return {e["certificate_id"]: e["at_risk_because"] for e in events if e["event"] == kind}


def test_a_watched_issuer_learns_which_of_its_certificates_are_at_risk(
    settings: Settings, tmp_path: Path, capture: Any
) -> None:
    g = build_graph(settings, shape=(2, 3, 5, 8, 12))
    try:
        with serve(g.ledger) as served:
            state = tmp_path / "monitor.json"
            assert capture(g, served.url, state, "LAB-B") == []  # nothing at risk yet

            middle = g.tiers[2][0]
            change(g, middle, "suspend")
            expected = flagged(g, "LAB-B")
            assert expected  # the generated graph gives the test something to find
            events = capture(g, served.url, state, "LAB-B")
            assert as_map(events, "at_risk") == expected
            assert all(e["issuer_id"] == "LAB-B" for e in events)
            assert capture(g, served.url, state, "LAB-B") == []  # each change once

            # Another issuer, watched from now on: what is at risk now, once.
            other = flagged(g, "LAB-A")
            events = capture(g, served.url, state, "LAB-A", "LAB-B")
            assert as_map(events, "at_risk") == other
            assert capture(g, served.url, state, "LAB-A", "LAB-B") == []

            # Lifted: every one of them is no longer at risk, said once.
            change(g, middle, "reinstate")
            assert flagged(g, "LAB-B") == {}
            events = capture(g, served.url, state, "LAB-B", "LAB-A")
            assert set(as_map(events, "no_longer_at_risk")) == set(expected) | set(other)
            assert as_map(events, "at_risk") == {}

            # A withdrawal higher up: the sets agree with the registry again.
            # A withdrawal higher up and a suspension below it: the sets, and the
            # reasons of each, agree with the registry again.
            top = g.tiers[0][1]
            change(g, top, "withdraw")
            change(g, g.tiers[2][1], "suspend")
            events = capture(g, served.url, state, "LAB-B")
            assert as_map(events, "at_risk") == flagged(g, "LAB-B")
            assert any(len(e["at_risk_because"]) > 1 for e in events)
            # Nobody watched: nothing said, however much is at risk.
            assert capture(g, served.url, tmp_path / "unwatched.json") == []
    finally:
        g.ledger.close()


def test_the_text_lines_and_the_saved_state(
    sqlite_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    g = build_graph(sqlite_settings, shape=(2, 3, 5))
    try:
        change(g, g.tiers[1][0], "withdraw")
        expected = flagged(g, "LAB-A")
        assert expected
        with serve(g.ledger) as served:
            state = tmp_path / "monitor.json"
            argv = ["monitor", "--registry", served.url, "--log-key"]
            argv += [str(g.ledger.identity.verifier), "--state", str(state), "--once"]
            assert qiverify([*argv, "--watch", "LAB-A"], now=g.world.clock()) == OK
            lines = capsys.readouterr().out.splitlines()
            risky = [line for line in lines if line.startswith("AT-RISK ")]
            assert sorted(line.split()[1] for line in risky) == sorted(expected)
            assert all(f"because={g.tiers[1][0]}" in line for line in risky)
        saved = json.loads(state.read_text())
        assert {c for c, _ in saved["at_risk"]} == set(expected)
        assert saved["risk_watch"] == ["LAB-A"]
        assert all(links for _, links in saved["links"])
        loaded = monitor.load_state(state, g.ledger.identity.verifier)
        assert set(loaded.at_risk) == set(expected)
    finally:
        g.ledger.close()


def test_a_version_1_state_file_is_refused_with_what_to_do(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    g = build_graph(sqlite_settings, shape=(2, 3))
    try:
        empty = monitor.MonitorState.empty(g.ledger.identity.verifier).to_json()
        path = tmp_path / "old.json"
        path.write_text(json.dumps({**empty, "v": 1}))
        with pytest.raises(monitor.StateFileError, match="start a new state file"):
            monitor.load_state(path, g.ledger.identity.verifier)
    finally:
        g.ledger.close()
