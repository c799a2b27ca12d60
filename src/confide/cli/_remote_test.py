"""``confide test``: run a project's tests against its deployed, verified enclave.

The app context (``--context FILE``, else the newest context of the project's
app in the ``.confide/`` folder beside the project file, as ``confide deploy``
writes it) says where the app is and which code it must run. A ``confide
proxy`` of the app is started on 127.0.0.1 (on a port the kernel picks, read
back from its ready file): it verifies the enclave's RA-TLS certificate
against the context's fingerprint before it serves anything, and pins every
connection to it. The tests then run as ``confide localtest`` runs them, with
``TEST_REMOTE_URL`` the proxy's URL; the proxy is stopped and the command exits
with the tests' exit code.

The collateral (and, for a simulated TEE, its root) comes from
``--operator URL`` or ``--pccs-url URL``; without either, from the context's
operator when the app's TEE is simulated (accepted with ``--allow-simulation``
only), else from Intel's PCS.

Exit codes: the tests' exit code once they ran; 2 if they could not run (no
context, not a zero-trust app, the enclave did not verify, an install failed).

Example::

    $ confide deploy --path mse.toml
    $ confide test --path mse.toml
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Final

import typer

from confide.attestation import INTEL_PCS_URL
from confide.client import (
    CONTEXT_FOLDER,
    AppContext,
    ChildProcess,
    ProjectConfig,
    prepare_tests,
    run_tests,
    tests_environment,
)
from confide.errors import UsageError
from confide.wire import TlsMode

from ._app import app, handle_errors
from ._output import Output
from ._project import InstallTimeoutOpt, ProjectPathOpt, TestsTimeoutOpt, load_project
from ._tdx import TdReferenceOpt
from ._verify_options import OwnerOpt, SimOpt

_LOCALHOST: Final = "127.0.0.1"
#: How long an exited proxy's log may take to come out.
_STOP_GRACE: Final = 10.0
#: The TEE names of an operator's simulated TEEs (``AppContext.tee``).
_SIMULATED_TEES: Final = ("simulation", "simulation-tdx")


def newest_context(config: ProjectConfig) -> Path:
    """The newest app context of the project's app in ``.confide/`` beside its project file."""
    folder = config.path.parent / CONTEXT_FOLDER
    found: list[tuple[float, Path]] = []
    try:
        candidates = sorted(folder.glob("*.json"))
    except OSError as exc:  # pragma: no cover - glob swallows most errors
        raise UsageError(f"cannot read {folder}: {exc.strerror or exc}") from None
    for path in candidates:
        try:
            context = AppContext.load(path)
            mtime = path.stat().st_mtime
        except (UsageError, OSError):
            continue  # not a context, or not readable: not ours to judge here
        if context.name == config.name:
            found.append((mtime, path))
    if not found:
        raise UsageError(
            f"no app context of {config.name} in {folder}",
            hint="deploy it first (confide deploy), or give --context FILE",
        )
    return max(found)[1]


def _proxy_argv(
    context: AppContext,
    context_file: Path,
    ready_file: Path,
    *,
    connect: str | None,
    operator: str | None,
    pccs_url: str | None,
    allow_simulation: bool,
    owner: str | None = None,
    td_reference: Path | None = None,
) -> list[str]:
    if operator is not None and pccs_url is not None and owner is None:
        raise UsageError("give at most one of --operator URL and --pccs-url URL")
    if owner is not None and operator is None:
        operator = context.operator_url  # the owner's releases are in its operator's log
        if pccs_url is None and context.tee not in _SIMULATED_TEES:
            pccs_url = INTEL_PCS_URL
    if operator is None and pccs_url is None:
        if context.tee in _SIMULATED_TEES:
            operator = context.operator_url
        else:
            pccs_url = INTEL_PCS_URL
    router = connect or str(context.router)
    argv = [
        sys.executable,
        "-c",
        "from confide.cli import main; main()",
        "proxy",
        context.domains[0],
        "--listen",
        f"{_LOCALHOST}:0",
        "--context",
        str(context_file),
        "--connect",
        router,
        "--ready-file",
        str(ready_file),
    ]
    if operator is not None:
        argv += ["--operator", operator]
    if pccs_url is not None:
        argv += ["--pccs-url", pccs_url]
    if owner is not None:
        argv += ["--owner", owner]
    if allow_simulation:
        argv.append("--allow-simulation")
    if td_reference is not None:
        argv += ["--td-reference", str(td_reference)]
    return argv


