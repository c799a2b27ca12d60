"""No package of ``src/confide`` imports another package's private modules.

A package (``confide.runtime``, ``confide.operator``, ...) shows the others only its
``__all__``; its ``_``-prefixed modules are its own. ``confide.errors`` and
``confide.strictjson`` are public top-level modules. Tests may still reach into
privates for white-box checks: this rule is for ``src/`` only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _package_of(path: Path, src: Path) -> list[str]:
    """The dotted parts of the package a module file belongs to (itself for ``__init__``)."""
    return list(path.relative_to(src).parent.parts)


def _imported(tree: ast.AST, package: list[str]) -> list[tuple[int, str]]:
    """Every module (and ``from`` name) an import statement names, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def cross_package_private_imports(src: Path) -> list[str]:
    """``path:line imports name`` for each import of another package's private module."""
    root = src / "confide"
    violations: list[str] = []
    for path in sorted(root.rglob("*.py")):
        package = _package_of(path, src)
        own = package[1] if len(package) > 1 else None
        for line, name in _imported(ast.parse(path.read_text(), str(path)), package):
            parts = name.split(".")
            if len(parts) < 3 or parts[0] != "confide" or parts[1] == own:
                continue
            if not (root / parts[1]).is_dir():
                continue  # a top-level public module: confide.errors, confide.strictjson
            if any(part.startswith("_") for part in parts[2:]):
                violations.append(f"{path.relative_to(src).as_posix()}:{line} imports {name}")
    return sorted(set(violations))


def test_no_package_imports_another_packages_private_modules() -> None:
    assert cross_package_private_imports(SRC) == []


def _tree(tmp_path: Path, name: str, source: str) -> Path:
    files = {
        "errors.py": "",
        "strictjson.py": "",
        "runtime/__init__.py": "",
        "runtime/_tls.py": "",
        "operator/__init__.py": "",
        "cli/__init__.py": "",
        name: source,
    }
    for file, text in files.items():
        path = tmp_path / "confide" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


VIOLATIONS = {
    "from module import name": ("from confide.runtime._tls import bind\n", 1),
    "from package import private module": ("from confide.runtime import _tls\n", 1),
    "import module": ("import confide.runtime._tls\n", 1),
    "lazy import in a function": ("def f():\n    from confide.runtime._tls import bind\n", 2),
    "relative import across packages": ("from ..runtime._tls import bind\n", 1),
}


@pytest.mark.parametrize(("source", "line"), VIOLATIONS.values(), ids=VIOLATIONS.keys())
def test_the_check_sees_each_form(source: str, line: int, tmp_path: Path) -> None:
    found = cross_package_private_imports(_tree(tmp_path, "operator/_router.py", source))
    assert found, "the check found nothing"
    assert all(v.startswith(f"confide/operator/_router.py:{line} imports ") for v in found)
    assert any("confide.runtime._tls" in v for v in found)


ALLOWED = {
    "own private module": ("runtime/_server.py", "from confide.runtime._tls import bind\n"),
    "relative own module": ("runtime/_server.py", "from ._tls import bind\n"),
    "package init importing its modules": ("runtime/__init__.py", "from ._tls import bind\n"),
    "public package": ("operator/_router.py", "from confide.runtime import bind\n"),
    "top-level errors": ("operator/_router.py", "from confide.errors import Error\n"),
    "top-level strictjson": ("cli/_app.py", "from confide.strictjson import loads\n"),
    "foreign private module": ("cli/_app.py", "from typer._types import TyperChoice\n"),
}


@pytest.mark.parametrize(("name", "source"), ALLOWED.values(), ids=ALLOWED.keys())
def test_the_check_allows(name: str, source: str, tmp_path: Path) -> None:
    assert cross_package_private_imports(_tree(tmp_path, name, source)) == []


# The one TCP listener helper is confide.runtime.bind_listener; the runtime's handoff
# socket (AF_UNIX) and its server's re-listen of a duplicate are the runtime's own.
LISTENING_MODULES = {
    "confide/runtime/_tls.py",
    "confide/runtime/_handoff.py",
    "confide/runtime/_server.py",
}


