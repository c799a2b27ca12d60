"""RA-TLS certificates: creation, verification against a simulated quote, fetching over TLS."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.attestation import Check, Collateral, Policy
from confide.attestation._ratls import (
    RATLS_QUOTE_OID,
    create_ratls_certificate,
    fetch_peer_certificate,
    quote_from_certificate,
    ratls_report_data,
    verify_ratls_certificate,
)
from confide.errors import (
    AttestationError,
    CertificateError,
    FetchError,
    FormatError,
    SignatureError,
    UsageError,
)
from confide.tee import SimulatedPlatform

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
NOW = CREATED + timedelta(hours=1)
MR_ENCLAVE = hashlib.sha256(b"ratls enclave").digest()
EXTRA = bytes(range(32))
POLICY = Policy(allow_simulation=True, mr_enclave=MR_ENCLAVE)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("ratls") / "sim", now=CREATED)


@pytest.fixture(scope="module")
def collateral(platform: SimulatedPlatform) -> Collateral:
    return platform.collateral(NOW)


@cache
def _key(n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(1000 + n, ec.SECP256R1())


def _quote_for(platform: SimulatedPlatform, key: ec.EllipticCurvePrivateKey) -> bytes:
    report_data = ratls_report_data(key.public_key(), EXTRA)
    return platform.quote(report_data, mr_enclave=MR_ENCLAVE, mr_signer=bytes(32))


def _cert(
    key: ec.EllipticCurvePrivateKey,
    quote: bytes,
    *,
    not_before: datetime = CREATED,
    not_after: datetime = CREATED + timedelta(days=1),
    sans: tuple[str, ...] = ("app.example", "127.0.0.1"),
) -> x509.Certificate:
    return create_ratls_certificate(
        key, quote, subject="app.example", sans=sans, not_before=not_before, not_after=not_after
    )


def _verify(cert: x509.Certificate, platform: SimulatedPlatform, collateral: Collateral) -> object:
    return verify_ratls_certificate(
        cert, collateral, now=NOW, policy=POLICY, trust_anchor=platform.root_certificate
    )


def test_round_trip(platform: SimulatedPlatform, collateral: Collateral) -> None:
    key = _key()
    cert = _cert(key, _quote_for(platform, key))
    result = verify_ratls_certificate(
        cert, collateral, now=NOW, policy=POLICY, trust_anchor=platform.root_certificate
    )
    assert result.extra == EXTRA
    assert result.public_key.public_numbers() == key.public_key().public_numbers()
    assert result.quote.simulated
    assert result.quote.mr_enclave == MR_ENCLAVE
    assert [c.name for c in result.quote.checks[:3]] == [
        "RA-TLS quote extension",
        "quote binds the certificate key",
        "RA-TLS certificate self-signed, in its window",
    ]


def test_certificate_layout(platform: SimulatedPlatform) -> None:
    key = _key()
    quote = _quote_for(platform, key)
    cert = _cert(key, quote)
    ext = cert.extensions.get_extension_for_oid(RATLS_QUOTE_OID)
    assert not ext.critical
    # Gramine's and Cosmian Enclave's verifiers read ext.value.value as the raw quote.
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == quote
    assert quote_from_certificate(cert) == quote
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["app.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.issuer == cert.subject
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "app.example"


def test_report_data_layout() -> None:
    key = _key().public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert ratls_report_data(key, EXTRA) == hashlib.sha256(point).digest() + EXTRA


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_report_data_needs_32_extra_bytes(size: int) -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        ratls_report_data(_key().public_key(), bytes(size))


def test_report_data_needs_p256() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(UsageError, match="P-256"):
        ratls_report_data(other, EXTRA)
    with pytest.raises(UsageError, match="P-256"):
        ratls_report_data(ed25519.Ed25519PrivateKey.generate().public_key(), EXTRA)  # type: ignore[arg-type]


def test_key_not_bound_by_the_quote(platform: SimulatedPlatform, collateral: Collateral) -> None:
    quote = _quote_for(platform, _key(1))
    cert = _cert(_key(2), quote)
    with pytest.raises(SignatureError) as info:
        _verify(cert, platform, collateral)
    assert info.value.code == "ratls.key_binding"
    assert info.value.observed == ratls_report_data(_key(1).public_key(), EXTRA)[:32]
    assert info.value.expected == ratls_report_data(_key(2).public_key(), EXTRA)[:32]


def test_certificate_without_quote(platform: SimulatedPlatform, collateral: Collateral) -> None:
    key = _key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "plain")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(CREATED)
        .not_valid_after(CREATED + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(FormatError) as info:
        _verify(cert, platform, collateral)
    assert info.value.code == "ratls.no_quote"
    with pytest.raises(FormatError, match="carries no quote"):
        quote_from_certificate(cert)


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (48 + 64, "quote.signature"),  # MRENCLAVE
        (48 + 320 + 40, "quote.signature"),  # report data after the key hash
        (48 + 384 + 4, "quote.signature"),  # the quote signature itself
    ],
)
def test_tampered_quote(
    platform: SimulatedPlatform, collateral: Collateral, offset: int, code: str
) -> None:
    key = _key()
    quote = bytearray(_quote_for(platform, key))
    quote[offset] ^= 0x80
    with pytest.raises(SignatureError) as info:
        _verify(_cert(key, bytes(quote)), platform, collateral)
    assert info.value.code == code
    names = [c.name for c in info.value.checks if isinstance(c, Check)]
    assert names[:3] == ["RA-TLS quote extension", "quote binds the certificate key", names[2]]
    assert "quote format" in names


def test_quote_binding_key_hash_tampered(
    platform: SimulatedPlatform, collateral: Collateral
) -> None:
    key = _key()
    quote = bytearray(_quote_for(platform, key))
    quote[48 + 320] ^= 0x01  # first byte of the key hash
    with pytest.raises(SignatureError) as info:
        _verify(_cert(key, bytes(quote)), platform, collateral)
    assert info.value.code == "ratls.key_binding"


@pytest.mark.parametrize(
    ("not_before", "not_after", "code"),
    [
        (NOW + timedelta(minutes=1), NOW + timedelta(days=1), "ratls.not_yet_valid"),
        (CREATED - timedelta(days=2), NOW - timedelta(seconds=1), "ratls.expired"),
    ],
)
def test_certificate_window(
    platform: SimulatedPlatform,
    collateral: Collateral,
    not_before: datetime,
    not_after: datetime,
    code: str,
) -> None:
    key = _key()
    cert = _cert(key, _quote_for(platform, key), not_before=not_before, not_after=not_after)
    with pytest.raises(CertificateError) as info:
        _verify(cert, platform, collateral)
    assert info.value.code == code


def test_certificate_not_self_signed(platform: SimulatedPlatform, collateral: Collateral) -> None:
    key = _key()
    good = _cert(key, _quote_for(platform, key))
    forged = (
        x509.CertificateBuilder()
        .subject_name(good.subject)
        .issuer_name(good.issuer)
        .public_key(key.public_key())
        .serial_number(good.serial_number)
        .not_valid_before(good.not_valid_before_utc)
        .not_valid_after(good.not_valid_after_utc)
        .add_extension(good.extensions.get_extension_for_oid(RATLS_QUOTE_OID).value, False)
        .sign(_key(3), hashes.SHA256())
    )
    with pytest.raises(CertificateError) as info:
        _verify(forged, platform, collateral)
    assert info.value.code == "ratls.signature"


def test_policy_is_applied(platform: SimulatedPlatform, collateral: Collateral) -> None:
    key = _key()
    cert = _cert(key, _quote_for(platform, key))
    with pytest.raises(AttestationError) as info:
        verify_ratls_certificate(
            cert,
            collateral,
            now=NOW,
            policy=Policy(allow_simulation=True, mr_enclave=bytes(32)),
            trust_anchor=platform.root_certificate,
        )
    assert info.value.code == "policy.mrenclave"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quote": b""},
        {"not_before": CREATED + timedelta(days=2)},
        {"not_before": CREATED.replace(tzinfo=None)},
    ],
)
def test_create_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "quote": b"q",
        "subject": "x",
        "sans": [],
        "not_before": CREATED,
        "not_after": CREATED + timedelta(days=1),
        **kwargs,
    }
    with pytest.raises(UsageError):
        create_ratls_certificate(_key(), **args)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2048))
def test_any_extension_bytes_raise_our_error(blob: bytes) -> None:
    cert = _cert(_key(), blob or b"\x00")
    with pytest.raises(AttestationError):
        verify_ratls_certificate(cert, _fake_collateral(), now=NOW, policy=POLICY)


@cache
def _fake_collateral() -> Collateral:
    # Never reached: every random blob fails before collateral is looked at.
    vector = Path(__file__).resolve().parents[4] / "shared" / "vectors"
    text = (vector / "sgx-dcapqvl-00A067110000" / "collateral.json").read_text()
    return Collateral.from_json(text)


# -- fetching over TLS -----------------------------------------------------------


def _serve_once(listener: socket.socket, context: ssl.SSLContext, errors: list[Exception]) -> None:
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            with context.wrap_socket(conn, server_side=True):
                pass
    except (OSError, ssl.SSLError) as exc:  # reported to the test, never raised in the thread
        errors.append(exc)


def test_fetch_peer_certificate(platform: SimulatedPlatform, tmp_path: Path) -> None:
    key = _key()
    cert = _cert(key, _quote_for(platform, key), not_after=datetime(2099, 1, 1, tzinfo=UTC))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.num_tickets = 0
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    errors: list[Exception] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        server = threading.Thread(target=_serve_once, args=(listener, context, errors))
        server.start()
        try:
            fetched = fetch_peer_certificate(
                "127.0.0.1", port, server_name="app.example", timeout=10
            )
        finally:
            server.join(timeout=10)
    assert not server.is_alive()
    assert fetched == cert
    assert not errors


def test_fetch_from_closed_port_names_host_and_port() -> None:
    # Bound but not listening: connections are refused, and the port stays ours.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        with pytest.raises(FetchError) as info:
            fetch_peer_certificate("127.0.0.1", port, server_name=None, timeout=5)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "\n" not in str(info.value)


def test_fetch_from_a_non_tls_server() -> None:
    def close_at_once(listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
            conn.close()
        except OSError:
            pass

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        server = threading.Thread(target=close_at_once, args=(listener,))
        server.start()
        try:
            with pytest.raises(FetchError, match=f"127.0.0.1:{port}"):
                fetch_peer_certificate("127.0.0.1", port, server_name=None, timeout=5)
        finally:
            server.join(timeout=10)


def test_fetch_from_a_router_that_serves_no_such_name_says_so() -> None:
    """The router's unrecognized_name alert becomes a line the user can act on (issue 9, 14)."""

    def refuse_the_name(listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                hello = conn.recv(65536)
                conn.sendall(b"\x15" + hello[1:3] + b"\x00\x02\x02\x70")
                conn.shutdown(socket.SHUT_WR)
                conn.recv(65536)
        except OSError:
            pass

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        server = threading.Thread(target=refuse_the_name, args=(listener,))
        server.start()
        try:
            with pytest.raises(FetchError) as info:
                fetch_peer_certificate("127.0.0.1", port, server_name="nope.example", timeout=5)
        finally:
            server.join(timeout=10)
    assert "serves nothing named nope.example" in info.value.reason
    assert "confide list" in info.value.reason
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("port", "timeout"), [(0, 1.0), (70000, 1.0), (443, 0.0)])
def test_fetch_rejects_bad_arguments(port: int, timeout: float) -> None:
    with pytest.raises(UsageError):
        fetch_peer_certificate("127.0.0.1", port, server_name=None, timeout=timeout)
