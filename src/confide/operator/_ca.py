"""The operator's own certificate authority, for apps run in operator mode (``--untrusted-ssl``).

In operator mode the router terminates TLS for ``<id>.<base-domain>`` with a
server certificate issued by this CA; the API publishes the CA certificate at
``/api/v1/ca`` so that clients who accept to trust the operator can pin it.
The CA is name-constrained to the base domain: a client that trusts it trusts
it for nothing else. (In RA-TLS and owner-certificate modes the router passes
TLS through and this CA plays no part.)

Everything lives in one folder, created on first use with mode 0700::

    ca-key.pem        the CA's P-256 key (0600)
    ca.pem            the CA certificate (10 years)
    server-key.pem    the server key (0600)
    server.pem        the server certificate for *.<base-domain> and <base-domain> (90 days)

The server certificate is re-issued when it is within :data:`SERVER_RENEW_BEFORE`
of expiry, when it no longer names the base domain, or when the CA changed;
the CA is re-created only when it nears its own expiry or when the base domain
changes (its name constraint names the base domain; clients then fetch the new
``/api/v1/ca``).

Example::

    >>> from datetime import UTC, datetime
    >>> ca = OperatorCA.open(  # doctest: +SKIP
    ...     Path("/var/lib/confide/ca"), base_domain="apps.example", clock=lambda: datetime.now(UTC)
    ... )
    >>> ca.certificate_pem()  # doctest: +SKIP
    b'-----BEGIN CERTIFICATE-----\\n...'
    >>> context = ca.server_ssl_context()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from confide.crypto import key_usage, private_key_pem
from confide.errors import UsageError
from confide.runtime import write_atomically

from ._tlsparse import parse_host_name

#: Lifetime of the CA certificate.
CA_VALIDITY: Final = timedelta(days=3650)
#: Lifetime of the ``*.<base-domain>`` server certificate.
SERVER_VALIDITY: Final = timedelta(days=90)
#: The server certificate is re-issued this long before it expires.
SERVER_RENEW_BEFORE: Final = timedelta(days=30)
#: Certificates start this long before their issue time (clients with slow clocks).
BACKDATE: Final = timedelta(hours=1)
#: Largest key or certificate file read from the folder.
MAX_PEM_FILE: Final = 64 * 1024

_CA_KEY: Final = "ca-key.pem"
_CA_CERT: Final = "ca.pem"
_SERVER_KEY: Final = "server-key.pem"
_SERVER_CERT: Final = "server.pem"


class OperatorCA:
    """The operator's CA and its ``*.<base-domain>`` server certificate, kept in one folder.

    Build it with :meth:`open`. ``clock`` returns the current timezone-aware
    time; it is asked on :meth:`open` and on each :meth:`server_ssl_context`
    call, which re-issues the server certificate when it is due.
    """

    def __init__(
        self,
        folder: Path,
        base_domain: str,
        clock: Callable[[], datetime],
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
    ) -> None:
        self._folder = folder
        self._base_domain = base_domain
        self._clock = clock
        self._ca_key = ca_key
        self._ca_cert = ca_cert
        self._server_cert: x509.Certificate | None = None
        self._context: ssl.SSLContext | None = None
        self._renew_at: datetime | None = None

    @classmethod
    def open(cls, folder: Path, *, base_domain: str, clock: Callable[[], datetime]) -> OperatorCA:
        """Load the CA in ``folder``, creating the folder, the CA and the server certificate
        as needed. Raises :class:`UsageError` for a bad base domain, a folder or key file
        readable by others, or a half-present CA (one of key and certificate missing).
        """
        domain = _base_domain(base_domain)
        now = _now(clock)
        _ensure_private_folder(folder)
        ca_key, ca_cert = _load_or_create_ca(folder, domain, now)
        ca = cls(folder, domain, clock, ca_key, ca_cert)
        ca._refresh(now)
        return ca

    @property
    def base_domain(self) -> str:
        return self._base_domain

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate."""
        return self._ca_cert

    @property
    def server_certificate(self) -> x509.Certificate:
        """The current ``*.<base-domain>`` server certificate."""
        if self._server_cert is None:  # pragma: no cover - set by open()
            raise UsageError("the operator CA was not opened with OperatorCA.open()")
        return self._server_cert

    def certificate_pem(self) -> bytes:
        """The CA certificate in PEM, as published at ``/api/v1/ca``."""
        return self._ca_cert.public_bytes(serialization.Encoding.PEM)

    def server_ssl_context(self) -> ssl.SSLContext:
        """The TLS server context for operator mode, re-issuing the certificate when due.

        The context is built once per certificate and shared by connections.
        """
        now = _now(self._clock)
        if self._context is None or self._renew_at is None or now >= self._renew_at:
            self._refresh(now)
        if self._context is None:  # pragma: no cover - set by _refresh()
            raise UsageError("the operator CA has no server certificate")
        return self._context

    def _refresh(self, now: datetime) -> None:
        if now >= self._ca_cert.not_valid_after_utc - SERVER_VALIDITY:
            self._ca_key, self._ca_cert = _create_ca(self._folder, self._base_domain, now)
        cert = _load_server_cert(self._folder, self._ca_cert, self._base_domain, now)
        if cert is None:
            cert = _issue_server_cert(
                self._folder, self._ca_key, self._ca_cert, self._base_domain, now
            )
        self._server_cert = cert
        self._renew_at = cert.not_valid_after_utc - SERVER_RENEW_BEFORE
        self._context = create_server_context(
            self._folder / _SERVER_CERT, self._folder / _SERVER_KEY
        )