def listening_outside_the_helper(src: Path) -> list[str]:
    """``path:line`` of each ``socket.create_server`` or ``sock.listen(n)`` outside the helper."""
    found: list[str] = []
    for path in sorted((src / "confide").rglob("*.py")):
        name = path.relative_to(src).as_posix()
        if name in LISTENING_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), name)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "create_server" or (
                node.func.attr == "listen" and len(node.args) + len(node.keywords) <= 1
            ):
                found.append(f"{name}:{node.lineno}")
    return found


def test_listeners_are_bound_by_the_one_helper() -> None:
    assert listening_outside_the_helper(SRC) == []


def test_the_listener_check_sees_a_listener(tmp_path: Path) -> None:
    source = "import socket\ns = socket.socket()\ns.listen(128)\nsocket.create_server(('', 0))\n"
    found = listening_outside_the_helper(_tree(tmp_path, "cli/_project.py", source))
    assert found == ["confide/cli/_project.py:3", "confide/cli/_project.py:4"]


def private_names_imported(src: Path) -> list[str]:
    """``path:line imports name`` for each ``_``-prefixed name taken from another module."""
    found: list[str] = []
    for path in sorted((src / "confide").rglob("*.py")):
        name = path.relative_to(src).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), name)):
            if not isinstance(node, ast.ImportFrom):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    module = node.module or ""
                    if module.startswith("confide") or node.level:
                        found.append(f"{name}:{node.lineno} imports {alias.name}")
    return found


# A package's __init__ imports its private modules (``from . import _account``) to load them.
PACKAGE_LOADS_ITS_MODULES = "confide/cli/__init__.py"


def test_no_module_takes_another_modules_private_names() -> None:
    found = [v for v in private_names_imported(SRC) if not v.startswith(PACKAGE_LOADS_ITS_MODULES)]
    assert found == []


def test_the_private_name_check_sees_one(tmp_path: Path) -> None:
    source = "from ._project import InstallTimeoutOpt, _Child\n"
    found = private_names_imported(_tree(tmp_path, "cli/_remote_test.py", source))
    assert found == ["confide/cli/_remote_test.py:1 imports _Child"]


def test_the_cli_renders_tables_in_one_module() -> None:
    """Tables are cli/_output.py's: the commands hand it rows."""
    users = [
        f"{path.relative_to(SRC).as_posix()}:{line}"
        for path in sorted((SRC / "confide").rglob("*.py"))
        for line, name in _imported(ast.parse(path.read_text()), _package_of(path, SRC))
        if name.startswith("rich.table")
    ]
    assert users and all(user.startswith("confide/cli/_output.py:") for user in users), users


#: What confide.gramine may import: the runtime imports it at start-up, in the enclave.
GRAMINE_MAY_IMPORT = {"confide.errors", "confide.wire", "confide.strictjson"}


def gramine_imports_outside(src: Path) -> list[str]:
    """``path:line imports name`` for each import of confide.gramine that is neither the
    standard library, its own modules, nor one of GRAMINE_MAY_IMPORT."""
    import sys

    found: list[str] = []
    for path in sorted((src / "confide" / "gramine").rglob("*.py")):
        package = _package_of(path, src)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if name.startswith("confide.gramine") or top in sys.stdlib_module_names:
                    continue
                if ".".join(name.split(".")[:2]) not in GRAMINE_MAY_IMPORT:
                    found.append(f"{path.relative_to(src).as_posix()}:{node.lineno} imports {name}")
    return found


def test_gramine_imports_only_the_standard_library_errors_and_wire() -> None:
    assert (SRC / "confide" / "gramine" / "__init__.py").is_file()
    assert gramine_imports_outside(SRC) == []


def test_the_gramine_import_check_sees_one(tmp_path: Path) -> None:
    source = "import json\nfrom confide.runtime import x\nimport pydantic\nfrom . import _m\n"
    found = gramine_imports_outside(_tree(tmp_path, "gramine/_x.py", source))
    assert found == [
        "confide/gramine/_x.py:2 imports confide.runtime",
        "confide/gramine/_x.py:3 imports pydantic",
    ]


def test_gramine_loads_no_operator_dependency() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, confide.gramine;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('pydantic', 'fastapi', 'sqlalchemy', 'alembic', 'starlette', 'confide.operator')"
        " or m.startswith('confide.operator')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
