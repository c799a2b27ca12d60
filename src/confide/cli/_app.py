"""The ``confide`` command: the root app, error handling and exit codes.

Exit codes: 0 success; 1 the input is not acceptable (verification or policy
failed, a package or sealed box does not open, a Gramine manifest breaks a rule);
2 the command could not run (usage, unreadable file, fetch, a missing tool).
Only Confide's own :class:`~confide.errors.Error` is caught and printed as one
line; anything else is a bug and keeps its traceback. ``--debug`` shows the
traceback of our errors too.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, ParamSpec, TypeVar

import typer

from confide import __version__
from confide.errors import AttestationError, CryptoError, Error, ManifestError

from ._output import Output

__all__ = ["EXIT_REJECTED", "EXIT_UNUSABLE", "app", "handle_errors", "main"]

EXIT_REJECTED = 1
EXIT_UNUSABLE = 2

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class State:
    debug: bool


app = typer.Typer(
    name="confide",
    help="Run confidential Python web apps in enclaves, and verify what runs there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"confide {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show tracebacks of errors.", envvar="CONFIDE_DEBUG"),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_version),
    ] = False,
) -> None:
    ctx.obj = State(debug=debug)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into one line on stderr and a meaningful exit code.

    The command declares a ``ctx: typer.Context`` parameter so that ``--debug``
    (kept on the root context) can show the traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Error as err:
            # typer hands over its base context class, so look for the method, not the type.
            ctxs = [v for v in (*args, *kwargs.values()) if hasattr(v, "find_object")]
            state = ctxs[0].find_object(State) if ctxs else None
            if state is not None and state.debug:
                traceback.print_exc()
            Output().error(err)
            rejected = isinstance(err, AttestationError | CryptoError | ManifestError)
            code = EXIT_REJECTED if rejected else EXIT_UNUSABLE
            raise typer.Exit(code) from None

    return wrapper


def main() -> None:
    """Console entry point."""
    app(prog_name="confide")
