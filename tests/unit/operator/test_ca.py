"""The operator's CA: created once with private files, name-constrained, re-issuing when due."""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from confide.errors import UsageError
from confide.operator._ca import SERVER_RENEW_BEFORE, SERVER_VALIDITY, OperatorCA

BASE = "apps.confide.test"
START = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def open_ca(folder: Path, clock: Callable[[], datetime], base: str = BASE) -> OperatorCA:
    return OperatorCA.open(folder, base_domain=base, clock=clock)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, name: str
) -> ssl.SSLObject:  # the client side, after a full handshake through memory BIOs
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=name)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, tls in (("client", client_side), ("server", server_side)):
            if not done[side]:
                try:
                    tls.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_side
    raise AssertionError("the handshake did not finish")


def client_trusting(ca: OperatorCA) -> ssl.SSLContext:
    # Test client: verifies against the operator CA only, host names checked.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=ca.certificate_pem().decode())
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def test_first_use_creates_a_private_folder_a_ca_and_a_server_certificate(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "ca"
    ca = open_ca(folder, Clock())
    assert mode(folder) == 0o700
    assert mode(folder / "ca-key.pem") == 0o600
    assert mode(folder / "server-key.pem") == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "server-key.pem",
        "server.pem",
    ]

    cert = x509.load_pem_x509_certificate(ca.certificate_pem())
    assert cert == ca.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    constraints = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName(BASE)]
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"

    server = ca.server_certificate
    server.verify_directly_issued_by(cert)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans) == {x509.DNSName(f"*.{BASE}"), x509.DNSName(BASE)}
    assert server.not_valid_after_utc - server.not_valid_before_utc > SERVER_VALIDITY
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_reopening_keeps_the_ca_and_the_server_certificate(tmp_path: Path) -> None:
    first = open_ca(tmp_path, Clock())
    second = open_ca(tmp_path, Clock(START + timedelta(days=10)))
    assert second.certificate_pem() == first.certificate_pem()
    assert second.server_certificate == first.server_certificate


def test_the_server_certificate_is_reissued_when_due(tmp_path: Path) -> None:
    clock = Clock()
    ca = open_ca(tmp_path, clock)
    first = ca.server_certificate
    context = ca.server_ssl_context()
    assert ca.server_ssl_context() is context  # built once, shared
    clock.now = first.not_valid_after_utc - SERVER_RENEW_BEFORE - timedelta(seconds=1)
    assert ca.server_ssl_context() is context
    clock.now += timedelta(seconds=1)
    renewed = ca.server_ssl_context()
    assert renewed is not context
    assert ca.server_certificate.serial_number != first.serial_number
    assert ca.server_certificate.not_valid_after_utc > first.not_valid_after_utc
    assert open_ca(tmp_path, clock).server_certificate == ca.server_certificate  # stored
    # An expired certificate found on disk is replaced when the CA is opened.
    later = Clock(ca.server_certificate.not_valid_after_utc + timedelta(days=1))
    assert open_ca(tmp_path, later).server_certificate != ca.server_certificate


def test_a_new_base_domain_gets_a_new_ca_and_certificate(tmp_path: Path) -> None:
    old = open_ca(tmp_path, Clock())
    new = open_ca(tmp_path, Clock(), base="other.example")
    assert new.certificate_pem() != old.certificate_pem()
    sans = new.server_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert set(sans.value) == {x509.DNSName("*.other.example"), x509.DNSName("other.example")}
    new.server_certificate.verify_directly_issued_by(new.certificate)


def test_a_ca_near_its_end_is_replaced(tmp_path: Path) -> None:
    old = open_ca(tmp_path, Clock())
    clock = Clock(old.certificate.not_valid_after_utc - SERVER_VALIDITY)
    new = open_ca(tmp_path, clock)
    assert new.certificate.serial_number != old.certificate.serial_number
    assert new.server_certificate.not_valid_after_utc <= new.certificate.not_valid_after_utc


