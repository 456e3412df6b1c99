"""``qiledger``'s exit codes, its ``--json`` errors and its help, with real commands
on a real SQLite ledger: 0 done, 1 refused or invalid, 2 usage, 3 damage found,
4 not found."""

from __future__ import annotations

import argparse
import json
import shlex
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from registry.api.app import create_app
from registry.cli import main as cli_main
from registry.cli.main import build_parser
from registry.config import Settings
from registry.ledger import Ledger
from tests.helpers import envelope_bytes, key_from
from tests.test_cli import data_dir, key_add, run  # noqa: F401 (data_dir is a fixture)

Command = tuple[str, ...]
GLOBAL_DESTS = {"data_dir", "database_url", "log_key", "log_key_passphrase_file", "json", "demo"}


def json_error(err: str) -> dict[str, object]:
    """The one JSON object ``--json`` puts on stderr for an error."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    error = json.loads(lines[0])
    assert isinstance(error, dict)
    assert isinstance(error["code"], str)
    assert isinstance(error["detail"], str)
    assert error["detail"]
    return error


# --- 0: done --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["checkpoint"],
        ["checkpoint", "--size", "1"],
        ["log-key"],
        ["entry", "0"],
        ["entry", "1", "--raw"],
        ["proof", "--index", "1"],
        ["proof", "--index", "0", "--size", "1"],
        ["consistency", "--from", "1", "--to", "2"],
        ["body", "list"],
        ["issuers"],
        ["issuer", "LAB-1"],
        ["token", "list"],
        ["reindex"],
        ["fsck"],
    ],
)
def test_exit_0_when_done(
    data_dir: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    for as_json in ([], ["--json"]):
        code, _, err = run(capsys, "--data-dir", str(data_dir), *as_json, *argv)
        assert (code, err) == (0, "")


# --- 4: not found ---------------------------------------------------------------

NOT_FOUND = [
    (["entry", "2"], "no entry at index 2"),
    (["entry", "99", "--raw"], "no entry at index 99"),
    (["proof", "--index", "5"], "entry 5 is not in the tree of size 2"),
    (["proof", "--index", "0", "--size", "7"], "no signed checkpoint at tree size 7"),
    (["checkpoint", "--size", "7"], "no signed checkpoint at tree size 7"),
    (["consistency", "--from", "1", "--to", "7"], "7"),
    (["consistency", "--from", "3", "--to", "1"], "larger than"),
    (["issuer", "LAB-9"], "no issuer LAB-9"),
    (["certificate", "LAB-1/NOPE"], "no certificate LAB-1/NOPE"),
    (["document", "LAB-1/NOPE", "--out", "/nonexistent/x"], "no certificate LAB-1/NOPE"),
    (["token", "revoke", "nope"], "no active API token nope"),
]


@pytest.mark.parametrize(("argv", "message"), NOT_FOUND)
def test_exit_4_when_not_found(
    data_dir: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    code, out, err = run(capsys, "--data-dir", str(data_dir), *argv)
    assert (code, out) == (4, "")
    assert err.startswith("qiledger: error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "--data-dir", str(data_dir), "--json", *argv)
    assert (code, out) == (4, "")
    error = json_error(err)
    assert error["code"] == "not_found"
    assert message in str(error["detail"])


def test_json_error_code_is_the_http_apis(
    data_dir: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same failure has the same code on the command line and over HTTP."""
    ledger = Ledger.open(Settings(data_dir=data_dir))
    try:
        with TestClient(create_app(ledger)) as client:
            for argv, url in [
                (["proof", "--index", "5"], "/api/v1/log/proof/inclusion?index=5"),
                (["checkpoint", "--size", "7"], "/api/v1/log/proof/inclusion?index=0&tree_size=7"),
                (["entry", "9"], "/api/v1/log/entries/9"),
            ]:
                _, _, err = run(capsys, "--data-dir", str(data_dir), "--json", *argv)
                problem = client.get(url).json()
                assert json_error(err)["code"] == problem["code"], (argv, problem)
    finally:
        ledger.close()


# --- 1: refused or invalid --------------------------------------------------------


def test_exit_1_when_a_trust_rule_refuses(
    data_dir: Path,  # noqa: F811 (the fixture)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = ["--data-dir", str(data_dir)]
    stranger = tmp_path / "stranger.json"
    stranger.write_bytes(envelope_bytes(key_add(9), key_from("stranger")))
    code, _, err = run(capsys, *d, "append", str(tmp_path / "e0.json"), str(stranger))
    assert code == 1
    assert f"qiledger: {stranger}: refused: " in err
    code, out, err = run(capsys, *d, "--json", "append", str(stranger), str(tmp_path / "e1.json"))
    assert code == 1
    results = json.loads(out)
    error = json_error(err)
    assert (error["code"], error["file"]) == (results[0]["refused"], str(stranger))
    assert error["code"] == "key_not_issuer"
    assert results[1]["index"] == 3  # the good one in the same batch is logged

    code, _, err = run(capsys, *d, "--json", "body", "remove", "NOPE", "--reason", "test")
    assert code == 1
    assert "NOPE" in str(json_error(err)["detail"])


@pytest.mark.parametrize(
    ("argv", "code_name"),
    [
        (["append", "/nonexistent/e.json"], "malformed"),
        (["sign", "/nonexistent/s.json", "--key", "/nonexistent.key"], "malformed"),
        (["body", "add", "--name", "X", "--country", "CN", "--key", "/nonexistent.pem"], None),
        (["body", "add", "--name", "X", "--country", "CN", "--key", "/dev/null"], None),
        (["issue", "/nonexistent.xml", "--key", "/nonexistent.key", "--issuer", "LAB-1"], None),
        (["token", "create"], "config_invalid"),
        (["init", "--no-passphrase"], "config_invalid"),
        (["serve", "--workers", "0"], "config_invalid"),
    ],
)
def test_exit_1_on_invalid_input(
    data_dir: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code_name: str | None,
) -> None:
    code, _, err = run(capsys, "--data-dir", str(data_dir), *argv)
    assert code == 1
    assert err.startswith("qiledger: ")
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "--data-dir", str(data_dir), "--json", *argv)
    assert code == 1
    error = json_error(err)
    if code_name is not None:
        assert error["code"] == code_name


