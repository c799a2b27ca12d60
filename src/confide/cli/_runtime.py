"""``confide runtime``: the enclave runtime (what Cosmian Enclave called ``mse-bootstrap``).

Exit codes: 0 stopped by SIGTERM or SIGINT; 1 a sealed state or package was
rejected; 2 the runtime could not run (bad argument, not configured within
``--timeout``, a sealed state of another measurement, no TEE); 3 (``EXIT_EXPIRED``)
it stopped serving at its measured ``--ratls`` expiry, with one line on stderr; 4
(``EXIT_APP_UNUSABLE``) the app cannot be imported as named (a missing module or attribute),
its last line ``error: app unusable: ...`` naming what is missing and the fix.

Example::

    $ confide runtime --app-id 8c7f... --application app:app --package app.pkg \\
        --host 0.0.0.0 --port 8443 --ratls 1900000000 --san app.example \\
        --state-dir /var/lib/confide --tee gramine --timeout 600
"""

from __future__ import annotations

import enum
import ipaddress
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from confide.errors import AppLoadError, RequirementError, UsageError
from confide.gramine import HOST_VARIABLE, LAUNCH_VARIABLE, PORT_VARIABLE
from confide.runtime import EXIT_EXPIRED, RuntimeEnd, RuntimeSettings, run_runtime
from confide.tee import Tee, select_tee
from confide.wire import APP_UNUSABLE_LINE, EXIT_APP_UNUSABLE

from ._app import app, handle_errors
from ._launch_options import (
    AppDirOpt,
    AppIdOpt,
    ApplicationOpt,
    CertificateOpt,
    NoSslOpt,
    PackageOpt,
    PlaincodeOpt,
    RatlsOpt,
    SanOpt,
    SubjectOpt,
    parse_app_id,
)
from ._output import stderr_logger

#: A listening host: an IP address or a DNS name (bounded: it may come from the host's
#: environment, :data:`~confide.gramine.HOST_VARIABLE`).
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _listen_host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_NAME.fullmatch(value):
            raise UsageError(
                f"--host (or {HOST_VARIABLE}): {value[:80]!r} is not an IP address nor a host name"
            ) from None
    return value


class TeeOption(enum.StrEnum):
    """``--tee``: where the quotes and sealing keys come from."""

    AUTO = "auto"
    GRAMINE = "gramine"
    SIMULATION = "simulation"
    TDX = "tdx"
    SIMULATION_TDX = "simulation-tdx"


