"""The runtime's server TLS context (TLS >= 1.2, ALPN h2), in-memory keys, SAN coverage."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from confide.errors import UsageError
from confide.runtime import ALPN_PROTOCOLS, bind_listener, server_ssl_context
from confide.wire import uncovered_names

NOW = datetime.now(UTC)


def _self_signed(names: list[x509.GeneralName] | None) -> tuple[bytes, bytes, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert


CERT_PEM, KEY_PEM, CERT = _self_signed([x509.DNSName("localhost")])


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A TLS handshake between two contexts over memory BIOs (no sockets)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj, out, peer_in in (("c", c, c_out, s_in), ("s", s, s_out, c_in)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return c, s
    raise AssertionError("the handshake did not finish")


def _client(alpn: list[str], maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=CERT_PEM.decode())
    context.set_alpn_protocols(alpn)
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    return context


def test_context_negotiates_h2_first_and_tls12_at_least() -> None:
    server = server_ssl_context(CERT_PEM, KEY_PEM)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_NONE
    assert server.options & ssl.OP_NO_COMPRESSION
    client, _ = _handshake(server, _client(list(ALPN_PROTOCOLS)))
    assert client.selected_alpn_protocol() == "h2"
    assert client.version() in ("TLSv1.2", "TLSv1.3")
    http1, _ = _handshake(server_ssl_context(CERT_PEM, KEY_PEM), _client(["http/1.1"]))
    assert http1.selected_alpn_protocol() == "http/1.1"
    tls12, _ = _handshake(
        server_ssl_context(CERT_PEM, KEY_PEM), _client(["h2"], ssl.TLSVersion.TLSv1_2)
    )
    assert tls12.version() == "TLSv1.2" and tls12.selected_alpn_protocol() == "h2"


def test_old_tls_is_refused() -> None:
    with warnings.catch_warnings():
        # Offering TLS 1.1 is deprecated: that is the point of this client.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            old = _client(["http/1.1"], ssl.TLSVersion.TLSv1_1)
        except ValueError:
            pytest.skip("this OpenSSL cannot even offer TLS 1.1")
        with pytest.raises(ssl.SSLError):
            _handshake(server_ssl_context(CERT_PEM, KEY_PEM), old)


def test_a_key_that_does_not_match_is_refused() -> None:
    _, other_key, _ = _self_signed(None)
    with pytest.raises(UsageError, match="cannot load the TLS certificate and key"):
        server_ssl_context(CERT_PEM, other_key)


def test_without_memfd_the_key_file_is_private_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memfd(name: str, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    seen: list[int] = []
    real_load = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: str, keyfile: str | None = None) -> None:
        seen.append(os.stat(str(keyfile)).st_mode & 0o777)
        real_load(self, certfile, keyfile)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    server_ssl_context(CERT_PEM, KEY_PEM, scratch=tmp_path)
    assert seen == [0o600]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="memfd_create is unavailable"):
        server_ssl_context(CERT_PEM, KEY_PEM)


@pytest.mark.parametrize(
    ("names", "wanted", "missing"),
    [
        ([x509.DNSName("app.example")], ("app.example", "APP.example"), []),
        ([x509.DNSName("*.example")], ("app.example",), []),
        ([x509.DNSName("*.example")], ("a.b.example", "example"), ["a.b.example", "example"]),
        (
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            ("127.0.0.1", "::1"),
            ["::1"],
        ),
        (None, ("localhost",), ["localhost"]),
        ([x509.DNSName("localhost")], (), []),
    ],
)
def test_uncovered_names(
    names: list[x509.GeneralName] | None, wanted: tuple[str, ...], missing: list[str]
) -> None:
    _, _, cert = _self_signed(names)
    assert uncovered_names(cert, wanted) == missing


def test_bind_listener() -> None:
    listener = bind_listener("127.0.0.1", 0)
    try:
        host, port = listener.getsockname()
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port), timeout=5):
            pass
    finally:
        listener.close()
    with pytest.raises(UsageError, match="cannot resolve"):
        bind_listener("no-such-host.invalid", 0)