def _wait_ready(proxy: ChildProcess, ready_file: Path, timeout: float) -> str:
    """The proxy's URL once it listens (it verified the enclave first)."""
    deadline = time.monotonic() + timeout
    interval = 0.05
    while True:
        if ready_file.is_file():
            url = ready_file.read_text(encoding="utf-8").strip()
            if url:
                return url
        if proxy.process.poll() is not None:
            code = proxy.wait(_STOP_GRACE)  # and its log is all out
            raise UsageError(
                f"the proxy exited (code {code}) before serving: the enclave was not verified "
                "or could not be reached; nothing was tested",
                hint="see its log above",
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UsageError(f"the proxy did not start within {timeout:g}s")
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, 0.5)


@app.command("test")
@handle_errors
def test_command(
    ctx: typer.Context,
    path: ProjectPathOpt = Path("."),
    context_file: Annotated[
        Path | None,
        typer.Option(
            "--context",
            help="The deployed app's context (default: the newest of the app in .confide/).",
        ),
    ] = None,
    connect: Annotated[
        str | None,
        typer.Option(
            "--connect",
            help="HOST:PORT to reach the app at (default: the context's router).",
            envvar="CONFIDE_CONNECT",
        ),
    ] = None,
    allow_simulation: SimOpt = False,
    td_reference: TdReferenceOpt = None,
    operator: Annotated[
        str | None,
        typer.Option(
            "--operator",
            help="Take a simulated TEE's root and collateral from this operator "
            "(with --allow-simulation, tests only).",
            envvar="CONFIDE_OPERATOR_URL",
        ),
    ] = None,
    pccs_url: Annotated[
        str | None,
        typer.Option(
            "--pccs-url", help="Collateral from this PCCS or Intel PCS.", envvar="CONFIDE_PCCS_URL"
        ),
    ] = None,
    owner: OwnerOpt = None,
    no_install: Annotated[
        bool,
        typer.Option(
            "--no-install", help="Run the tests with the current interpreter: nothing is installed."
        ),
    ] = False,
    startup_timeout: Annotated[
        float,
        typer.Option("--startup-timeout", help="Seconds to wait for the verified proxy.", min=0.1),
    ] = 120.0,
    tests_timeout: TestsTimeoutOpt = 1800.0,
    install_timeout: InstallTimeoutOpt = 900.0,
) -> None:
    """Run the project's tests against its deployed enclave, verified (exit: the tests')."""
    output = Output()
    config = load_project(path, output)
    if context_file is None:
        context_file = newest_context(config)
    context = AppContext.load(context_file)
    if context.tls != TlsMode.RATLS:
        raise UsageError(
            f"the app {context.app_id} is not zero trust (its TLS is {context.tls.value}): "
            "its enclave cannot be verified, so confide test does not test it",
            hint="deploy it without [cloud.ssl] and --untrusted-ssl",
        )
    output.info(f"testing the app {context.name} ({context.app_id}) from {context_file}")
    with tempfile.TemporaryDirectory(prefix="confide-test-") as tmp:
        tests_env = tests_environment(
            config,
            Path(tmp) / "tests",
            no_install=no_install,
            timeout=install_timeout,
            output=output,
        )
        tests_argv, test_env = prepare_tests(config, tests_env, os.environ)
        ready_file = Path(tmp) / "proxy.url"
        proxy_argv = _proxy_argv(
            context,
            context_file,
            ready_file,
            connect=connect,
            operator=operator,
            pccs_url=pccs_url,
            allow_simulation=allow_simulation,
            owner=owner,
            td_reference=td_reference,
        )
        proxy = ChildProcess.start(
            proxy_argv, cwd=Path(tmp), env=os.environ, sink=sys.stderr, prefix="[proxy] "
        )
        try:
            url = _wait_ready(proxy, ready_file, startup_timeout)
            output.info(f"the enclave of {context.domains[0]} verified; proxied at {url}")
            code = run_tests(
                config, tests_argv, test_env, url=url, timeout=tests_timeout, output=output
            )
        finally:
            proxy.stop()
    if code == 0:
        output.info("the tests passed")
    else:
        output.warn(f"the tests failed (exit {code})")
    raise typer.Exit(code)
