"""Helpers to run ``confide runtime`` as a subprocess and talk to it as its owner would.

The owner's side is real: fetch the RA-TLS certificate, verify it against the
expected measurement on the simulated platform's root, then send the keys over
a connection that trusts only that certificate. No fixed ports (the runtime
binds port 0 and logs the port), no sleeps (every wait polls with a deadline).
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from confide.attestation import (
    Policy,
    RatlsVerified,
    fetch_peer_certificate,
    verify_ratls_certificate,
)
from confide.crypto import PackageKey, encrypt_package, seal, write_archive
from confide.runtime import (
    CODE_ROOT,
    runtime_code_hash,
)
from confide.tee import SimulatedPlatform
from confide.wire import LaunchManifest, TlsMode

REPO: Final = Path(__file__).resolve().parents[2]
EXAMPLES: Final = REPO / "examples"
CONFIDE: Final = Path(sys.executable).with_name("confide")
HOST: Final = "127.0.0.1"
#: Longest wait for anything the runtime does (start, configure, stop).
DEADLINE: Final = 30.0
#: Far enough in the future for every test run.
RATLS_EXPIRY: Final = int((datetime.now(UTC) + timedelta(days=30)).timestamp())


class RuntimeProcess:
    """A running ``confide runtime``; all its output is kept (stdout and stderr)."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.proc = subprocess.Popen(
            [str(CONFIDE), "runtime", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self._lines: list[str] = []
        self._raw = bytearray()
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            with self._cond:
                self._raw += line
                self._lines.append(line.decode("utf-8", "replace"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> bytes:
        """Everything written so far to stdout and stderr."""
        with self._cond:
            return bytes(self._raw)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        """The first output line matching ``pattern``; fails if the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._alive_readers()):
                    raise AssertionError(
                        f"no line matching {pattern!r} within {timeout}s; output:\n{self.text}"
                    )
                self._cond.wait(min(left, 0.2))

    def _alive_readers(self) -> bool:
        return any(r.is_alive() for r in self._readers)

    def port(self, phase: str = "waiting for the configuration") -> int:
        match = self.wait_for(rf"{phase}.* on https?://[^ ]+:(\d+)")
        return int(match.group(1))

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def terminate(self, sig: signal.Signals = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def running(args: Sequence[str]) -> Iterator[RuntimeProcess]:
    """A runtime that is always stopped (killed if need be) when the block ends."""
    runtime = RuntimeProcess(args)
    try:
        yield runtime
    finally:
        runtime.kill()


# -- launches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeUnderTest:
    """The app's code as the owner ships it: an encrypted package, or a plaintext folder."""

    path: Path
    plaintext: bool
    digest: bytes
    key: PackageKey | None = field(default=None, repr=False)

    @classmethod
    def package(cls, app_dir: Path, out: Path) -> CodeUnderTest:
        key = PackageKey.generate()
        with out.open("wb") as f:
            info = encrypt_package(app_dir, f, key)
        return cls(path=out, plaintext=False, digest=info.digest, key=key)

    @classmethod
    def folder(cls, app_dir: Path) -> CodeUnderTest:
        buffer = io.BytesIO()
        write_archive(app_dir, buffer)
        return cls(path=app_dir, plaintext=True, digest=hashlib.sha256(buffer.getvalue()).digest())


@dataclass(frozen=True)
class Launch:
    """The arguments of one runtime launch, and the measurement the owner expects of it."""

    code: CodeUnderTest
    state_dir: Path
    sim_dir: Path
    tls: TlsMode = TlsMode.RATLS
    app_id: uuid.UUID = field(default_factory=uuid.uuid4)
    application: str = "app:app"
    certificate: Path | None = None
    san: tuple[str, ...] = ("localhost", HOST)
    subject: str | None = None
    timeout: float | None = 120.0
    ratls_expiry: int = RATLS_EXPIRY

    def code_folders(self) -> list[Path]:
        """This launch's code folders in RAM: the runtime names them after the app id."""
        return sorted(CODE_ROOT.glob(f"confide-code-{self.app_id}-*"))

    def code_dir(self) -> Path:
        """The one code folder of this launch's running runtime."""
        found = self.code_folders()
        assert len(found) == 1, found
        return found[0]

    def args(self) -> list[str]:
        source = (
            ["--app-dir", str(self.code.path), "--plaincode"]
            if self.code.plaintext
            else ["--package", str(self.code.path)]
        )
        if self.tls == TlsMode.RATLS:
            mode = ["--ratls", str(self.ratls_expiry)]
        elif self.tls == TlsMode.OWNER:
            mode = ["--certificate", str(self.certificate)]
        else:
            mode = ["--no-ssl"]
        args = [
            "--app-id",
            str(self.app_id),
            "--application",
            self.application,
            *source,
            "--host",
            HOST,
            "--port",
            "0",
            *mode,
            "--state-dir",
            str(self.state_dir),
            "--tee",
            "simulation",
            "--simulation-state",
            str(self.sim_dir),
        ]
        for name in self.san:
            args += ["--san", name]
        if self.subject is not None:
            args += ["--subject", self.subject]
        if self.timeout is not None:
            args += ["--timeout", str(self.timeout)]
        return args

    def measurement(self, runtime_sha256: bytes | None = None) -> bytes:
        """What the owner computes on their side: the launch manifest's measurement.

        ``runtime_sha256``: the runtime's code hash if not this working tree's (a copy's).
        """
        cert_sha = None
        if self.certificate is not None:
            leaf = x509.load_pem_x509_certificates(self.certificate.read_bytes())[0]
            cert_sha = leaf.fingerprint(hashes.SHA256())
        return LaunchManifest(
            runtime_sha256=runtime_code_hash() if runtime_sha256 is None else runtime_sha256,
            package_sha256=self.code.digest,
            app_id=self.app_id,
            application=self.application,
            tls=self.tls,
            ratls_expiry=self.ratls_expiry if self.tls == TlsMode.RATLS else None,
            certificate_sha256=cert_sha,
            san=self.san,
            subject=self.subject,
        ).measurement()


# -- the owner's side ---------------------------------------------------------------------------


def verify_enclave(
    port: int, platform: SimulatedPlatform, measurement: bytes
) -> tuple[x509.Certificate, RatlsVerified]:
    """Fetch the runtime's RA-TLS certificate and verify it is the expected enclave."""
    cert = fetch_peer_certificate(HOST, port, server_name="localhost", timeout=10.0)
    now = datetime.now(UTC)
    verified = verify_ratls_certificate(
        cert,
        platform.collateral(now),
        now=now,
        policy=Policy(mr_enclave=measurement, allow_simulation=True),
        trust_anchor=platform.root_certificate,
    )
    return cert, verified


def trusting(*anchors: x509.Certificate) -> ssl.SSLContext:
    """A client TLS context trusting only ``anchors`` (an RA-TLS certificate pins itself).

    Hostname checks stay on: the runtimes under test carry SAN 127.0.0.1.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    pem = "".join(a.public_bytes(serialization.Encoding.PEM).decode() for a in anchors)
    context.load_verify_locations(cadata=pem)
    return context


def client(
    port: int, verify: ssl.SSLContext | None, *, http2: bool = False, timeout: float = 10.0
) -> httpx.Client:
    """An HTTP client for the runtime: ``verify=None`` for plain HTTP."""
    scheme = "http" if verify is None else "https"
    return httpx.Client(
        base_url=f"{scheme}://{HOST}:{port}",
        verify=verify if verify is not None else False,
        http2=http2,
        timeout=timeout,
    )


def sealed_secrets(payload: dict[str, Any], enclave_public_key: bytes, *, pad: bool = False) -> str:
    """``app_sealed_secrets`` as Cosmian Enclave's clients send it: base64url of a sealed box."""
    text = base64.urlsafe_b64encode(seal(json.dumps(payload).encode(), enclave_public_key))
    return (text if pad else text.rstrip(b"=")).decode()


def poll(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Call ``check`` until it returns True; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- an owner's certificate, signed by a test CA ------------------------------------------------


@dataclass(frozen=True)
class OwnerPki:
    """A CA, and a server certificate for ``localhost`` and 127.0.0.1 that it signed."""

    ca: x509.Certificate
    certificate: x509.Certificate
    key_pem: str = field(repr=False)

    def write_certificate(self, path: Path) -> Path:
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return path

    @classmethod
    def generate(cls, names: Sequence[str] = ("localhost", HOST)) -> OwnerPki:
        now = datetime.now(UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Confide test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cls(ca=ca, certificate=cert, key_pem=key_pem)


def new_platform(sim_dir: Path) -> SimulatedPlatform:
    """Create the simulated platform before the runtime does, to know its root."""
    return SimulatedPlatform.open(sim_dir, now=datetime.now(UTC))


def secret_fragments(*values: str | bytes) -> list[bytes]:
    """What must never show in logs or in the state folder: each value, and hex of bytes."""
    out: list[bytes] = []
    for value in values:
        if isinstance(value, bytes):
            out += [value, value.hex().encode(), value.hex().upper().encode()]
        else:
            out.append(value.encode())
    return out


def assert_nowhere(blob: bytes, fragments: Sequence[bytes], where: str) -> None:
    for fragment in fragments:
        assert fragment not in blob, f"a secret ({len(fragment)} bytes) shows in {where}"
