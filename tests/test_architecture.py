"""The rooms' import arrows (docs/architecture.md): detectors, connectors and scenarios never import
each other, the engine and mappings import no room that builds on them, and only the CLI wires rooms."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# room -> the kizashi rooms it may import (besides itself). Anything not listed is a violation.
ALLOWED: dict[str, set[str]] = {
    "mappings": set(),
    "rules": set(),
    "engine": {"mappings", "rules"},
    "detectors": {"engine", "mappings"},
    "connectors": {"engine", "mappings"},
    "scenarios": {"engine", "mappings"},
    "sensor": {"engine", "mappings"},
    "scale": {"engine", "mappings", "rules", "detectors"},  # runs fitted query-stream detectors in keyed state
    "cli": {"engine", "mappings", "rules", "detectors", "connectors", "scenarios", "sensor", "scale"},
}
OPTIONAL = {"sensor", "scale"}  # rooms that a deployment may leave out of a slim build


def _imported_rooms(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "kizashi" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_room_imports_only_what_it_may(room: str) -> None:
    folder = ROOT / room
    if not folder.is_dir():
        assert room in OPTIONAL, f"room {room}/ is listed in ALLOWED but missing"
        return
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports kizashi.{target}"
        for path in sorted(folder.rglob("*.py"))
        for target, line in sorted(_imported_rooms(path))
        if target != room and target not in ALLOWED[room]
    ]
    assert not bad, "\n".join(bad)


def test_every_room_is_a_package_in_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for room in ALLOWED:
        if (ROOT / room).is_dir():
            assert f'"kizashi.{room}" = "{room}"' in text, f"{room}/ is not mapped in pyproject package-dir"


def test_tests_and_benches_share_code_only_through_helpers() -> None:
    """Shared test code lives in conftest.py and helpers_*.py; bench/ and tests/ never import each
    other, and nothing edits sys.path or loads a module by file path."""
    bad = []
    for folder in ("tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Attribute) and (
                        node.attr == "spec_from_file_location"
                        or (node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys")):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} edits sys.path or loads a file by path")
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top.startswith("test_") or (top.startswith("_") and top != "__future__") or top in ("tests", "bench"):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not bad, "\n".join(bad)
