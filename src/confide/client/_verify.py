"""Verifying an app's enclave from outside: fetch its RA-TLS certificate, check it, pin it.

The owner (``confide deploy``) and the app user (``confide verify``) run the
same checks: the certificate's quote verifies against a trust anchor with its
collateral, binds the certificate's key, and carries the expected fingerprint
(MRENCLAVE); and the enclave was launched for the name asked for
(:func:`verify_launch`: the launch manifest the certificate carries measures to
the quote's MRENCLAVE and lists that name), with or without a fingerprint.
Only then is anything sent, over a connection pinned to that certificate
(:func:`pinned_client`).

Where the trust material comes from is decided once (:func:`trust_material`):
Intel's root and collateral from Intel PCS (or a PCCS) for a real TEE; for a
simulated one, the operator's published simulation root and collateral, and
only when simulation is explicitly allowed.

Example::

    >>> from confide.client import fetch_enclave_certificate, trust_material
    >>> cert = fetch_enclave_certificate(router, "app.example", timeout=10)  # doctest: +SKIP
    >>> material = trust_material(cert, now, simulation=None, allow_simulation=False,
    ...                           collateral=pcs_fetch)  # doctest: +SKIP
    >>> verify_enclave(cert, material, now=now, fingerprint=expected,
    ...                name="app.example")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import (
    RATLS_QUOTE_OID,
    Check,
    Collateral,
    Policy,
    Quote,
    RatlsVerified,
    fetch_peer_certificate,
    is_simulation_root,
    quote_from_certificate,
    verify_ratls_certificate,
)
from confide.errors import (
    AttestationError,
    FormatError,
    PolicyError,
    SimulationError,
    UsageError,
)
from confide.wire import LAUNCH_MANIFEST_OID, MAX_MANIFEST_SIZE, HostPort, LaunchManifest

from ._api import SimulationInfo

__all__ = [
    "SIMULATION_REFUSED",
    "CollateralSource",
    "TrustMaterial",
    "fetch_enclave_certificate",
    "has_quote",
    "pinned_client",
    "trust_material",
    "verify_enclave",
    "verify_launch",
]

#: What is said when an enclave runs on a simulated TEE and that was not allowed.
SIMULATION_REFUSED: Final = (
    "the enclave runs in simulation mode: pass --allow-simulation only for tests"
)

#: Fetches the collateral for a quote at a time (Intel PCS, a PCCS, a file).
CollateralSource = Callable[[Quote, datetime], Collateral]


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    """The collateral and trust anchor a certificate's quote is verified with."""

    collateral: Collateral
    #: ``None``: Intel's SGX Root CA.
    trust_anchor: x509.Certificate | None
    #: The anchor is a simulation root (only with ``allow_simulation``).
    simulated: bool


