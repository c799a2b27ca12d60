"""The ``confide runtime`` arguments that launch a given :class:`LaunchManifest`.

What a backend (the operator's supervisor) uses to start a runtime whose
measurement is the manifest it stored: the inverse of
:meth:`RuntimeSettings.from_arguments`. :func:`check_launch` then builds the
settings the runtime will build from those same inputs and refuses a launch
that would measure differently (another installed runtime, another package),
so a mismatch is caught before a process starts rather than by the owner.

Example::

    >>> args = runtime_arguments(  # doctest: +SKIP
    ...     manifest, package=Path("blobs/ab/cd..."), certificate=None, host="127.0.0.1",
    ...     port=40123, state_dir=Path("apps/<id>/state"), tee="simulation",
    ...     simulation_state=Path("simulation"),
    ... )
    >>> subprocess.Popen(["confide", "runtime", *args])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

from confide.errors import UsageError
from confide.wire import LaunchManifest, TlsMode

from ._settings import RuntimeSettings

#: ``--tee`` of a launch (``auto`` is not offered: a backend knows what it runs on).
LaunchTee = Literal["gramine", "simulation", "simulation-tdx"]


def _tls_arguments(manifest: LaunchManifest, certificate: Path | None) -> list[str]:
    if manifest.tls == TlsMode.OWNER:
        if certificate is None:
            raise UsageError("a certificate-mode launch needs the owner's certificate file")
        return ["--certificate", str(certificate)]
    if certificate is not None:
        raise UsageError(f"a {manifest.tls.launch}-mode launch takes no certificate file")
    if manifest.tls == TlsMode.RATLS:
        if manifest.ratls_expiry is None:  # pragma: no cover - LaunchManifest enforces it
            raise UsageError("an RA-TLS launch needs its expiry")
        return ["--ratls", str(manifest.ratls_expiry)]
    return ["--no-ssl"]


def runtime_arguments(
    manifest: LaunchManifest,
    *,
    package: Path,
    certificate: Path | None,
    host: str,
    port: int,
    state_dir: Path,
    tee: LaunchTee,
    simulation_state: Path | None,
    timeout: float | None = None,
    requirements: Path | None = None,
    wheels: Path | None = None,
) -> list[str]:
    """The arguments after ``confide runtime`` that launch ``manifest``.

    ``package`` must be the encrypted package whose SHA-256 the manifest holds
    and ``certificate`` (certificate mode only) the owner's chain whose leaf it
    holds; :func:`check_launch` verifies both. ``requirements`` is the lock whose
    SHA-256 the manifest holds (given exactly when it holds one) and ``wheels`` the
    wheel cache the runtime checks every wheel of it against (ADR 0024).
    """
    if (manifest.requirements_sha256 is not None) != (requirements is not None) or (
        requirements is None
    ) != (wheels is None):
        raise UsageError(
            "a launch with a requirements lock gives its lock file and the wheel cache, "
            "and only such a launch"
        )
    if (tee in ("simulation", "simulation-tdx")) != (simulation_state is not None):
        raise UsageError("give a simulation state folder exactly with the simulation TEE")
    args = [
        "--app-id",
        str(manifest.app_id),
        "--application",
        manifest.application,
        "--package",
        str(package),
        "--host",
        host,
        "--port",
        str(port),
        *_tls_arguments(manifest, certificate),
    ]
    for name in manifest.san:
        args += ["--san", name]
    if manifest.subject is not None:
        args += ["--subject", manifest.subject]
    args += ["--state-dir", str(state_dir), "--tee", tee]
    if simulation_state is not None:
        args += ["--simulation-state", str(simulation_state)]
    if timeout is not None:
        args += ["--timeout", repr(timeout)]
    if requirements is not None and wheels is not None:
        args += ["--requirements", str(requirements), "--wheels", str(wheels)]
    return args


def check_launch(
    manifest: LaunchManifest,
    *,
    package: Path,
    certificate: Path | None,
    state_dir: Path,
    now: datetime,
    runtime_sha256: bytes | None = None,
    requirements: Path | None = None,
    wheels: Path | None = None,
) -> RuntimeSettings:
    """The settings the runtime builds from these inputs; raise unless they measure ``manifest``.

    Reads and hashes the package (and the certificate) exactly as the runtime
    does. ``runtime_sha256`` defaults to the installed runtime's code hash.
    """
    settings = RuntimeSettings.from_arguments(
        app_id=manifest.app_id,
        application=manifest.application,
        package=package,
        app_dir=None,
        plaincode=False,
        host="127.0.0.1",
        port=0,
        ratls_expiry=manifest.ratls_expiry,
        certificate=certificate if manifest.tls == TlsMode.OWNER else None,
        no_ssl=manifest.tls == TlsMode.OPERATOR,
        san=manifest.san,
        subject=manifest.subject,
        state_dir=state_dir,
        timeout=None,
        now=now,
        runtime_sha256=runtime_sha256,
        requirements=requirements,
        wheels=wheels,
    )
    launched = settings.manifest
    if launched != manifest:
        differs = sorted(
            key for key, value in manifest.to_dict().items() if launched.to_dict().get(key) != value
        )
        raise UsageError(
            f"the launch of app {manifest.app_id} would not measure as its manifest: "
            f"{', '.join(differs)} differ",
            hint="the installed Confide runtime or the stored package is not the one the app "
            "was deployed with",
        )
    return settings


def confide_command() -> tuple[str, ...]:
    """``confide`` as installed beside this Python, else this Python running the CLI."""
    script = Path(sys.executable).with_name("confide")
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (sys.executable, "-c", "from confide.cli import main; main()")


def start_child(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    output: IO[bytes] | None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (no shell) in its own session, so :func:`stop_child` reaches all of it.

    The one way Confide starts a child process (a runtime, the local test app, the
    operator in tests and benchmarks). ``env`` is its whole environment (``None``: ours);
    stdin is ``/dev/null``; stdout and stderr both go to ``output`` (``None``: a pipe
    the caller reads); no descriptor is inherited but ``pass_fds``.
    """
    return subprocess.Popen(  # noqa: S603 - the caller's argv, no shell
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if output is None else output,
        stderr=subprocess.STDOUT,
        pass_fds=tuple(pass_fds),
        close_fds=True,
        start_new_session=True,
    )


def stop_child(process: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM to the child's process group, SIGKILL after ``grace`` seconds; its exit code."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # its own session: only what we started
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(timeout=grace)
    return process.wait(timeout=grace)
