"""The package layers of docs/ARCHITECTURE.md, enforced: every ``import`` in
``registry/`` (also those inside functions) goes down the layers, never up or
sideways, so the storage cannot call the HTTP layer and the API cannot call
the CLI. Read from the source (``ast``), so an import that only runs in one
branch is checked too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "registry"

# Each layer may import itself and the layers listed for it (and ``verifier``).
BASE = "base"  # registry.errors, registry.config, registry.long_lived, registry.__init__
CORE = "core"  # ledger, sequencer, policy, proofs, tiles, fsck, reports, verify_pool
ALLOWED: dict[str, set[str]] = {
    BASE: set(),
    "storage": {BASE},
    "keys": {BASE},
    "documents": {BASE},
    CORE: {BASE, "storage", "keys", "documents"},
    "api": {BASE, CORE, "storage", "keys", "documents"},
    "demo": {BASE, CORE, "storage", "keys", "documents", "api"},
    "cli": {BASE, CORE, "storage", "keys", "documents", "api", "demo"},
    "main": {"cli"},  # registry/__main__.py
}
SUBPACKAGES = {"storage", "keys", "documents", "api", "demo", "cli"}
BASE_MODULES = {"errors", "config", "long_lived", "__init__"}
# Only the storage layer talks SQL; others may name the driver's exception types
# (to turn a database failure into one line for a user).
SQL_PACKAGES = ("sqlalchemy", "sqlmodel", "psycopg")
SQL_EXCEPTIONS_ONLY = {"sqlalchemy.exc"}


def layer_of_module(dotted: str) -> str:
    parts = dotted.split(".")
    assert parts[0] == "registry", dotted
    if len(parts) == 1 or parts[1] in BASE_MODULES or parts[1] == "__version__":
        return BASE
    if parts[1] in SUBPACKAGES:
        return parts[1]
    if parts[1] == "__main__":
        return "main"
    return CORE


def layer_of_file(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    return layer_of_module(".".join(relative.parts))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in the file, ``from registry import x``
    counted as ``registry.x``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "registry":
                found.extend((node.lineno, f"registry.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return found


REGISTRY_FILES = sorted(REGISTRY.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert len(REGISTRY_FILES) > 30
    layers = {layer_of_file(path) for path in REGISTRY_FILES}
    assert layers == set(ALLOWED)


@pytest.mark.parametrize("path", REGISTRY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_go_down_the_layers(path: Path) -> None:
    own = layer_of_file(path)
    wrong = [
        f"line {line}: {module} ({layer_of_module(module)})"
        for line, module in imported_modules(path)
        if module.split(".")[0] == "registry"
        and layer_of_module(module) != own
        and layer_of_module(module) not in ALLOWED[own]
    ]
    assert not wrong, f"{own} may import only {sorted(ALLOWED[own])}: {wrong}"


@pytest.mark.parametrize("path", REGISTRY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_only_storage_speaks_sql(path: Path) -> None:
    if layer_of_file(path) == "storage":
        return
    wrong = [
        f"line {line}: {module}"
        for line, module in imported_modules(path)
        if module.split(".")[0] in SQL_PACKAGES and module not in SQL_EXCEPTIONS_ONLY
    ]
    assert not wrong, f"SQL outside registry/storage: {wrong}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    # The walker sees imports inside functions and ``from registry import x``.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f():\n    from registry.cli import main\n"
        "from registry import ledger\nimport sqlalchemy.engine\n"
    )
    assert sorted(imported_modules(sample)) == [
        (2, "registry.cli"),
        (3, "registry.ledger"),
        (4, "sqlalchemy.engine"),
    ]
    assert layer_of_module("registry.cli.main") == "cli"
    assert "cli" not in ALLOWED["storage"]