@app.command("runtime")
@handle_errors
def runtime_command(
    ctx: typer.Context,
    app_id: AppIdOpt,
    application: ApplicationOpt,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="Folder of the sealed state (keys and secrets, encrypted to this enclave).",
            envvar="CONFIDE_STATE_DIR",
        ),
    ],
    package: PackageOpt = None,
    app_dir: AppDirOpt = None,
    plaincode: PlaincodeOpt = False,
    # Under Gramine the argv is fixed and names neither: the host passes them through
    # these two variables, the only ones the manifest lets in (ADR 0011: unmeasured).
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on.", envvar=HOST_VARIABLE)
    ] = "0.0.0.0",  # noqa: S104
    port: Annotated[
        int,
        typer.Option(
            "--port",
            help="Port to listen on (0: any free port).",
            min=0,
            max=65535,
            envvar=PORT_VARIABLE,
        ),
    ] = 443,
    ratls: RatlsOpt = None,
    certificate: CertificateOpt = None,
    no_ssl: NoSslOpt = False,
    san: SanOpt = None,
    subject: SubjectOpt = None,
    tee: Annotated[
        TeeOption,
        typer.Option("--tee", help="Which TEE to run on.", envvar="CONFIDE_TEE"),
    ] = TeeOption.AUTO,
    simulation_state: Annotated[
        Path | None,
        typer.Option(
            "--simulation-state",
            help="Folder of the simulated platform (with --tee simulation).",
            envvar="CONFIDE_SIM_STATE",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Stop if not configured within this many seconds."),
    ] = None,
    handoff: Annotated[
        Path | None,
        typer.Option(
            "--handoff",
            help="Also take client connections handed off by the operator's router at this "
            "Unix socket path (created 0600; put it in a private folder).",
        ),
    ] = None,
    expected_launch: Annotated[
        str | None,
        typer.Option(
            "--expected-launch",
            hidden=True,
            envvar=LAUNCH_VARIABLE,
            help="The launch manifest (canonical JSON) this runtime must compute; under "
            "Gramine the manifest fixes it in the measured environment.",
        ),
    ] = None,
    requirements: Annotated[
        Path | None,
        typer.Option(
            "--requirements",
            help="The app's requirements lock (measured: its SHA-256 is in the launch "
            "manifest); give --wheels with it.",
        ),
    ] = None,
    wheels: Annotated[
        Path | None,
        typer.Option(
            "--wheels",
            help="The operator's wheel cache: each locked wheel is read from it by its SHA-256 "
            "and installed only if it has that hash.",
        ),
    ] = None,
    relay_source: Annotated[
        list[str] | None,
        typer.Option(
            "--relay-source",
            help="An address that relays other clients' connections to the port (the "
            "operator's router): per-source connection limits do not apply to it. Repeatable.",
        ),
    ] = None,
) -> None:
    """Run an app in the enclave: attest over RA-TLS, take the owner's keys, serve the app."""
    now = datetime.now(UTC)
    settings = RuntimeSettings.from_arguments(
        app_id=parse_app_id(app_id),
        application=application,
        package=package,
        app_dir=app_dir,
        plaincode=plaincode,
        host=_listen_host(host),
        port=port,
        ratls_expiry=ratls,
        certificate=certificate,
        no_ssl=no_ssl,
        san=tuple(san or ()),
        subject=subject,
        state_dir=state_dir,
        timeout=timeout,
        now=now,
        handoff=handoff,
        relay_sources=tuple(relay_source or ()),
        requirements=requirements,
        wheels=wheels,
    )
    if expected_launch is not None and settings.manifest.to_json().decode() != expected_launch:
        # Under Gramine this copy is measured (loader.env is fixed) and the runtime's own
        # manifest goes into its certificate: they must be one, or verifiers that take the
        # certificate's manifest on the strength of a pinned MRENCLAVE would be misled.
        raise UsageError(
            f"the launch manifest computed here is not the one fixed in {LAUNCH_VARIABLE}",
            hint="the package, certificate or environment is not the one the enclave was "
            "launched for",
        )
    enclave = select_tee(
        tee.value, simulation_state=simulation_state, measurement=settings.measurement, now=now
    )
    serve_runtime(settings, enclave, now=now)


def serve_runtime(settings: RuntimeSettings, enclave: Tee, *, now: datetime) -> None:
    """Run the runtime on ``enclave``; its ends as exit codes (``confide runtime``,
    ``confide td-runtime``)."""
    try:
        end = run_runtime(settings, enclave, now=now, logger=stderr_logger("confide.runtime"))
    except AppLoadError as exc:
        # A line of its own and an exit status of its own: the supervisor does not restart it.
        # A refused wheel names its check's stable code (requirements.hash_mismatch, ...).
        code = f"{exc.code}: " if isinstance(exc, RequirementError) else ""
        typer.echo(f"{APP_UNUSABLE_LINE}{code}{exc}", err=True)
        raise typer.Exit(EXIT_APP_UNUSABLE) from None
    if end == RuntimeEnd.EXPIRED and settings.ratls_expiry is not None:
        typer.echo(
            f"expired: the measured RA-TLS expiry {settings.ratls_expiry.isoformat()} has "
            f"passed; the runtime stopped serving (exit {EXIT_EXPIRED})",
            err=True,
        )
        raise typer.Exit(EXIT_EXPIRED)
