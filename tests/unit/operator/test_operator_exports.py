"""``confide.operator.__all__`` is exactly its public surface (as in test_exported_members)."""

from __future__ import annotations
import __future__

import types

import confide.operator


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }


def test_all_is_the_public_surface() -> None:
    exported = confide.operator.__all__
    assert len(exported) == len(set(exported))
    assert set(exported) == _public_names(confide.operator)


def test_exported_classes_and_functions_are_ours() -> None:
    for name in confide.operator.__all__:
        value = getattr(confide.operator, name)
        if isinstance(value, type | types.FunctionType):
            assert value.__module__.startswith("confide.operator."), name


def test_implementation_modules_are_private() -> None:
    submodules = {
        name
        for name, value in vars(confide.operator).items()
        if isinstance(value, types.ModuleType)
    }
    # ``migrations`` is Alembic's script folder, shipped as data; never imported by the API.
    assert submodules and all(name.startswith("_") for name in submodules - {"migrations"})