def test_exit_1_on_configuration_and_database_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["--data-dir", str(tmp_path / "none"), "checkpoint"], "configuration error: no ledger"),
        (["--database-url", "mysql://x/y", "fsck"], "configuration error: unsupported database"),
        # nothing listens on port 1: the driver's refusal, in one line
        (["--database-url", "postgresql+psycopg://u@127.0.0.1:1/x", "log-key"], "error: cannot"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 1
        assert err.startswith(f"qiledger: {message}")
        assert len(err.strip().splitlines()) == 1
        assert "Traceback" not in err
        code, _, err = run(capsys, "--json", *argv)
        assert code == 1
        assert json_error(err)["code"] in {"config_invalid", "storage_error"}
    code, _, err = run(capsys, "--json", *cases[2][0])
    assert json_error(err)["code"] == "storage_error"


# --- 2: usage ---------------------------------------------------------------------


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Command]:
    """Every runnable command path, e.g. ("body", "add")."""
    found: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += leaf_commands(sub, (*path, name))
    return found or [path]


ALL_COMMANDS = leaf_commands(build_parser())


def test_every_command_is_walked() -> None:
    assert len(ALL_COMMANDS) >= 30
    assert ("body", "add") in ALL_COMMANDS
    assert ("token", "revoke") in ALL_COMMANDS


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_exit_2_on_bad_usage(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *command, "--no-such-option")
    assert (code, out) == (2, "")
    # a missing argument is the command's error, an unknown one the top parser's
    assert err.startswith("usage: qiledger ")
    assert "error: " in err
    code, out, err = run(capsys, "--json", *command, "--no-such-option")
    assert (code, out) == (2, "")
    assert json_error(err)["code"] == "usage_invalid"


@pytest.mark.parametrize(
    "argv",
    [[], ["no-such-command"], ["body"], ["proof"], ["entry", "x"], ["serve", "--log-level", "x"]],
)
def test_exit_2_on_missing_or_wrong_arguments(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage: qiledger" in err
    code, _, err = run(capsys, *argv, "--json")
    assert code == 2
    assert json_error(err)["code"] == "usage_invalid"


# --- 3: damage found --------------------------------------------------------------


def test_exit_3_when_fsck_finds_damage(
    data_dir: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn = sqlite3.connect(data_dir / "ledger.db")
    try:
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute("UPDATE entries SET leaf_hash = zeroblob(32) WHERE idx = 1")
        conn.commit()
    finally:
        conn.close()
    code, out, err = run(capsys, "--data-dir", str(data_dir), "fsck")
    assert (code, out) == (3, "")
    assert err.startswith("qiledger: fsck: DAMAGED at entry 1")
    code, out, err = run(capsys, "--data-dir", str(data_dir), "--json", "fsck")
    assert code == 3
    assert json.loads(out)["ok"] is False
    error = json_error(err)
    assert error["code"] == "integrity_failed"
    assert error["where"] == json.loads(out)["where"]


# --- help ---------------------------------------------------------------------------


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    todo = [build_parser()]
    while todo:
        parser = todo.pop()
        found.append((parser.prog, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += action.choices.values()
    return found


def test_every_option_and_argument_has_help() -> None:
    missing = []
    for prog, parser in all_parsers():
        top = prog == "qiledger"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if action.help == argparse.SUPPRESS and not top and action.dest in GLOBAL_DESTS:
                continue  # a global option, listed once in qiledger --help
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{prog}: {action.option_strings or action.dest}")
        if isinstance(parser._subparsers, argparse._ArgumentGroup):
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    helps = {a.dest: a.help for a in action._choices_actions}
                    missing += [f"{prog} {n}" for n in action.choices if not helps.get(n)]
    assert missing == []


def test_global_options_are_listed_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main.main(["--help"])
    top = capsys.readouterr().out
    listed = [line.split()[0] for line in top.splitlines() if line.startswith("  --")]
    assert listed == sorted(set(listed), key=listed.index)  # each once
    assert set(listed) == {f"--{d.replace('_', '-')}" for d in GLOBAL_DESTS}
    for prog, parser in all_parsers():
        if prog == "qiledger":
            continue
        text = parser.format_help()
        for option in ("--data-dir", "--database-url", "--log-key ", "--json", "--demo"):
            assert option not in text, (prog, option)
        assert "see qiledger --help" in " ".join(text.split()), prog


def test_global_options_still_work_after_the_command(
    data_dir: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "checkpoint", "--json", "--data-dir", str(data_dir))
    assert (code, json.loads(out)["size"]) == (0, 2)
    code, out, _ = run(capsys, "body", "list", "--data-dir", str(data_dir), "--json")
    assert (code, [b["body_id"] for b in json.loads(out)]) == (0, ["CNAS"])


def docstring_examples() -> list[list[str]]:
    doc = cli_main.__doc__ or ""
    joined = doc.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip().startswith("qiledger ")]
    return [shlex.split(line.split(">", 1)[0])[1:] for line in lines]


def test_docstring_examples_parse() -> None:
    examples = docstring_examples()
    assert len(examples) >= 6
    for argv in examples:
        args = build_parser().parse_args(argv)
        assert callable(args.func), argv
