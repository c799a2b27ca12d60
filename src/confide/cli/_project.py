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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import IO, Annotated, Final

import httpx
import typer

from confide.client import ProjectConfig
from confide.errors import UsageError
from confide.wire import NAME_PATTERN

from ._app import app, handle_errors
from ._output import Output

__all__ = [
    "Environment",
    "InstallTimeoutOpt",
    "ProjectPathOpt",
    "TestsTimeoutOpt",
    "load_project",
    "localtest",
    "prepare_tests",
    "run_localtest",
    "run_tests",
    "scaffold",
    "scaffold_project",
    "tests_environment",
]

#: A project name: a DNS label, as the operator requires of app names.
_NAME: Final = re.compile(NAME_PATTERN)
#: Template file names: ``dot-x.tmpl`` becomes ``.x``.
_TEMPLATE_SUFFIX: Final = ".tmpl"
_DOT_PREFIX: Final = "dot-"
#: Files created with mode 0600.
_PRIVATE_FILES: Final = frozenset({"secrets.json"})
#: The project file scaffold writes.
_PROJECT_FILE: Final = "confide.toml"
_LOCALHOST: Final = "127.0.0.1"
#: How long a stopped app or test run gets to exit before it is killed.
_STOP_GRACE: Final = 10.0
_POLL_TIMEOUT: Final = 2.0
_POLL_MAX_INTERVAL: Final = 0.5


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
            "hyphens (it names the app, a DNS label)",
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


# -- localtest -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Environment:
    """Where the app and the tests run: an interpreter and the folder put first on PATH."""

    python: Path
    bin_dir: Path
    #: A throwaway virtual environment (cleaned of PYTHONPATH), not the current interpreter.
    isolated: bool

    @classmethod
    def current(cls) -> Environment:
        python = Path(sys.executable)
        return cls(python=python, bin_dir=python.parent, isolated=False)


class _Pump(threading.Thread):
    """Copies a child's output, line by line, to one of our streams."""

    def __init__(self, source: IO[bytes], sink: IO[str], prefix: str = "") -> None:
        super().__init__(daemon=True)
        self._source = source
        self._sink = sink
        self._prefix = prefix

    def run(self) -> None:
        for line in iter(self._source.readline, b""):
            try:
                self._sink.write(self._prefix + line.decode("utf-8", "replace"))
                self._sink.flush()
            except (OSError, ValueError):
                return  # our stream is gone; the child keeps running until stopped


@dataclass(slots=True)
class _Child:
    process: subprocess.Popen[bytes]
    pump: _Pump

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        sink: IO[str],
        prefix: str = "",
        pass_fds: Sequence[int] = (),
    ) -> _Child:
        try:
            process = subprocess.Popen(  # noqa: S603  (argv from the project file, no shell)
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
            )
        except OSError as exc:
            raise UsageError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        if process.stdout is None:  # pragma: no cover - stdout=PIPE always gives one
            raise RuntimeError("no stdout pipe")
        pump = _Pump(process.stdout, sink, prefix)
        pump.start()
        return cls(process, pump)

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.pump.join(timeout=_STOP_GRACE)
        return code

    def stop(self) -> None:
        """SIGTERM to the child's process group, SIGKILL after a grace period."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=_STOP_GRACE)
        self.pump.join(timeout=_STOP_GRACE)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.process.pid, sig)  # its own session: only what we started
        except ProcessLookupError:
            pass


def _run_to_end(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> int:
    child = _Child.start(argv, cwd=cwd, env=env, sink=sys.stderr)
    try:
        code = child.wait(timeout)
        if code is None:
            raise UsageError(f"{' '.join(argv[:4])} ... did not finish within {timeout:g}s")
        return code
    finally:
        child.stop()


def _make_venv(
    folder: Path,
    requirements: Sequence[str],
    *,
    what: str,
    base_env: Mapping[str, str],
    timeout: float,
    output: Output,
) -> Environment:
    """A fresh virtual environment (no system site-packages) with ``requirements``."""
    env = _clean_env(base_env)
    code = _run_to_end(
        [sys.executable, "-m", "venv", str(folder)], cwd=folder.parent, env=env, timeout=timeout
    )
    if code != 0:
        raise UsageError(f"cannot create a virtual environment in {folder} (exit {code})")
    python = folder / "bin" / "python"
    if requirements:
        output.info(f"installing {what}: {' '.join(requirements)}")
        argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        code = _run_to_end(
            [*argv, "--quiet", *requirements], cwd=folder.parent, env=env, timeout=timeout
        )
        if code != 0:
            raise UsageError(
                f"installing {what} failed (pip exit {code})",
                hint="see pip's output above; check the requirements and the network",
            )
    return Environment(python=python, bin_dir=python.parent, isolated=True)


def _clean_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without what would make a virtual environment see other packages."""
    return {k: v for k, v in base.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}


def _with_path(env: Mapping[str, str], where: Environment) -> dict[str, str]:
    out = _clean_env(env) if where.isolated else dict(env)
    out["PATH"] = os.pathsep.join(p for p in (str(where.bin_dir), env.get("PATH", "")) if p)
    if where.isolated:
        out["VIRTUAL_ENV"] = str(where.bin_dir.parent)
    return out


