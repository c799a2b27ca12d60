"""``confide attest``: verify a DCAP quote or an RA-TLS certificate.

``attest cert`` is the low-level use of the one verifier
(:class:`~confide.client.EnclaveVerifier`): no name is asked for, and the
fingerprint (``--mrenclave``) is optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from confide.attestation import Quote, verify_quote
from confide.client import EnclavePolicy, EnclaveVerifier, fetch_enclave_certificate
from confide.errors import UsageError
from confide.wire import HostPort

from ._app import app, handle_errors
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
    evidence_source,
    load_certificate,
    parse_hex,
    read_file,
    rejections,
    verification_time,
)

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
    source = evidence_source(collateral, pccs_url, root_ca)
    raw = read_file(file, "quote")
    with rejections(out, raw):
        quote = Quote.from_bytes(raw)
        # A quote, not an enclave: the simulation policy is applied by the core (its own codes).
        material = source(quote, now, allow_simulation=True)
        now = verification_time(at)  # after the fetch (unless --at fixed it)
        result = verify_quote(
            quote, material.collateral, now=now, policy=policy, trust_anchor=material.trust_anchor
        )
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
    policy = EnclavePolicy(
        parse_hex(mrenclave, "--mrenclave", 32),
        None,  # a low-level check: no name was asked for
        allow_any_code=mrenclave is None,
        allow_any_name=True,
        allow_simulation=allow_simulation,
        allow_stale=True,  # a low-level check of a certificate (a file, or one fetched)
        checks=build_policy(None, mrsigner, None, None, accept_tcb, allow_debug, False),
    )
    if file is not None and host is None:
        cert = load_certificate(read_file(file, "certificate"), str(file))
    elif host is not None and file is None:
        address = HostPort.parse(host, "--host")
        cert = fetch_enclave_certificate(address, sni or address.host, timeout=10.0)
    else:
        raise UsageError("give exactly one of FILE or --host HOST:PORT")
    verifier = EnclaveVerifier(
        evidence_source(collateral, pccs_url, root_ca), policy, clock=lambda: verification_time(at)
    )
    with rejections(out, cert):
        verified = verifier.verify(cert)
    out.verification(verified.quote)
