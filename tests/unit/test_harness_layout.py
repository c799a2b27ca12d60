"""The test harness stays one: fixtures in conftest files, helpers in ``tests/support``.

A test module imports no other test module and no conftest (helpers it shares go to
``tests/support``), imports no fixture function to have pytest find it (fixtures
shared by a folder go to that folder's ``conftest.py``), and ``tests/support`` holds
no fixtures.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
FILES = sorted(TESTS.rglob("*.py"))


def _imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import in ``tree``."""
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def test_the_files_are_found() -> None:
    names = {path.name for path in FILES}
    assert {"conftest.py", "test_harness_layout.py", "operators.py", "runtimes.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_module_or_conftest_is_imported(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for module, names, line in _imports(tree):
        top = module.split(".")[0]
        where = f"{path.relative_to(TESTS)}:{line}"
        assert not top.startswith("test_"), f"{where} imports the test module {module}"
        assert top != "conftest", f"{where} imports a conftest: move what it needs to support"
        fixtures = [name for name in names if name.endswith("_fixture")]
        assert not fixtures, f"{where} imports fixtures {fixtures}: put them in a conftest.py"


@pytest.mark.parametrize("path", sorted((TESTS / "support").glob("*.py")), ids=lambda p: p.name)
def test_support_holds_no_fixtures(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                assert "fixture" not in ast.unparse(target), (
                    f"support/{path.name}: {node.name} is a fixture: put it in a conftest.py"
                )
