"""``confide.runtime``'s ``__all__`` is exactly its public surface; its modules are private."""

from __future__ import annotations
import __future__

import types

import confide.runtime


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }


def test_all_is_the_public_surface() -> None:
    exported = confide.runtime.__all__
    assert len(exported) == len(set(exported))
    assert set(exported) == _public_names(confide.runtime)
    for name in exported:
        value = getattr(confide.runtime, name)
        if isinstance(value, type | types.FunctionType):
            assert value.__module__.startswith("confide.runtime."), name


def test_implementation_modules_are_private() -> None:
    submodules = [
        name for name, value in vars(confide.runtime).items() if isinstance(value, types.ModuleType)
    ]
    assert submodules and all(name.startswith("_") for name in submodules)
