"""The ``confide`` command line.

Example::

    $ confide attest quote quote.bin --collateral collateral.json --at 1751623200 \\
        --accept-tcb ConfigurationAndSWHardeningNeeded

Each module registers its commands on the root app when it is imported. The
console entry point :func:`main` imports only what the command needs when it is
one of ``_app.LEAN_COMMANDS`` (``confide runtime`` starts once per app launch,
and importing the owner's and operator's commands cost it ~0.3 s of CPU, issue
14); any other command line, and :data:`app` (loaded on first use), get every
command. What a runtime *measures* does not change: its environment is the
installed files (ADR 0017), not what it imports.
"""

from __future__ import annotations

import typing

from . import _app
from ._app import load_commands, main

if typing.TYPE_CHECKING:
    import typer

    from ._app import app

__all__ = ["app", "load_commands", "main"]


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        return _app.load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
