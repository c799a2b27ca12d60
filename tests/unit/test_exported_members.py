"""Each package's ``__all__`` is exactly its public surface (cf. httpx's test of the same name)."""

from __future__ import annotations
import __future__

import types

import pytest

import confide.attestation
import confide.errors
import confide.gramine
import confide.strictjson
import confide.wire
import confide.wire.api

MODULES = [
    confide.attestation,
    confide.errors,
    confide.gramine,
    confide.strictjson,
    confide.wire,
    confide.wire.api,
]


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a user sees: not underscored, not submodules, not ``from __future__`` flags."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_is_the_public_surface(module: types.ModuleType) -> None:
    exported = module.__all__
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    assert set(exported) == _public_names(module)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_exported_name_exists(module: types.ModuleType) -> None:
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_star_import_gives_all(module: types.ModuleType) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == set(module.__all__)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_exported_classes_and_functions_are_ours(module: types.ModuleType) -> None:
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type | types.FunctionType):
            assert value.__module__.startswith(module.__name__), name
            assert not name.startswith("_")


def test_implementation_modules_are_private() -> None:
    submodules = [
        name
        for name, value in vars(confide.attestation).items()
        if isinstance(value, types.ModuleType)
    ]
    assert submodules and all(name.startswith("_") for name in submodules)