def _no_proxy(env: dict[str, str]) -> None:
    """The app is on the loopback interface: never reach it through a proxy."""
    for key in ("NO_PROXY", "no_proxy"):
        current = env.get(key, "")
        env[key] = ",".join(p for p in (current, _LOCALHOST, "localhost") if p)


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((_LOCALHOST, 0))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _wait_healthy(app_child: _Child, url: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    interval = 0.05
    last = "no answer"
    with httpx.Client(timeout=_POLL_TIMEOUT, trust_env=False) as client:
        while True:
            code = app_child.process.poll()
            if code is not None:
                raise UsageError(
                    f"the app exited (code {code}) before answering {url}",
                    hint="see its log above",
                )
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            else:
                if response.is_success:
                    return
                last = f"HTTP {response.status_code}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UsageError(
                    f"the app did not answer {url} with 2xx within {timeout:g}s (last: {last})",
                    hint="see its log above; --startup-timeout gives it longer",
                )
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, _POLL_MAX_INTERVAL)


def _tests_argv(config: ProjectConfig, env: Mapping[str, str]) -> list[str]:
    argv = list(config.tests_argv)
    program = argv[0]
    if os.sep in program:
        candidate = Path(program)
        found = str(candidate if candidate.is_absolute() else config.cloud.tests / candidate)
        usable = os.access(found, os.X_OK)
    else:
        which = shutil.which(program, path=env.get("PATH"))
        found, usable = (which or program), which is not None
    if not usable:
        raise UsageError(
            f"tests_cmd: {program!r} not found",
            hint="add what provides it to tests_requirements (or install it, with --no-install)",
        )
    argv[0] = found
    return argv


def prepare_tests(
    config: ProjectConfig, tests_env: Environment, base_env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """``tests_cmd`` as argv (its program found) and the environment it runs in.

    ``TEST_REMOTE_URL`` is not set yet: :func:`run_tests` sets it.
    """
    test_env = _with_path(base_env, tests_env)
    _no_proxy(test_env)
    for key in ("TEST_SECRETS_PATH", "TEST_SECRET_JSON"):
        test_env.pop(key, None)
        if config.cloud.secrets is not None:
            test_env[key] = str(config.cloud.secrets)
    test_env["PYTHONDONTWRITEBYTECODE"] = "1"
    return _tests_argv(config, test_env), test_env


def run_tests(
    config: ProjectConfig,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    url: str,
    timeout: float,
    output: Output,
) -> int:
    """Run the tests (from :func:`prepare_tests`) against ``url``; return their exit code."""
    test_env = dict(env)
    test_env["TEST_REMOTE_URL"] = url
    output.info(f"running {config.tests_cmd!r} in {config.cloud.tests}")
    tests_child = _Child.start(argv, cwd=config.cloud.tests, env=test_env, sink=sys.stdout)
    try:
        code = tests_child.wait(timeout)
        if code is None:
            raise UsageError(
                f"the tests did not finish within {timeout:g}s",
                hint="--tests-timeout gives them longer",
            )
    finally:
        tests_child.stop()
    # A child killed by a signal exits as a shell would report it.
    return code if code >= 0 else 128 - code


def tests_environment(
    config: ProjectConfig, folder: Path, *, no_install: bool, timeout: float, output: Output
) -> Environment:
    """Where the tests run: the current interpreter, or a new venv in ``folder``."""
    if no_install:
        return Environment.current()
    return _make_venv(
        folder,
        config.tests_requirements,
        what="tests_requirements",
        base_env=os.environ,
        timeout=timeout,
        output=output,
    )


def run_localtest(
    config: ProjectConfig,
    *,
    app_env: Environment,
    tests_env: Environment,
    startup_timeout: float,
    tests_timeout: float,
    base_env: Mapping[str, str],
    output: Output,
) -> int:
    """Serve the app, wait until it is healthy, run its tests; return their exit code."""
    env = _with_path(base_env, app_env)
    env.pop("SECRETS_PATH", None)
    if config.cloud.secrets is not None:
        env["SECRETS_PATH"] = str(config.cloud.secrets)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    tests_argv, test_env = prepare_tests(config, tests_env, base_env)

    try:
        listener = _listener()
    except OSError as exc:
        raise UsageError(f"cannot listen on {_LOCALHOST}: {exc.strerror or exc}") from None
    with listener:
        port = listener.getsockname()[1]
        app_argv = [
            str(app_env.python),
            "-m",
            "hypercorn",
            "--workers",
            "0",
            "--bind",
            f"fd://{listener.fileno()}",
            "--access-logfile",
            "-",
            "--error-logfile",
            "-",
            config.python_application,
        ]
        url = f"http://{_LOCALHOST}:{port}"
        output.info(f"serving {config.python_application} from {config.cloud.code} at {url}")
        app_child = _Child.start(
            app_argv,
            cwd=config.cloud.code,
            env=env,
            sink=sys.stderr,
            prefix="[app] ",
            pass_fds=(listener.fileno(),),
        )
    try:
        _wait_healthy(app_child, url + config.healthcheck_endpoint, timeout=startup_timeout)
        output.info("the app is up")
        return run_tests(
            config, tests_argv, test_env, url=url, timeout=tests_timeout, output=output
        )
    finally:
        app_child.stop()


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
        if no_install:
            app_env = tests_env = Environment.current()
        else:
            hypercorn = f"hypercorn=={importlib.metadata.version('hypercorn')}"
            requirements = config.cloud.code / "requirements.txt"
            app_requirements = [hypercorn]
            if requirements.is_file():
                app_requirements += ["-r", str(requirements)]
            app_env = _make_venv(
                Path(tmp) / "app",
                app_requirements,
                what="the app's requirements",
                base_env=os.environ,
                timeout=install_timeout,
                output=output,
            )
            tests_env = tests_environment(
                config,
                Path(tmp) / "tests",
                no_install=False,
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
