"""The package's shape: stages import only the stages below them, no import cycle, small modules.

The layer order lives in ``pyproject.toml`` (``[tool.importlinter]``); `lint-imports` checks it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import medlora

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(Path(medlora.__file__).parent.rglob("*.py"))
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 250, 50


def test_stages_import_only_the_stages_below_them():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is not installed (pip install -e '.[dev]')"
    done = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_no_import_cycle_between_modules():
    """Every import counts, function-level ones too: a cycle hidden in a function is still a cycle."""
    graph = grimp.build_graph("medlora")
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(imported):] + [module, imported]))
            if imported not in state:
                visit(imported, path + [module])
        state[module] = 2

    for module in sorted(graph.modules):
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_modules_are_small_and_say_what_they_own(source):
    text = source.read_text()
    tree = ast.parse(text)
    assert ast.get_docstring(tree), f"{source.name} has no module docstring saying what it owns"
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{source.name}: split it (> {MAX_MODULE_LINES} lines)"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{source.name}: {node.name} is {length} lines"
