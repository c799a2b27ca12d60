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
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Final, ParamSpec, TypeVar

import typer

from confide import __version__
from confide.errors import AttestationError, CryptoError, Error, ManifestError

from ._output import Output

EXIT_REJECTED = 1
EXIT_UNUSABLE = 2

#: Every module that registers commands (``confide.cli.<name>``).
COMMAND_MODULES: Final = (
    "_account",
    "_attest",
    "_crypto",
    "_deploy",
    "_fingerprint",
    "_gramine",
    "_keys",
    "_log",
    "_operator",
    "_project",
    "_proxy",
    "_remote_test",
    "_runtime",
    "_sim",
    "_td_runtime",
)
#: Commands that run alone in their process, and the only modules they need.
LEAN_COMMANDS: Final = {
    "runtime": ("_runtime",),
    "td-runtime": ("_runtime", "_td_runtime"),
}

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


def load_commands(argv: Sequence[str] = ()) -> typer.Typer:
    """The root app with the commands ``argv`` needs registered: every command, unless
    ``argv``'s command is one of :data:`LEAN_COMMANDS`."""
    # The root options (--debug, --version) are flags: the first other word is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    modules = LEAN_COMMANDS.get(command, COMMAND_MODULES) if command else COMMAND_MODULES
    for name in modules:
        importlib.import_module(f"confide.cli.{name}")
    return app


def main() -> None:
    """Console entry point."""
    load_commands(sys.argv[1:])(prog_name="confide")