def test_the_server_context_serves_http11_to_a_client_trusting_the_ca(tmp_path: Path) -> None:
    ca = OperatorCA.open(tmp_path, base_domain=BASE, clock=lambda: datetime.now(UTC))
    context = ca.server_ssl_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    for name in (f"app1.{BASE}", BASE):
        client = handshake(context, client_trusting(ca), name)
        assert client.selected_alpn_protocol() == "http/1.1"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, client_trusting(ca), "app1.elsewhere.test")


def test_the_ca_cannot_vouch_for_names_outside_the_base_domain(tmp_path: Path) -> None:
    """Even a certificate the CA's key signs for another domain fails: name constraints."""
    ca = OperatorCA.open(tmp_path, base_domain=BASE, clock=lambda: datetime.now(UTC))
    ca_key = serialization.load_pem_private_key((tmp_path / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    rogue = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank.example")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "rogue.pem").write_bytes(rogue.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rogue.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # Test server presenting the rogue certificate: TLS 1.2+, no client certificates.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.verify_mode = ssl.CERT_NONE
    server.load_cert_chain(tmp_path / "rogue.pem", tmp_path / "rogue.key")
    with pytest.raises(ssl.SSLCertVerificationError, match="(?i)subtree"):
        handshake(server, client_trusting(ca), "bank.example")


@pytest.mark.parametrize(
    "base",
    ["localhost", "", "under_score.example", "apps.example.", "*.example", "bücher.example"],
)
def test_bad_base_domains_are_usage_errors(tmp_path: Path, base: str) -> None:
    with pytest.raises(UsageError, match="base domain"):
        open_ca(tmp_path / "ca", Clock(), base=base)
    assert not (tmp_path / "ca").exists()


def _loose_folder(folder: Path) -> None:
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)


def _loose_key(folder: Path) -> None:
    open_ca(folder, Clock())
    (folder / "ca-key.pem").chmod(0o644)


def _missing_cert(folder: Path) -> None:
    open_ca(folder, Clock())
    (folder / "ca.pem").unlink()


def _mismatched_key(folder: Path) -> None:
    open_ca(folder, Clock())
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "ca-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _not_a_key(folder: Path) -> None:
    open_ca(folder, Clock())
    (folder / "ca-key.pem").write_bytes(b"not a key")


def _huge_cert(folder: Path) -> None:
    open_ca(folder, Clock())
    (folder / "ca.pem").write_bytes(b"x" * (65 * 1024))


def _folder_is_a_file(folder: Path) -> None:
    folder.write_bytes(b"")


BAD_FOLDERS: list[tuple[str, Callable[[Path], None], str]] = [
    ("folder readable by others", _loose_folder, "accessible to other users"),
    ("key readable by others", _loose_key, "readable by other users"),
    ("certificate missing", _missing_cert, "has no ca.pem"),
    ("key of another CA", _mismatched_key, "does not match"),
    ("key file not a key", _not_a_key, "not an unencrypted PEM private key"),
    ("certificate file too big", _huge_cert, "over"),
    ("folder is a file", _folder_is_a_file, "cannot create"),
]


@pytest.mark.parametrize(
    ("case", "spoil", "message"), BAD_FOLDERS, ids=[case for case, _, _ in BAD_FOLDERS]
)
def test_unsafe_or_broken_folders_are_usage_errors(
    tmp_path: Path, case: str, spoil: Callable[[Path], None], message: str
) -> None:
    folder = tmp_path / "ca"
    spoil(folder)
    with pytest.raises(UsageError, match=message):
        open_ca(folder, Clock())


def test_a_naive_clock_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="timezone-aware"):
        open_ca(tmp_path, lambda: datetime(2026, 1, 1))


def test_keys_are_never_written_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        open_ca(tmp_path / "ca", Clock())
    finally:
        os.umask(old)
    assert mode(tmp_path / "ca") == 0o700
    assert mode(tmp_path / "ca" / "ca-key.pem") == 0o600
    assert mode(tmp_path / "ca" / "server-key.pem") == 0o600
