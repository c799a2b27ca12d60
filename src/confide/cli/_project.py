"""``confide scaffold`` and ``confide localtest``: start a project, and test it without an enclave.

``confide scaffold NAME`` creates ``NAME/`` (never in an existing folder)::

    NAME/
        confide.toml        the project file (see confide.client)
        secrets.json        secrets for the app, at $SECRETS_PATH; never packaged (mode 0600)
        README.md
        .gitignore
        src/                the code folder: what is packaged and served
            app.py              app = Flask(...), with /, /health and /secrets
            requirements.txt
            .confideignore
        tests/              run against $TEST_REMOTE_URL
            conftest.py
            test_app.py

This is Cosmian Enclave's layout (``src/`` is its ``mse_src/``), with our own
project file name; ``mse.toml`` files are read too.

``confide localtest`` serves the app with hypercorn on 127.0.0.1 (on a port
the kernel picks; the listening socket is handed to hypercorn, so no port is
ever guessed), waits for its healthcheck, installs ``tests_requirements`` in
a throwaway virtual environment, runs ``tests_cmd`` in the tests folder with
``TEST_REMOTE_URL`` (plus ``TEST_SECRETS_PATH`` and Cosmian's
``TEST_SECRET_JSON`` when there are secrets), stops the app and exits with
the tests' exit code. The app runs in its own throwaway environment too
(hypercorn and the code folder's ``requirements.txt``); ``--no-install``
runs both with the current interpreter instead, offline. The app's log goes
to stderr, the tests' output to stdout.

Exit codes: ``scaffold`` 0 created, 2 unusable (bad name, folder exists);
``localtest`` the tests' exit code once they ran, 2 if they could not run
(bad project file, the app never became healthy, an install failed).

Example::

    $ confide scaffold hello
    $ cd hello && confide localtest
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Final

import typer

from confide.client import ProjectConfig, app_environment, run_localtest, tests_environment
from confide.errors import UsageError
from confide.wire import NAME_PATTERN

from ._app import app, handle_errors
from ._output import Output

#: A project name: an app name, as the operator requires it.
_NAME: Final = re.compile(NAME_PATTERN)
#: Template file names: ``dot-x.tmpl`` becomes ``.x``.
_TEMPLATE_SUFFIX: Final = ".tmpl"
_DOT_PREFIX: Final = "dot-"
#: Files created with mode 0600.
_PRIVATE_FILES: Final = frozenset({"secrets.json"})
#: The project file scaffold writes.
_PROJECT_FILE: Final = "confide.toml"


# -- scaffold --------------------------------------------------------------------------------


def _templates() -> Traversable:
    return importlib.resources.files("confide.cli").joinpath("templates", "scaffold")


def _template_files(root: Traversable, prefix: tuple[str, ...] = ()) -> Iterator[tuple[Path, str]]:
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _template_files(entry, (*prefix, entry.name))
        elif entry.name.endswith(_TEMPLATE_SUFFIX):
            name = entry.name.removesuffix(_TEMPLATE_SUFFIX)
            if name.startswith(_DOT_PREFIX):
                name = "." + name.removeprefix(_DOT_PREFIX)
            yield Path(*prefix, name), entry.read_text(encoding="utf-8")


def scaffold_project(name: str, parent: Path) -> Path:
    """Create the project ``parent/name`` from the template; return its project file."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"project name {name!r}: expected 1 to 63 lower-case letters, digits and inner "
            "hyphens or underscores (it names the app)",
            hint="e.g. hello-world",
        )
    target = parent / name
    try:
        target.mkdir()
    except FileExistsError:
        raise UsageError(
            f"{target} already exists; scaffold never writes into an existing folder",
            hint="choose another name, or move the folder away",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot create {target}: {exc.strerror or exc}") from None
    try:
        for relative, text in _template_files(_templates()):
            dest = target / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if relative.name in _PRIVATE_FILES else 0o644
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text.replace("{{ name }}", name))
        project_file = target / _PROJECT_FILE
        ProjectConfig.load(project_file, now=datetime.now(UTC))  # the template is valid
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise UsageError(f"cannot write in {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return project_file


@app.command("scaffold")
@handle_errors
def scaffold(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The project (and app) name; a folder of that name.")],
    into: Annotated[
        Path, typer.Option("--into", help="Where to create the project folder.")
    ] = Path("."),
) -> None:
    """Create a new Flask project NAME/ with its tests and confide.toml (exit 2: folder exists)."""
    output = Output()
    project_file = scaffold_project(name, into)
    output.out.print(str(project_file.parent))
    output.info(
        f"created the project {name} in {project_file.parent}; "
        f"test it with: cd {project_file.parent} && confide localtest"
    )


#: Options shared by ``localtest`` and ``test``.
ProjectPathOpt = Annotated[
    Path,
    typer.Option(
        "--path",
        help="The project file, or its folder (confide.toml, else mse.toml).",
        envvar="CONFIDE_PROJECT",
    ),
]
TestsTimeoutOpt = Annotated[
    float, typer.Option("--tests-timeout", help="Seconds the tests may run.", min=1.0)
]
InstallTimeoutOpt = Annotated[
    float, typer.Option("--install-timeout", help="Seconds each install may take.", min=1.0)
]


def load_project(path: Path, output: Output) -> ProjectConfig:
    """The project file, its warnings (unused keys) printed once."""
    config = ProjectConfig.load(path, now=datetime.now(UTC))
    for warning in config.warnings:
        output.warn(warning)
    return config


@app.command("localtest")
@handle_errors
def localtest(
    ctx: typer.Context,
    path: ProjectPathOpt = Path("."),
    no_install: Annotated[
        bool,
        typer.Option(
            "--no-install",
            help="Run the app and the tests with the current interpreter: nothing is installed.",
        ),
    ] = False,
    startup_timeout: Annotated[
        float,
        typer.Option("--startup-timeout", help="Seconds to wait for the healthcheck.", min=0.1),
    ] = 60.0,
    tests_timeout: TestsTimeoutOpt = 1800.0,
    install_timeout: InstallTimeoutOpt = 900.0,
) -> None:
    """Serve the app locally (no enclave), run its tests against it, exit with their exit code."""
    output = Output()
    config = load_project(path, output)
    with tempfile.TemporaryDirectory(prefix="confide-localtest-") as tmp:
        app_env = app_environment(
            config, Path(tmp) / "app", no_install=no_install, timeout=install_timeout, output=output
        )
        tests_env = tests_environment(
            config,
            Path(tmp) / "tests",
            no_install=no_install,
            timeout=install_timeout,
            output=output,
        )
        code = run_localtest(
            config,
            app_env=app_env,
            tests_env=tests_env,
            startup_timeout=startup_timeout,
            tests_timeout=tests_timeout,
            base_env=os.environ,
            output=output,
        )
    if code == 0:
        output.info("the tests passed")
    else:
        output.warn(f"the tests failed (exit {code})")
    raise typer.Exit(code)
