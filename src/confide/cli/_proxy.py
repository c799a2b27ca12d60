"""``confide proxy``: browse a zero-trust app over plain HTTP on loopback, with no
certificate step and no trust in the operator.

The enclave's RA-TLS certificate is verified before the proxy starts (quote,
key binding, the expected fingerprint, a launch for DOMAIN); every upstream
connection is pinned to it, and a new certificate, or the same one once the
windows its verification relied on have ended, is verified again in full
before it is used. Only requests for the proxy's own loopback names, from its
own origin, are forwarded (ADR 0010).
What was verified is printed here, the trust anchor, and shown in the browser
at ``/.well-known/confide/``, a convenience view on the app's own origin
(ADR 0026).

Example::

    $ confide proxy 6a1f...c2.apps.example --fingerprint 9f2c... --listen 127.0.0.1:8080 \\
        --pccs-url https://pccs.example/sgx/certification/v4
    listening on http://127.0.0.1:8080
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.serialization import Encoding

from confide.client import (
    PAGE_PATH,
    AppContext,
    CertificatePin,
    ChallengeClient,
    EnclavePolicy,
    EnclaveVerifier,
    ProxyApp,
    ProxySettings,
    bind_loopback,
    fetch_enclave_certificate,
    loopback_hosts,
    serve_proxy,
)
from confide.errors import UsageError
from confide.runtime import write_atomically
from confide.wire import HostPort

from ._app import app, handle_errors
from ._output import Output
from ._tdx import TdReferenceOpt, load_td_reference
from ._verify_options import (
    AcceptOpt,
    CollateralOpt,
    LogKeyOpt,
    OwnerOpt,
    PccsOpt,
    RootOpt,
    SimOpt,
    build_policy,
    evidence_source,
    parse_hex,
    release_source,
)

#: Bound on fetching the certificate, and on every upstream call (seconds).
TIMEOUT = 30.0


def _write_ready(path: Path, url: str) -> None:
    """Write ``url`` to ``path`` at once (a reader never sees half of it)."""
    try:
        write_atomically(path, (url + "\n").encode())
    except OSError as exc:
        raise UsageError(f"cannot write the ready file {path}: {exc.strerror or exc}") from None


@app.command("proxy")
@handle_errors
def proxy_command(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="The app's domain (SNI and Host upstream).")],
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            help="HOST:PORT to serve plain HTTP on (loopback only; port 0: any free port).",
            envvar="CONFIDE_PROXY_LISTEN",
        ),
    ] = "127.0.0.1:8080",
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="The app's expected fingerprint (MRENCLAVE, hex).",
            envvar="CONFIDE_FINGERPRINT",
        ),
    ] = None,
    context_file: Annotated[
        Path | None,
        typer.Option("--context", help="Take the expected fingerprint from this app context."),
    ] = None,
    connect: Annotated[
        str | None,
        typer.Option(
            "--connect",
            help="HOST:PORT to connect to (default DOMAIN:443), e.g. the operator's router.",
            envvar="CONFIDE_PROXY_CONNECT",
        ),
    ] = None,
    collateral: CollateralOpt = None,
    pccs_url: PccsOpt = None,
    operator: Annotated[
        str | None,
        typer.Option(
            "--operator",
            help="Take a simulated TEE's root and collateral from this operator "
            "(GET /api/v1/simulation; with --allow-simulation, tests only).",
            envvar="CONFIDE_OPERATOR_URL",
        ),
    ] = None,
    root_ca: RootOpt = None,
    owner: OwnerOpt = None,
    log_key: LogKeyOpt = None,
    allow_simulation: SimOpt = False,
    td_reference: TdReferenceOpt = None,
    accept: AcceptOpt = None,
    unsafe_listen_any: Annotated[
        bool,
        typer.Option(
            "--unsafe-listen-any",
            help="Allow a non-loopback --listen address (the app's traffic is then plain HTTP "
            "on that network).",
        ),
    ] = False,
    ready_file: Annotated[
        Path | None,
        typer.Option("--ready-file", help="Write the proxy's URL to this file once it listens."),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also answer requests with this Host name (repeatable; default: only the "
            "proxy's own loopback names, against DNS rebinding).",
        ),
    ] = None,
) -> None:
    """Serve a zero-trust app as plain HTTP on loopback, pinned to its verified enclave.

    The enclave's RA-TLS certificate is verified first (exit 1 if it is not
    the expected fingerprint); the proxy then forwards every request over TLS
    to that certificate only, until SIGINT or SIGTERM. A request whose
    upstream connection presents a certificate that does not verify gets 502
    (a browser: the verification page with the reason). What was verified:
    http://LISTEN/.well-known/confide/ (never forwarded to the app).
    """
    output = Output()
    if fingerprint is not None and context_file is not None:
        raise UsageError("give at most one of --fingerprint HEX and --context FILE")
    if fingerprint is None and context_file is None and owner is None:
        raise UsageError("give --fingerprint HEX, --context FILE or --owner KEY")
    if context_file is not None:
        fingerprint = AppContext.load(context_file).fingerprint.hex()
    listen_at = HostPort.parse(listen, "--listen", allow_port_zero=True)
    upstream = HostPort.parse(connect, "--connect") if connect else HostPort(domain, 443)
    if collateral is not None and pccs_url is not None:
        raise UsageError("give at most one of --collateral FILE and --pccs-url URL")
    if collateral is None and pccs_url is None and operator is None:
        raise UsageError("give one of --collateral FILE, --pccs-url URL or --operator URL")
    owner_key, releases = release_source(owner, operator, log_key, timeout=TIMEOUT)
    policy = EnclavePolicy(
        parse_hex(fingerprint, "--fingerprint", 32),
        domain,
        owner=owner_key,
        allow_simulation=allow_simulation,
        checks=build_policy(None, None, None, None, accept, False, False),
        td_reference=load_td_reference(td_reference),
    )
    verifier = EnclaveVerifier(
        evidence_source(collateral, pccs_url, root_ca, operator=operator, timeout=TIMEOUT),
        policy,
        releases=releases,
        # Each certificate verified is challenged on a pinned connection (ADR 0021).
        fresh=ChallengeClient(upstream, domain, timeout=TIMEOUT),
    )
    # Refuse a bad --listen before anything goes on the network.
    listener = bind_loopback(listen_at.host, listen_at.port, allow_any=unsafe_listen_any)
    try:
        verified = verifier.verify(fetch_enclave_certificate(upstream, domain, timeout=TIMEOUT))
        kind = "a SIMULATED " if verified.simulated else "the "
        measured = verified.measurement.hex() if verified.measurement else fingerprint
        output.info(f"verified {kind}enclave of {domain} (fingerprint {measured})")
        quote = verified.quote
        output.info(
            f"TCB {quote.tcb_status.value}"
            + (f" ({', '.join(quote.advisory_ids)})" if quote.advisory_ids else "")
            + f"; this verification holds until {verified.valid_until.isoformat()}"
        )
        if verified.release is not None:
            output.info(
                f"it runs a release of owner {verified.release.owner.key_id}, logged at index "
                f"{verified.release.log_index}; each new certificate is checked the same way"
            )
        if verified.simulated:
            output.warn("this enclave is simulated: its quote proves nothing about hardware")
        host, port = listener.getsockname()[:2]
        url = f"http://{HostPort(host, port)}"
        allowed = loopback_hosts(listen_at.host, port, extra=allow_host or ())
        pin = CertificatePin(
            verified.certificate.public_bytes(Encoding.DER),
            verify=verifier.verify,
            log=lambda line: output.info(line),
            valid_until=verified.valid_until,
            verified=verified,
        )
        proxy = ProxyApp(
            ProxySettings(
                domain=domain,
                upstream=(upstream.host, upstream.port),
                timeout=TIMEOUT,
                allowed_hosts=allowed,
            ),
            pin,
            log=lambda line: output.info(line),
            policy=policy,
        )
        output.info(
            f"what was verified, in the browser: {url}{PAGE_PATH} (a convenience view on the "
            "app's own origin, which the app could imitate: this terminal is what to rely on)"
        )
        output.info(f"listening on {url}")
        if ready_file is not None:
            _write_ready(ready_file, url)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await serve_proxy(proxy, listener, shutdown_trigger=stop.wait)

        asyncio.run(main())
    finally:
        listener.close()
    output.info("proxy stopped")
