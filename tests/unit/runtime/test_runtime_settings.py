"""Settings are checked together at the entry point, and measure to the launch manifest."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from confide.crypto import PackageKey, encrypt_package, write_archive
from confide.errors import UsageError
from confide.runtime import (
    OwnerCertificate,
    RuntimeSettings,
)
from confide.wire import LaunchManifest, TlsMode

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
APP_ID = uuid.UUID(int=42)
RUNTIME = bytes(range(32))


def _certificate(path: Path) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "owner")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "app.py").write_text("app = None\n")
    return folder


def _build(folder: Path, tmp_path: Path, **overrides: Any) -> RuntimeSettings:
    args: dict[str, Any] = {
        "app_id": APP_ID,
        "application": "app:app",
        "package": None,
        "app_dir": folder,
        "plaincode": True,
        "host": "127.0.0.1",
        "port": 0,
        "ratls_expiry": int((NOW + timedelta(days=1)).timestamp()),
        "certificate": None,
        "no_ssl": False,
        "san": ("localhost",),
        "subject": None,
        "state_dir": tmp_path / "state",
        "timeout": 10.0,
        "now": NOW,
        "runtime_sha256": RUNTIME,
    }
    args.update(overrides)
    return RuntimeSettings.from_arguments(**args)


def test_plaintext_folder_measures_its_archive(app_dir: Path, tmp_path: Path) -> None:
    settings = _build(app_dir, tmp_path)
    buffer = io.BytesIO()
    write_archive(app_dir, buffer)
    assert settings.code.plaintext
    assert settings.code.digest == hashlib.sha256(buffer.getvalue()).digest()
    expected = LaunchManifest(
        runtime_sha256=RUNTIME,
        package_sha256=settings.code.digest,
        app_id=APP_ID,
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=int((NOW + timedelta(days=1)).timestamp()),
        certificate_sha256=None,
        san=("localhost",),
        subject=None,
    )
    assert settings.measurement == expected.measurement()
    assert settings.ratls_expiry == NOW + timedelta(days=1)


def test_encrypted_package_measures_its_bytes(app_dir: Path, tmp_path: Path) -> None:
    package = tmp_path / "app.pkg"
    with package.open("wb") as f:
        info = encrypt_package(app_dir, f, PackageKey.generate())
    settings = _build(tmp_path, tmp_path, app_dir=None, plaincode=False, package=package)
    assert not settings.code.plaintext
    assert settings.code.digest == info.digest == hashlib.sha256(package.read_bytes()).digest()


def test_certificate_mode_measures_the_leaf(app_dir: Path, tmp_path: Path) -> None:
    cert = _certificate(tmp_path / "owner.pem")
    settings = _build(app_dir, tmp_path, ratls_expiry=None, certificate=tmp_path / "owner.pem")
    assert settings.tls == TlsMode.OWNER
    assert settings.certificate is not None
    assert settings.certificate.sha256 == cert.fingerprint(hashes.SHA256())
    assert settings.manifest.certificate_sha256 == cert.fingerprint(hashes.SHA256())
    plain = _build(app_dir, tmp_path, ratls_expiry=None, no_ssl=True)
    assert plain.tls == TlsMode.OPERATOR and plain.ratls_expiry is None
    assert (
        len({settings.measurement, plain.measurement, _build(app_dir, tmp_path).measurement}) == 3
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"ratls_expiry": None}, "exactly one of --ratls"),
        ({"no_ssl": True}, "exactly one of --ratls"),
        ({"plaincode": False}, "--plaincode confirms"),
        ({"package": Path("x.pkg")}, "exactly one of --package"),
        ({"app_dir": None}, "exactly one of --package"),
        ({"port": 70000}, "--port"),
        ({"timeout": 0.0}, "--timeout"),
        ({"timeout": -1.0}, "--timeout"),
        ({"ratls_expiry": int(NOW.timestamp()) - 1}, "in the past"),
        ({"now": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"application": "app"}, "module:attribute"),
    ],
)
def test_bad_arguments(
    app_dir: Path, tmp_path: Path, overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(UsageError) as info:
        _build(app_dir, tmp_path, **overrides)
    assert fragment in str(info.value)


def test_unreadable_inputs(app_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the package"):
        _build(app_dir, tmp_path, app_dir=None, plaincode=False, package=tmp_path / "nope")
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(UsageError, match="not a PEM certificate"):
        _build(app_dir, tmp_path, ratls_expiry=None, certificate=tmp_path / "bad.pem")
    with pytest.raises(UsageError, match="cannot read the certificate"):
        _build(app_dir, tmp_path, ratls_expiry=None, certificate=tmp_path / "none.pem")


def test_owner_chain_keeps_its_order(tmp_path: Path) -> None:
    first = _certificate(tmp_path / "a.pem")
    second = _certificate(tmp_path / "b.pem")
    chain = OwnerCertificate.from_pem(
        (tmp_path / "a.pem").read_bytes() + (tmp_path / "b.pem").read_bytes(), "chain"
    )
    assert chain.chain == (first, second) and chain.leaf == first
    assert chain.chain_pem().count(b"BEGIN CERTIFICATE") == 2