def create_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The TLS context of the router's terminating front door (operator mode).

    - TLS 1.2 at least: RFC 8996 deprecates TLS 1.0 and 1.1, and RFC 9325
      (BCP 195) requires 1.2 or later.
    - No client certificates (``CERT_NONE``): in operator mode the client is
      anonymous at the TLS layer; the app authenticates its users itself.
    - ALPN offers only ``http/1.1``: the router relays the decrypted bytes to
      the app's HTTP/1.1 port without translating them, so a client must not
      pick HTTP/2 here.
    - No renegotiation: a client could otherwise restart handshakes at will on
      an established connection (CVE-2011-1473 style CPU exhaustion).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    return context


def _now(clock: Callable[[], datetime]) -> datetime:
    now = clock()
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise UsageError("the operator CA's clock must return a timezone-aware datetime")
    return now


def _base_domain(value: str) -> str:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    domain = parse_host_name(raw)
    if domain is None or "." not in domain:
        # Two labels at least: TLS clients refuse a wildcard directly under a single label.
        raise UsageError(
            f"the base domain {value!r} is not a DNS name of at least two labels",
            hint="pass a name such as apps.example.com (lower-case letters, digits, hyphens)",
        )
    return domain


def _ensure_private_folder(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError as exc:
        raise UsageError(f"cannot create the CA folder {folder}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"the CA folder {folder} is not a directory (or is a symbolic link)")
    if info.st_mode & 0o077:
        raise UsageError(
            f"the CA folder {folder} is accessible to other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o})",
            hint=f"run chmod 700 {folder}",
        )


def _read(path: Path, *, secret: bool) -> bytes | None:
    """The file's bytes, ``None`` if it does not exist; bounded; keys must be 0600."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if secret and info.st_mode & 0o077:
            raise UsageError(
                f"the key file {path} is readable by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o})",
                hint=f"run chmod 600 {path}",
            )
        data = file.read(MAX_PEM_FILE + 1)
    if len(data) > MAX_PEM_FILE:
        raise UsageError(f"{path} is over {MAX_PEM_FILE} bytes")
    return data


def _load_key(path: Path, data: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise UsageError(f"{path} is not an ECDSA P-256 key")
    return key


def _load_cert(path: Path, data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise UsageError(f"{path} is not a PEM certificate") from exc


def _same_key(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    return cert.public_key() == key.public_key()


def _load_or_create_ca(
    folder: Path, domain: str, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_data = _read(folder / _CA_KEY, secret=True)
    cert_data = _read(folder / _CA_CERT, secret=False)
    if key_data is None and cert_data is None:
        return _create_ca(folder, domain, now)
    if key_data is None or cert_data is None:
        missing = _CA_KEY if key_data is None else _CA_CERT
        raise UsageError(
            f"the CA folder {folder} has no {missing}",
            hint="restore it, or remove ca.pem and ca-key.pem to create a new CA "
            "(clients must then fetch the new /api/v1/ca)",
        )
    key = _load_key(folder / _CA_KEY, key_data)
    cert = _load_cert(folder / _CA_CERT, cert_data)
    if not _same_key(key, cert):
        raise UsageError(f"{folder / _CA_CERT} does not match {folder / _CA_KEY}")
    if _constraint(cert) != domain:
        return _create_ca(folder, domain, now)  # the base domain changed
    return key, cert


def _constraint(cert: x509.Certificate) -> str | None:
    """The one DNS name the CA is constrained to, if it has exactly that constraint."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    permitted = ext.permitted_subtrees or []
    if ext.excluded_subtrees or len(permitted) != 1:
        return None
    name = permitted[0]
    return name.value if isinstance(name, x509.DNSName) else None


def _create_ca(
    folder: Path, domain: str, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Confide operator"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Confide operator CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(ski, critical=False)
        # A client that trusts this CA trusts it for the base domain and nothing else.
        .add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName(domain)], excluded_subtrees=None),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    write_atomically(folder / _CA_KEY, private_key_pem(key))
    write_atomically(folder / _CA_CERT, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return key, cert


def _server_names(domain: str) -> list[x509.GeneralName]:
    return [x509.DNSName(f"*.{domain}"), x509.DNSName(domain)]


def _load_server_cert(
    folder: Path, ca_cert: x509.Certificate, domain: str, now: datetime
) -> x509.Certificate | None:
    """The stored server certificate if it is still good to serve, else ``None``."""
    key_data = _read(folder / _SERVER_KEY, secret=True)
    cert_data = _read(folder / _SERVER_CERT, secret=False)
    if key_data is None or cert_data is None:
        return None
    key = _load_key(folder / _SERVER_KEY, key_data)
    cert = _load_cert(folder / _SERVER_CERT, cert_data)
    try:
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return None  # issued by a previous CA, or not ours: issue a new one
    if set(sans) != set(_server_names(domain)) or not _same_key(key, cert):
        return None
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - SERVER_RENEW_BEFORE:
        return None
    return cert


def _issue_server_cert(
    folder: Path,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    domain: str,
    now: datetime,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{domain}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage("digital_signature"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_server_names(domain)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_atomically(folder / _SERVER_KEY, private_key_pem(key))
    write_atomically(
        folder / _SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), mode=0o644
    )
    return cert
