"""RA-TLS: a self-signed TLS certificate carrying a quote that binds its own key.

The quote sits in the extension :data:`RATLS_QUOTE_OID` (1.2.840.113741.1337.6)
as the raw quote bytes, the layout Gramine's and Cosmian Enclave's RA-TLS use.
Its report data binds the certificate: ``SHA-256(public key as an X9.62
uncompressed point) || 32 caller bytes`` (Confide puts the enclave's X25519
public key there).

:func:`verify_ratls_certificate` has no I/O; :func:`fetch_peer_certificate`
is the small network helper that gets a server's certificate to verify.

Example::

    >>> from datetime import datetime, timezone
    >>> cert = fetch_peer_certificate(  # doctest: +SKIP
    ...     "app.example", 443, server_name="app.example", timeout=10
    ... )
    >>> verified = verify_ratls_certificate(  # doctest: +SKIP
    ...     cert, collateral, now=datetime.now(timezone.utc), policy=Policy(mr_enclave=expected)
    ... )
    >>> verified.extra.hex()  # doctest: +SKIP
    '...the enclave's X25519 public key...'
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from confide.errors import (
    AttestationError,
    CertificateError,
    FetchError,
    FormatError,
    SignatureError,
    UsageError,
)

from ._collateral import Collateral
from ._policy import Check, Policy, VerifiedQuote
from ._quote import MAX_QUOTE_SIZE, Quote
from ._verify import verify_quote

#: The extension holding the raw DCAP quote (Gramine's and Cosmian Enclave's layout).
RATLS_QUOTE_OID: Final = x509.ObjectIdentifier("1.2.840.113741.1337.6")
#: Bytes of caller data after the key hash in the report data.
RATLS_EXTRA_SIZE: Final = 32
#: Largest DER certificate accepted from a peer.
MAX_PEER_CERTIFICATE_SIZE: Final = MAX_QUOTE_SIZE + 16 * 1024


@dataclass(frozen=True, slots=True)
class RatlsVerified:
    """What verifying an RA-TLS certificate proved."""

    #: The verified quote, with the RA-TLS checks first in its ``checks``.
    quote: VerifiedQuote
    #: The certificate's key, bound to the quote: a TLS peer holding it is the enclave.
    public_key: ec.EllipticCurvePublicKey
    #: The 32 caller bytes of the report data (the enclave's X25519 public key).
    extra: bytes
    #: The end of the shortest window relied on: the certificate's notAfter and the quote's
    #: collateral and chain (:attr:`VerifiedQuote.valid_until`). After it, verify again.
    valid_until: datetime


def _p256(key: object, what: str) -> ec.EllipticCurvePublicKey:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise UsageError(f"{what} must be an ECDSA P-256 key, got {type(key).__name__}")
    return key


def _key_hash(key: ec.EllipticCurvePublicKey) -> bytes:
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return hashlib.sha256(point).digest()


def ratls_report_data(public_key: ec.EllipticCurvePublicKey, extra: bytes) -> bytes:
    """The 64 bytes of report data binding ``public_key`` and 32 ``extra`` bytes."""
    key = _p256(public_key, "the RA-TLS public key")
    if len(extra) != RATLS_EXTRA_SIZE:
        raise UsageError(f"RA-TLS extra data must be {RATLS_EXTRA_SIZE} bytes, got {len(extra)}")
    return _key_hash(key) + bytes(extra)


def create_ratls_certificate(
    private_key: ec.EllipticCurvePrivateKey,
    quote: bytes,
    *,
    subject: str,
    sans: Sequence[str],
    not_before: datetime,
    not_after: datetime,
    extensions: Sequence[x509.UnrecognizedExtension] = (),
) -> x509.Certificate:
    """A self-signed certificate for ``private_key`` carrying ``quote``.

    ``subject`` is the common name; each SAN is an IP address SAN when it
    parses as one, else a DNS name. The quote is not checked here (the
    verifier does that): get it for :func:`ratls_report_data` of this key.
    ``extensions`` are added as non-critical (Confide's runtime adds its launch
    manifest there; the verifier of that extension checks it against the quote).
    """
    public_key = _p256(private_key, "the RA-TLS private key")
    if not quote or len(quote) > MAX_QUOTE_SIZE:
        raise UsageError(f"the quote must be 1 to {MAX_QUOTE_SIZE} bytes, got {len(quote)}")
    if not_before.tzinfo is None or not_after.tzinfo is None or not_after <= not_before:
        raise UsageError("the validity window needs timezone-aware not_before < not_after")
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.UnrecognizedExtension(RATLS_QUOTE_OID, bytes(quote)), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(private_key, hashes.SHA256())


def quote_from_certificate(cert: x509.Certificate) -> bytes:
    """The raw quote in an RA-TLS certificate (not verified); :class:`FormatError` if none.

    Use it to learn which collateral to fetch (the quote's FMSPC) before
    :func:`verify_ratls_certificate`.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(RATLS_QUOTE_OID)
    except x509.ExtensionNotFound:
        raise FormatError(
            "ratls.no_quote",
            "the certificate is not an RA-TLS certificate: it carries no quote",
            expected=f"extension {RATLS_QUOTE_OID.dotted_string}",
        ) from None
    except ValueError as exc:
        raise FormatError(
            "ratls.format", "the certificate's extensions are malformed", detail=str(exc)
        ) from exc
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise FormatError("ratls.format", "the RA-TLS quote extension has an unexpected type")
    return value.value


def verify_ratls_certificate(
    cert: x509.Certificate,
    collateral: Collateral,
    *,
    now: datetime,
    policy: Policy,
    trust_anchor: x509.Certificate | None = None,
) -> RatlsVerified:
    """Verify an RA-TLS certificate at time ``now``: its quote, and that the quote binds its key.

    Checks, in order: the quote extension is there and parses; the first 32
    bytes of the report data are SHA-256 of the certificate's key; the
    certificate is self-signed and inside its window; the quote verifies
    (:func:`verify_quote` with ``policy`` and ``trust_anchor``). Raises an
    :class:`AttestationError` subclass naming the failed check.
    """
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise UsageError("now must be a timezone-aware datetime")
    done: list[Check] = []
    try:
        quote = Quote.from_bytes(quote_from_certificate(cert))
        done.append(Check("RA-TLS quote extension", "passed"))
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise CertificateError(
                "ratls.key_type",
                "the RA-TLS certificate key is not ECDSA P-256",
                observed=type(key).__name__,
                expected="EllipticCurvePublicKey on secp256r1",
            )
        expected = _key_hash(key)
        if quote.report_data[:32] != expected:
            raise SignatureError(
                "ratls.key_binding",
                "the quote does not bind the certificate's key (report data[:32])",
                observed=quote.report_data[:32],
                expected=expected,
            )
        done.append(Check("quote binds the certificate key", "passed", expected.hex()))
        _check_self_signed(cert, now)
        done.append(Check("RA-TLS certificate self-signed, in its window", "passed"))
    except AttestationError as exc:
        exc.checks = tuple(done)
        raise
    try:
        verified = verify_quote(
            quote, collateral, now=now, policy=policy, trust_anchor=trust_anchor
        )
    except AttestationError as exc:
        exc.checks = (*done, *exc.checks)
        raise
    verified = dataclasses.replace(verified, checks=(*done, *verified.checks))
    return RatlsVerified(
        quote=verified,
        public_key=key,
        extra=quote.report_data[32:],
        valid_until=min(verified.valid_until, cert.not_valid_after_utc),
    )


def _check_self_signed(cert: x509.Certificate, now: datetime) -> None:
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(
            "ratls.signature",
            "the RA-TLS certificate is not validly self-signed",
            detail=type(exc).__name__ if isinstance(exc, InvalidSignature) else str(exc),
        ) from exc
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            "ratls.not_yet_valid",
            "the RA-TLS certificate is not yet valid",
            observed=now.isoformat(),
            expected=f">= {cert.not_valid_before_utc.isoformat()}",
        )
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            "ratls.expired",
            "the RA-TLS certificate has expired",
            observed=now.isoformat(),
            expected=f"<= {cert.not_valid_after_utc.isoformat()}",
        )


