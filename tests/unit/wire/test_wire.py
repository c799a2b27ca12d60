"""``confide.wire``: each wire concept defined once, and what the definitions do."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

import confide
from confide.crypto import PackageKey, X25519KeyPair
from confide.errors import UsageError
from confide.runtime import ConfigurationRequest
from confide.wire import (
    HostPort,
    LaunchManifest,
    TlsMode,
    configuration_body,
    dns_name_matches,
    key_matches_certificate,
    uncovered_names,
)

SRC = Path(confide.__file__).parent

# -- each concept is defined in confide/wire only ---------------------------------------------

#: (what, a regular expression matching a definition of it) outside confide/wire.
DEFINITIONS = [
    (
        "the app status",
        r"class \w*Status\(enum\.StrEnum\):\n\s+\"\"\"[^\n]*\n(?:[^\n]*\n)*?\s+SPAWNING",
    ),
    ("a TLS mode enum", r"class \w*Tls\w*\(enum\.StrEnum\)"),
    ("the API prefix", r"\"/api/v1\""),
    ("the status header", r"[\"']confide-status[\"']"),
    ("a host:port parser", r"rpartition\(\":\"\)"),
    ("a DNS-label pattern", r"\[a-z0-9-\]\{0,61\}"),
    ("a health-check pattern", r"\[A-Za-z0-9\._~!\$&"),
    ("a module:attribute pattern", r"\[A-Za-z_\]\[(?:A-Za-z0-9_|\\w)"),
    ("an RFC 6125 wildcard match", r"startswith\(\"\*\.\"\)"),
    ("a key-matches-certificate check", r"PublicFormat\.SubjectPublicKeyInfo"),
    ("the configuration fields", r"\"sealed_code_secret_key\":"),
    ("a launch manifest", r"LaunchManifest\(\n"),
    ("a plan", r"max_lifetime_days: int"),
    ("an API body", r"\(BaseModel\):"),
]


def _sources_outside_wire() -> dict[Path, str]:
    return {
        path: path.read_text(encoding="utf-8")
        for path in SRC.rglob("*.py")
        if "wire" not in path.relative_to(SRC).parts[:1]
    }


@pytest.mark.parametrize(("what", "pattern"), DEFINITIONS, ids=[d[0] for d in DEFINITIONS])
def test_each_concept_is_defined_only_in_confide_wire(what: str, pattern: str) -> None:
    found = [
        str(path.relative_to(SRC))
        for path, text in _sources_outside_wire().items()
        if re.search(pattern, text)
    ]
    assert not found, f"{what} is defined outside confide.wire: {found}"
    wire = "\n".join(p.read_text(encoding="utf-8") for p in (SRC / "wire").rglob("*.py"))
    assert re.search(pattern, wire), f"the guard for {what} matches nothing: it proves nothing"


# -- host:port -------------------------------------------------------------------------------

HOST_PORTS = [
    ("example.com:443", ("example.com", 443)),
    ("127.0.0.1:1", ("127.0.0.1", 1)),
    ("[::1]:8443", ("::1", 8443)),
    ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
]
NOT_HOST_PORTS = ["example.com", ":443", "a:", "a:0", "a:65536", "a:-1", "a:4x3", "[]:1", ""]


@pytest.mark.parametrize(("text", "parsed"), HOST_PORTS)
def test_host_port_parses_and_prints_back(text: str, parsed: tuple[str, int]) -> None:
    address = HostPort.parse(text)
    assert address == parsed and str(address) == text


@pytest.mark.parametrize("text", NOT_HOST_PORTS)
def test_host_port_refusals_name_the_option(text: str) -> None:
    with pytest.raises(UsageError, match=r"--connect must be HOST:PORT with a port in 1\.\.65535"):
        HostPort.parse(text, "--connect")


def test_port_zero_only_when_allowed() -> None:
    assert HostPort.parse("127.0.0.1:0", "--listen", allow_port_zero=True).port == 0
    with pytest.raises(UsageError, match="0..65535"):
        HostPort.parse("127.0.0.1:x", "--listen", allow_port_zero=True)


@given(st.text(max_size=40))
def test_host_port_parses_or_raises_our_error(text: str) -> None:
    try:
        address = HostPort.parse(text)
    except UsageError:
        return
    assert 0 < address.port < 65536 and address.host
    assert HostPort.parse(str(address)) == address


# -- TLS mode --------------------------------------------------------------------------------


def test_each_tls_mode_has_one_launch_word() -> None:
    words = {mode: mode.launch for mode in TlsMode}
    assert words == {
        TlsMode.RATLS: "ratls",
        TlsMode.OWNER: "certificate",
        TlsMode.OPERATOR: "none",
    }
    assert all(TlsMode.from_launch(word) is mode for mode, word in words.items())
    for word in ("owner", "operator", "", None):
        with pytest.raises(ValueError, match="not a launch TLS mode"):
            TlsMode.from_launch(word)


# -- names -----------------------------------------------------------------------------------

NAME_MATCHES = [
    ("app.example.com", "app.example.com", True),
    ("APP.Example.com", "app.example.COM", True),
    ("*.example.com", "app.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.example.com", ".example.com", False),
    ("a*.example.com", "ab.example.com", False),
    ("*.*.com", "a.b.com", False),
    ("example.com.", "example.com", False),
    ("other.com", "example.com", False),
]


@pytest.mark.parametrize(("pattern", "name", "matches"), NAME_MATCHES)
def test_rfc_6125_name_matching(pattern: str, name: str, matches: bool) -> None:
    assert dns_name_matches(pattern, name) is matches


def _certificate(key: ec.EllipticCurvePrivateKey, *names: x509.GeneralName) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime(2030, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_uncovered_names_and_the_key_check() -> None:
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        key, x509.DNSName("*.example.com"), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))
    )
    names = ("a.example.com", "10.0.0.1", "example.com", "10.0.0.2")
    assert uncovered_names(cert, names) == ["example.com", "10.0.0.2"]
    assert key_matches_certificate(key, cert)
    assert not key_matches_certificate(ec.generate_private_key(ec.SECP256R1()), cert)


# -- launch manifest -------------------------------------------------------------------------

APP = uuid.UUID(int=5)
EXPIRES = datetime(2030, 1, 1, 12, 30, 15, 999000, tzinfo=UTC)


@pytest.mark.parametrize("tls", list(TlsMode))
def test_the_one_builder_measures_each_mode_as_the_manifest_says(tls: TlsMode) -> None:
    certificate = bytes(range(32)) if tls == TlsMode.OWNER else None
    manifest = LaunchManifest.for_app(
        app_id=APP,
        application="pkg.app:app",
        tls=tls,
        expires_at=EXPIRES,
        certificate_sha256=certificate,
        san=("a.example",),
        subject=None,
        package_sha256=bytes(32),
        runtime_sha256=bytes(32),
    )
    doc = json.loads(manifest.to_json())
    assert doc["tls"] == tls.launch
    assert doc["ratls_expiry"] == (int(EXPIRES.timestamp()) if tls == TlsMode.RATLS else None)
    assert doc["certificate_sha256"] == (certificate.hex() if certificate else None)
    assert LaunchManifest.from_json(manifest.to_json()) == manifest
    assert LaunchManifest.from_dict(manifest.to_dict()) == manifest


def _build(tls: TlsMode, expires_at: datetime | None, certificate: bytes | None) -> None:
    LaunchManifest.for_app(
        app_id=APP,
        application="app:app",
        tls=tls,
        expires_at=expires_at,
        certificate_sha256=certificate,
        san=(),
        subject=None,
        package_sha256=bytes(32),
        runtime_sha256=bytes(32),
    )


def test_the_builder_refuses_an_inconsistent_mode() -> None:
    with pytest.raises(UsageError, match="expiry"):
        _build(TlsMode.RATLS, None, None)
    with pytest.raises(UsageError, match="certificate hash"):
        _build(TlsMode.OWNER, EXPIRES, None)
    with pytest.raises(UsageError, match="certificate hash"):
        _build(TlsMode.OPERATOR, None, bytes(32))


@pytest.mark.parametrize("application", ["a.:b", "é:app", "a..b:c", ".a:b", "a:b.c", "a:"])
def test_one_application_pattern_for_every_side(application: str) -> None:
    with pytest.raises(UsageError, match="module:attribute"):
        LaunchManifest.for_app(
            app_id=APP,
            application=application,
            tls=TlsMode.OPERATOR,
            expires_at=None,
            certificate_sha256=None,
            san=(),
            subject=None,
            package_sha256=bytes(32),
            runtime_sha256=bytes(32),
        )


# -- configuration request -------------------------------------------------------------------


def test_the_body_built_is_the_body_the_runtime_parses() -> None:
    from confide.crypto import seal

    enclave = X25519KeyPair.generate()
    key = PackageKey.generate()
    body = configuration_body(
        APP,
        sealed_code_secret_key=seal(key.hex().encode("ascii"), enclave.public_key),
        app_secrets={"token": "s3cret"},
        app_sealed_secrets=seal(b'{"db": "x"}', enclave.public_key),
    )
    request = ConfigurationRequest.parse(
        json.dumps(body).encode(), app_id=APP, enclave_key=enclave, plaintext_code=False
    )
    assert request.code_key is not None and request.code_key.secret == key.secret
    assert request.app_secrets == {"token": "s3cret"}
    assert request.sealed_secrets == {"db": "x"}
    assert configuration_body(APP, code_secret_key="00" * 32) == {
        "uuid": str(APP),
        "code_secret_key": "00" * 32,
    }
