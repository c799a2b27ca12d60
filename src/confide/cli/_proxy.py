"""``confide proxy``: browse a zero-trust app over plain HTTP on loopback, with no
certificate step and no trust in the operator.

The enclave's RA-TLS certificate is verified before the proxy starts (quote,
key binding, the expected fingerprint, a launch for DOMAIN); every upstream
connection is pinned to it, and a new certificate, or the same one once the
windows its verification relied on have ended, is verified again in full
before it is used. Only requests for the proxy's own loopback names, from its
own origin, are forwarded (ADR 0010).

Example::

    $ confide proxy 6a1f...c2.apps.example --fingerprint 9f2c... --listen 127.0.0.1:8080 \\
        --pccs-url https://pccs.example/sgx/certification/v4
    listening on http://127.0.0.1:8080
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import (
    Collateral,
    Quote,
    RatlsVerified,
    fetch_peer_certificate,
    quote_from_certificate,
    verify_ratls_certificate,
)
from confide.client import (
    AppContext,
    CertificatePin,
    OperatorClient,
    ProxyApp,
    ProxySettings,
    bind_loopback,
    loopback_hosts,
    serve_proxy,
    verify_launch,
)
from confide.errors import UsageError
from confide.wire import HostPort

from ._app import app, handle_errors
from ._output import Output
from ._verify_options import (
    AcceptOpt,
    CollateralOpt,
    PccsOpt,
    RootOpt,
    SimOpt,
    build_policy,
    load_anchor,
    load_collateral,
)

__all__ = ["proxy_command"]

#: Bound on fetching the certificate, and on every upstream call (seconds).
TIMEOUT = 30.0

Evidence = Callable[[x509.Certificate, datetime], tuple[Collateral, x509.Certificate | None]]


def _evidence(
    collateral: Path | None,
    pccs_url: str | None,
    operator: str | None,
    root: x509.Certificate | None,
) -> Evidence:
    """Where the collateral (and, for a simulated TEE, the root) comes from."""
    if sum(x is not None for x in (collateral, pccs_url, operator)) != 1:
        raise UsageError("give exactly one of --collateral FILE, --pccs-url URL or --operator URL")
    if operator is not None:
        url = operator

        def from_operator(
            cert: x509.Certificate, now: datetime
        ) -> tuple[Collateral, x509.Certificate | None]:
            with OperatorClient(url, None, timeout=TIMEOUT) as client:
                info = client.simulation()
            if info is None or info.collateral is None:
                raise UsageError(
                    f"the operator at {url} publishes no simulated TEE's collateral: its TEE is "
                    "real, so give --pccs-url URL or --collateral FILE"
                )
            return info.collateral, root or info.root_ca

        return from_operator

    def from_pccs_or_file(
        cert: x509.Certificate, now: datetime
    ) -> tuple[Collateral, x509.Certificate | None]:
        quote = Quote.from_bytes(quote_from_certificate(cert))
        return load_collateral(collateral, pccs_url, quote, now), root

    return from_pccs_or_file


def _write_ready(path: Path, url: str) -> None:
    """Write ``url`` to ``path`` at once (a reader never sees half of it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(url + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
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
    allow_simulation: SimOpt = False,
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
    upstream connection presents a certificate that does not verify gets 502.
    """
    output = Output()
    if (fingerprint is None) == (context_file is None):
        raise UsageError("give exactly one of --fingerprint HEX or --context FILE")
    if context_file is not None:
        fingerprint = AppContext.load(context_file).fingerprint.hex()
    listen_host, listen_port = HostPort.parse(listen, "--listen", allow_port_zero=True)
    upstream = HostPort.parse(connect, "--connect") if connect else (domain, 443)
    policy = build_policy(fingerprint, None, None, None, accept, False, allow_simulation)
    evidence = _evidence(collateral, pccs_url, operator, load_anchor(root_ca))

    def verify(cert: x509.Certificate) -> RatlsVerified:
        found, anchor = evidence(cert, datetime.now(UTC))
        now = datetime.now(UTC)  # after the fetch: collateral made during it is valid now
        verified = verify_ratls_certificate(
            cert, found, now=now, policy=policy, trust_anchor=anchor
        )
        verify_launch(cert, verified, domain)  # launched for this name, not another app
        return verified

    # Refuse a bad --listen before anything goes on the network.
    listener = bind_loopback(listen_host, listen_port, allow_any=unsafe_listen_any)
    try:
        cert = fetch_peer_certificate(*upstream, server_name=domain, timeout=TIMEOUT)
        verified = verify(cert)
        kind = "a SIMULATED " if verified.quote.simulated else "the "
        output.info(f"verified {kind}enclave of {domain} (fingerprint {fingerprint})")
        if verified.quote.simulated:
            output.warn("this enclave is simulated: its quote proves nothing about hardware")
        host, port = listener.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        allowed = loopback_hosts(listen_host, port, extra=allow_host or ())
        pin = CertificatePin(
            cert.public_bytes(Encoding.DER),
            verify=verify,
            log=lambda line: output.info(line),
            valid_until=verified.valid_until,
        )
        proxy = ProxyApp(
            ProxySettings(domain=domain, upstream=upstream, timeout=TIMEOUT, allowed_hosts=allowed),
            pin,
            log=lambda line: output.info(line),
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
