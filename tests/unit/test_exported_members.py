"""Each package's ``__all__`` is exactly its public surface (cf. httpx's test of the same name).

One table over every public package and top-level module of ``src/confide``, found on
disk (a new package is checked without being listed here): ``__all__`` has no
duplicates, is what a user sees and what ``import *`` gives; what it exports is
defined in the package (or is one of the shared errors); and a package's
implementation modules are ``_``-prefixed.
"""

from __future__ import annotations
import __future__

import importlib
import types
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
#: Alembic's script folder, shipped as data and never imported by the API.
DATA_PACKAGES = frozenset({"confide.operator.migrations"})
#: Packages whose ``__all__`` is kept sorted, constants first.
SORTED = frozenset({"confide.crypto", "confide.tee"})
#: Names a package must keep exporting (a guard against a surface emptied by mistake).
REQUIRED: dict[str, set[str]] = {
    "confide.crypto": {
        "CryptoError",
        "PackageKey",
        "X25519KeyPair",
        "seal",
        "unseal",
        "encrypt_package",
        "decrypt_package",
        "package_digest",
        "encrypt_stream",
        "decrypt_stream",
        "IgnoreRules",
    },
    "confide.client": {"ProjectConfig", "CloudConfig", "SslConfig", "CONFIG_FILES"},
}


def _public_modules() -> list[str]:
    """Every package and top-level module of ``src/confide`` with no ``_`` part, but data."""
    names = []
    for path in sorted((SRC / "confide").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        elif len(parts) > 2:
            continue  # a module inside a subpackage: its package is checked
        name = ".".join(parts)
        if any(p.startswith("_") for p in parts) or any(
            name == d or name.startswith(d + ".") for d in DATA_PACKAGES
        ):
            continue
        names.append(name)
    return names


MODULES = _public_modules()


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a user sees: not underscored, not submodules, not ``from __future__`` flags;
    with the names of ``__all__`` the module's ``__getattr__`` serves on first use (PEP 562:
    ``confide.cli.app`` imports every command module only when asked for)."""
    names = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }
    if "__getattr__" in vars(module):
        names |= {n for n in module.__all__ if n not in vars(module) and hasattr(module, n)}
    return names


@pytest.fixture(name="module", params=MODULES)
def module_fixture(request: pytest.FixtureRequest) -> types.ModuleType:
    return importlib.import_module(request.param)


def test_every_package_is_in_the_table() -> None:
    assert {
        "confide",
        "confide.attestation",
        "confide.cli",
        "confide.client",
        "confide.crypto",
        "confide.errors",
        "confide.operator",
        "confide.gramine",
        "confide.release",
        "confide.runtime",
        "confide.strictjson",
        "confide.tee",
        "confide.wire",
        "confide.wire.api",
    } <= set(MODULES)
    assert SORTED | set(REQUIRED) <= set(MODULES)


def test_all_is_the_public_surface(module: types.ModuleType) -> None:
    exported = module.__all__
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    # Dunder names (``confide.__version__``) are exported on purpose.
    assert {n for n in exported if not n.startswith("__")} == _public_names(module)


def test_every_exported_name_exists(module: types.ModuleType) -> None:
    for name in module.__all__:
        assert hasattr(module, name), name


def test_star_import_gives_all(module: types.ModuleType) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == set(module.__all__)


def test_exported_classes_and_functions_are_ours(module: types.ModuleType) -> None:
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type | types.FunctionType):
            # The error tree is shared: a package may re-export its own branch of it.
            assert value.__module__.startswith(module.__name__) or (
                value.__module__ == "confide.errors"
            ), name
            assert not name.startswith("_")


def test_implementation_modules_are_private(module: types.ModuleType) -> None:
    if not hasattr(module, "__path__"):
        return  # a module, not a package: the modules it imports are not its own
    submodules = {
        name
        for name, value in vars(module).items()
        if isinstance(value, types.ModuleType) and value.__name__.startswith(module.__name__ + ".")
    }
    public = {
        name
        for name in submodules
        if f"{module.__name__}.{name}" in MODULES or f"{module.__name__}.{name}" in DATA_PACKAGES
    }
    assert submodules, f"{module.__name__} has no implementation modules"
    assert all(name.startswith("_") for name in submodules - public), sorted(submodules)


@pytest.mark.parametrize("name", sorted(SORTED))
def test_all_is_sorted_constants_first(name: str) -> None:
    exported = importlib.import_module(name).__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_the_main_names_stay_exported(name: str) -> None:
    assert REQUIRED[name] <= set(importlib.import_module(name).__all__)