def _client_context() -> ssl.SSLContext:
    """TLS context for fetching an RA-TLS peer's certificate.

    No CA or hostname validation: the peer's certificate is self-signed and
    its trust comes from the quote inside it, which the caller must verify with
    :func:`verify_ratls_certificate` before trusting anything from this peer.
    TLS 1.2 at least (RFC 8996 deprecates older versions).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fetch_peer_certificate(
    host: str, port: int, *, server_name: str | None, timeout: float
) -> x509.Certificate:
    """Connect with TLS (SNI ``server_name``, else ``host``) and return the peer's leaf certificate.

    The certificate is not trusted by this call: verify it with
    :func:`verify_ratls_certificate`. Raises :class:`FetchError` naming
    ``host:port`` and the reason.
    """
    where = f"{host}:{port}"
    if not 0 < port < 65536 or timeout <= 0:
        raise UsageError(f"cannot fetch from {where}: need a port in 1..65535 and a timeout > 0")
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            _client_context().wrap_socket(sock, server_hostname=server_name or host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError) as exc:
        raise FetchError(where, _reason(exc, server_name or host)) from exc
    if not der:
        raise FetchError(where, "the server sent no certificate")
    if len(der) > MAX_PEER_CERTIFICATE_SIZE:
        raise FetchError(where, f"the certificate is over {MAX_PEER_CERTIFICATE_SIZE} bytes")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise FetchError(where, f"the server's certificate is malformed: {exc}") from exc


def _reason(exc: BaseException, server_name: str) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError) and exc.reason == "TLSV1_UNRECOGNIZED_NAME":
        # What Confide's router answers for a name it does not serve.
        return (
            f"the server serves nothing named {server_name} (TLS alert unrecognized_name): "
            "check the name and the router's address; `confide list` shows your apps"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
