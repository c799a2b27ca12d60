"""``confide attest``: verify a DCAP quote or an RA-TLS certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from confide.attestation import (
    Quote,
    fetch_peer_certificate,
    quote_from_certificate,
    verify_quote,
    verify_ratls_certificate,
)
from confide.errors import AttestationError, UsageError
from confide.wire import HostPort

from ._app import EXIT_REJECTED, app, handle_errors
from ._output import Output
from ._verify_options import (
    AcceptOpt,
    AtOpt,
    CollateralOpt,
    DebugEnclaveOpt,
    JsonOpt,
    MrenclaveOpt,
    MrsignerOpt,
    MrtdOpt,
    PccsOpt,
    ReportDataOpt,
    RootOpt,
    SimOpt,
    build_policy,
    load_anchor,
    load_certificate,
    load_collateral,
    read_file,
    verification_time,
)

__all__ = ["attest_app"]

attest_app = typer.Typer(
    help="Verify DCAP quotes and RA-TLS certificates (exit 0 verified, 1 rejected, 2 unusable).",
    no_args_is_help=True,
)
app.add_typer(attest_app, name="attest")


@attest_app.command("quote")
@handle_errors
def attest_quote(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The raw quote (binary).")],
    collateral: CollateralOpt = None,
    pccs_url: PccsOpt = None,
    at: AtOpt = None,
    root_ca: RootOpt = None,
    allow_simulation: SimOpt = False,
    mrenclave: MrenclaveOpt = None,
    mrsigner: MrsignerOpt = None,
    mr_td: MrtdOpt = None,
    report_data: ReportDataOpt = None,
    accept_tcb: AcceptOpt = None,
    allow_debug: DebugEnclaveOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Verify a DCAP quote (SGX v3, TDX v4/v5) against its collateral and a policy."""
    out = Output(json_mode=json_)
    now = verification_time(at)
    policy = build_policy(
        mrenclave, mrsigner, mr_td, report_data, accept_tcb, allow_debug, allow_simulation
    )
    anchor = load_anchor(root_ca)
    raw = read_file(file, "quote")
    quote: Quote | None = None
    try:
        quote = Quote.from_bytes(raw)
        coll = load_collateral(collateral, pccs_url, quote, now)
        now = verification_time(at)  # after the fetch (unless --at fixed it)
        result = verify_quote(quote, coll, now=now, policy=policy, trust_anchor=anchor)
    except AttestationError as err:
        out.rejection(err, quote)
        if not json_:
            out.error(err)
        raise typer.Exit(EXIT_REJECTED) from None
    out.verification(result)


@attest_app.command("cert")
@handle_errors
def attest_cert(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="The RA-TLS certificate, PEM or DER.")] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Fetch the certificate from HOST:PORT.")
    ] = None,
    sni: Annotated[
        str | None, typer.Option("--sni", help="Server name to send (default: the host).")
    ] = None,
    collateral: CollateralOpt = None,
    pccs_url: PccsOpt = None,
    at: AtOpt = None,
    root_ca: RootOpt = None,
    allow_simulation: SimOpt = False,
    mrenclave: MrenclaveOpt = None,
    mrsigner: MrsignerOpt = None,
    accept_tcb: AcceptOpt = None,
    allow_debug: DebugEnclaveOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Verify an RA-TLS certificate: its quote, and the binding of its key to the quote."""
    out = Output(json_mode=json_)
    now = verification_time(at)
    policy = build_policy(
        mrenclave, mrsigner, None, None, accept_tcb, allow_debug, allow_simulation
    )
    anchor = load_anchor(root_ca)
    if file is not None and host is None:
        cert = load_certificate(read_file(file, "certificate"), str(file))
    elif host is not None and file is None:
        hostname, port = HostPort.parse(host, "--host")
        cert = fetch_peer_certificate(hostname, port, server_name=sni or hostname, timeout=10.0)
    else:
        raise UsageError("give exactly one of FILE or --host HOST:PORT")
    quote: Quote | None = None
    try:
        quote = Quote.from_bytes(quote_from_certificate(cert))
        coll = load_collateral(collateral, pccs_url, quote, now)
        now = verification_time(at)  # after the fetch (unless --at fixed it)
        verified = verify_ratls_certificate(cert, coll, now=now, policy=policy, trust_anchor=anchor)
    except AttestationError as err:
        out.rejection(err, quote)
        if not json_:
            out.error(err)
        raise typer.Exit(EXIT_REJECTED) from None
    out.verification(verified.quote)