def has_quote(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries an RA-TLS quote (an owner's or operator's certificate does not)."""
    try:
        cert.extensions.get_extension_for_oid(RATLS_QUOTE_OID)
    except x509.ExtensionNotFound:
        return False
    return True


def fetch_enclave_certificate(
    address: HostPort, server_name: str, *, timeout: float
) -> x509.Certificate:
    """The certificate served for ``server_name`` (SNI) at ``address`` (not trusted yet)."""
    return fetch_peer_certificate(
        address.host, address.port, server_name=server_name, timeout=timeout
    )


def trust_material(
    cert: x509.Certificate,
    now: datetime,
    *,
    simulation: SimulationInfo | None,
    allow_simulation: bool,
    collateral: CollateralSource | None,
    trust_anchor: x509.Certificate | None = None,
) -> TrustMaterial:
    """Decide what ``cert``'s quote is verified against.

    ``simulation`` is the operator's ``GET /simulation`` (``None``: a real TEE,
    or not asked). A simulated TEE is refused unless ``allow_simulation``;
    then its root is the anchor and its collateral is used, unless
    ``collateral`` is given. Otherwise ``collateral`` fetches the quote's
    collateral and ``trust_anchor`` (default Intel's root) is the anchor.
    """
    if simulation is not None:
        if not allow_simulation:
            raise SimulationError(
                "policy.simulation",
                SIMULATION_REFUSED,
                hint="a simulated TEE proves nothing about the hardware",
            )
        if collateral is not None:
            coll = collateral(Quote.from_bytes(quote_from_certificate(cert)), now)
        elif simulation.collateral is not None:
            coll = simulation.collateral
        else:
            raise SimulationError(
                "simulation.collateral",
                "the operator's TEE is simulated but it publishes no collateral",
                hint="give --collateral FILE",
            )
        return TrustMaterial(coll, trust_anchor or simulation.root_ca, simulated=True)
    if collateral is None:
        raise UsageError("no collateral source to verify the quote with")
    quote = Quote.from_bytes(quote_from_certificate(cert))
    simulated = trust_anchor is not None and is_simulation_root(trust_anchor)
    if (simulated or _chain_ends_at_simulation_root(quote)) and not allow_simulation:
        # Said before any collateral is fetched: Intel's PCS knows no simulated platform.
        raise SimulationError(
            "policy.simulation",
            SIMULATION_REFUSED,
            hint="a simulated TEE proves nothing about the hardware",
        )
    return TrustMaterial(collateral(quote, now), trust_anchor, simulated=simulated)


def _chain_ends_at_simulation_root(quote: Quote) -> bool:
    """Whether the quote's own PCK chain names a simulation root (a hint, not trust)."""
    try:
        chain = x509.load_pem_x509_certificates(quote.certification.pck_cert_chain.rstrip(b"\x00"))
    except ValueError:
        return False  # the verifier reports a malformed chain itself
    return bool(chain) and is_simulation_root(chain[-1])


def launch_manifest_bytes(cert: x509.Certificate) -> bytes:
    """The launch manifest bytes ``cert`` carries (not trusted: see :func:`verify_launch`)."""
    try:
        ext = cert.extensions.get_extension_for_oid(LAUNCH_MANIFEST_OID)
    except x509.ExtensionNotFound:
        raise PolicyError(
            "launch.absent",
            "the enclave's certificate carries no launch manifest, so which names it was "
            "launched for cannot be checked",
            expected=f"extension {LAUNCH_MANIFEST_OID.dotted_string}",
            hint="the enclave runs a Confide runtime older than this client",
        ) from None
    except ValueError as exc:
        raise FormatError(
            "launch.format", "the certificate's extensions are malformed", detail=str(exc)
        ) from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - our OID
        raise FormatError("launch.format", "the launch manifest extension has an unexpected type")
    if len(value.value) > MAX_MANIFEST_SIZE:
        raise FormatError(
            "launch.format",
            "the launch manifest in the certificate is too large",
            observed=f"{len(value.value)} bytes",
            expected=f"at most {MAX_MANIFEST_SIZE}",
        )
    return value.value


def verify_launch(cert: x509.Certificate, verified: RatlsVerified, name: str) -> LaunchManifest:
    """The launch manifest of a verified enclave, proven to be about ``name``.

    ``verified`` is :func:`~confide.attestation.verify_ratls_certificate`'s
    result for ``cert``. The manifest the certificate carries must measure to
    the quote's MRENCLAVE (so it is the one the enclave was launched with,
    whoever delivered it) and list ``name`` among its names: an operator that
    routes one app's name to another app's enclave is caught here, with or
    without a fingerprint. Raises :class:`PolicyError` ``launch.absent``,
    ``launch.measurement`` or ``launch.name``, or :class:`FormatError`
    ``launch.format``.
    """
    raw = launch_manifest_bytes(cert)
    try:
        manifest = LaunchManifest.from_json(raw)
    except UsageError as exc:
        raise FormatError(
            "launch.format", "the launch manifest in the certificate is malformed", detail=str(exc)
        ) from None
    # The measurement of the bytes as carried: from_json accepts only canonical bytes.
    measured = manifest.measurement()
    if manifest.to_json() != raw or verified.quote.mr_enclave != measured:
        raise PolicyError(
            "launch.measurement",
            "the launch manifest in the certificate is not the one the enclave measured",
            observed=verified.quote.mr_enclave,
            expected=measured,
            hint="nothing was sent; the certificate's manifest was altered, or it is another "
            "launch's",
        )
    wanted = name.lower().rstrip(".")
    if wanted not in (san.lower() for san in manifest.san):
        raise PolicyError(
            "launch.name",
            f"the enclave was not launched for {name}",
            observed=list(manifest.san),
            expected=name,
            hint="nothing was sent; the operator routes this name to another app's enclave",
        )
    return manifest


def verify_enclave(
    cert: x509.Certificate,
    material: TrustMaterial,
    *,
    now: datetime,
    fingerprint: bytes | None,
    name: str,
    allow_simulation: bool = False,
) -> RatlsVerified:
    """Verify ``cert``'s quote, and that the enclave was launched for ``name``
    (:func:`verify_launch`); with ``fingerprint``, require it as MRENCLAVE.

    A fingerprint mismatch raises :class:`PolicyError` ``policy.mrenclave``
    with one line: ``code fingerprint mismatch: expected ..., the enclave reports ...``.
    """
    policy = Policy(
        mr_enclave=fingerprint, allow_simulation=allow_simulation and material.simulated
    )
    try:
        verified = verify_ratls_certificate(
            cert, material.collateral, now=now, policy=policy, trust_anchor=material.trust_anchor
        )
    except PolicyError as exc:
        if exc.code != "policy.mrenclave" or fingerprint is None:
            raise
        observed = exc.observed.hex() if isinstance(exc.observed, bytes) else str(exc.observed)
        err = PolicyError(
            "policy.mrenclave",
            f"code fingerprint mismatch: expected {fingerprint.hex()}, "
            f"the enclave reports {observed}",
            hint="nothing was sent; the operator runs other code than yours",
        )
        err.checks = exc.checks
        raise err from None
    try:
        manifest = verify_launch(cert, verified, name)
    except AttestationError as exc:
        exc.checks = verified.quote.checks
        raise
    check = Check("launch manifest measured, for this name", "passed", ", ".join(manifest.san))
    quote = dataclasses.replace(verified.quote, checks=(*verified.quote.checks, check))
    return dataclasses.replace(verified, quote=quote)


def pinned_client(
    address: HostPort, server_name: str, cert: x509.Certificate, *, timeout: float
) -> httpx.Client:
    """HTTPS to ``address`` with SNI and Host ``server_name``, trusting only ``cert``.

    The verified RA-TLS certificate is self-signed: as the only trust anchor,
    only its key (held in the enclave) can serve this connection. TLS 1.2 at
    least (RFC 8996); certificate and host name checks stay on.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.load_verify_locations(cadata=cert.public_bytes(Encoding.PEM).decode("ascii"))

    def sni(request: httpx.Request) -> None:
        request.extensions["sni_hostname"] = server_name

    host = f"[{address.host}]" if ":" in address.host else address.host
    return httpx.Client(
        base_url=f"https://{host}:{address.port}",
        headers={"Host": server_name},
        verify=context,
        timeout=timeout,
        follow_redirects=False,
        event_hooks={"request": [sni]},
    )
