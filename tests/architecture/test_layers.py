"""The layers, written once: which top-level package may import which.

`cairn` is the core (language, store, channels, event pipeline, simulator); `workflows` and
`activities` sit on it side by side and never import each other; `starter` (API, CLI, processes,
the testing helper) is the door on top and may import anything. The test parses every module of
the four packages (imports inside functions and under TYPE_CHECKING count too) and fails on any
import that reaches up or sideways.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ALLOWED: dict[str, set[str]] = {
    "cairn": {"cairn"},
    "workflows": {"cairn", "workflows"},
    "activities": {"cairn", "activities"},
    "starter": {"cairn", "workflows", "activities", "starter"},
}
"""Each layer and the layers its modules may import: the rule, in one place."""


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the module's own package
                found.append((node.lineno, package))
            elif node.module:
                found.append((node.lineno, node.module.split(".")[0]))
    return found


def _violations(package: str) -> list[str]:
    problems = []
    for path in _modules(package):
        for line, top in _imported(path, package):
            if top in ALLOWED and top not in ALLOWED[package]:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    return problems


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_reaches_up_or_sideways(package: str) -> None:
    assert _modules(package), f"no modules found under {package}/"
    assert _violations(package) == []


def test_the_walker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text("import os\n\ndef f():\n    from starter.worker import running\n"
                      "    from . import sibling\n")
    assert _imported(module, "cairn") == [(1, "os"), (4, "starter"), (5, "cairn")]
