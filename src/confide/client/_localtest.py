"""Running a project without an enclave: its environments, its app, its tests.

The library under ``confide localtest`` and ``confide test``: a throwaway virtual
environment per role (:func:`make_venv`), the app served with hypercorn on a
loopback listener handed to it (:func:`run_localtest`), and the project's tests
run against a URL (:func:`prepare_tests`, :func:`run_tests`). Children run in
their own sessions (:class:`ChildProcess`), their output copied to our streams.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Protocol

import httpx

from confide.errors import UsageError
from confide.runtime import bind_listener, start_child, stop_child

from ._config import ProjectConfig

_LOCALHOST: Final = "127.0.0.1"
#: How long a stopped app or test run gets to exit before it is killed.
_STOP_GRACE: Final = 10.0
_POLL_TIMEOUT: Final = 2.0
_POLL_MAX_INTERVAL: Final = 0.5


class Progress(Protocol):
    """Where progress lines go (the CLI's ``Output``)."""

    def info(self, text: str) -> None: ...


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
class ChildProcess:
    """A child in its own session whose output is copied, line by line, to one of our streams."""

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
    ) -> ChildProcess:
        try:
            process = start_child(argv, env=env, output=None, cwd=cwd, pass_fds=pass_fds)
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
        stop_child(self.process, _STOP_GRACE)
        self.pump.join(timeout=_STOP_GRACE)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _run_to_end(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> int:
    child = ChildProcess.start(argv, cwd=cwd, env=env, sink=sys.stderr)
    try:
        code = child.wait(timeout)
        if code is None:
            raise UsageError(f"{' '.join(argv[:4])} ... did not finish within {timeout:g}s")
        return code
    finally:
        child.stop()


def make_venv(
    folder: Path,
    requirements: Sequence[str],
    *,
    what: str,
    base_env: Mapping[str, str],
    timeout: float,
    output: Progress,
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


def _wait_healthy(app_child: ChildProcess, url: str, *, timeout: float) -> None:
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
    output: Progress,
) -> int:
    """Run the tests (from :func:`prepare_tests`) against ``url``; return their exit code."""
    test_env = dict(env)
    test_env["TEST_REMOTE_URL"] = url
    output.info(f"running {config.tests_cmd!r} in {config.cloud.tests}")
    tests_child = ChildProcess.start(argv, cwd=config.cloud.tests, env=test_env, sink=sys.stdout)
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
    config: ProjectConfig, folder: Path, *, no_install: bool, timeout: float, output: Progress
) -> Environment:
    """Where the tests run: the current interpreter, or a new venv in ``folder``."""
    if no_install:
        return Environment.current()
    return make_venv(
        folder,
        config.tests_requirements,
        what="tests_requirements",
        base_env=os.environ,
        timeout=timeout,
        output=output,
    )


def app_environment(
    config: ProjectConfig, folder: Path, *, no_install: bool, timeout: float, output: Progress
) -> Environment:
    """Where the app runs: the current interpreter, or a new venv in ``folder`` with hypercorn
    (this Confide's version) and the code folder's ``requirements.txt``."""
    if no_install:
        return Environment.current()
    hypercorn = f"hypercorn=={importlib.metadata.version('hypercorn')}"
    requirements = config.cloud.code / "requirements.txt"
    app_requirements = [hypercorn]
    if requirements.is_file():
        app_requirements += ["-r", str(requirements)]
    return make_venv(
        folder,
        app_requirements,
        what="the app's requirements",
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
    output: Progress,
) -> int:
    """Serve the app, wait until it is healthy, run its tests; return their exit code."""
    env = _with_path(base_env, app_env)
    env.pop("SECRETS_PATH", None)
    if config.cloud.secrets is not None:
        env["SECRETS_PATH"] = str(config.cloud.secrets)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    tests_argv, test_env = prepare_tests(config, tests_env, base_env)

    with bind_listener(_LOCALHOST, 0, backlog=128, role="local app server") as listener:
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
        app_child = ChildProcess.start(
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
