"""The runtime's settings: one frozen object, built once at the entry point from the arguments.

:meth:`RuntimeSettings.from_arguments` does the only I/O of this module: it
reads the owner's certificate and hashes the code (the encrypted package, or
the deterministic archive of a plaintext folder), because both are measured.

Example::

    >>> import uuid
    >>> settings = RuntimeSettings.from_arguments(  # doctest: +SKIP
    ...     app_id=uuid.UUID(int=1), application="app:app", package=Path("app.pkg"),
    ...     app_dir=None, plaincode=False, host="0.0.0.0", port=8443,
    ...     ratls_expiry=1900000000, certificate=None, no_ssl=False, san=("app.example",),
    ...     subject=None, state_dir=Path("state"), timeout=600, now=now,
    ... )
    >>> settings.manifest.measurement().hex()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.crypto import package_digest, write_archive
from confide.errors import UsageError
from confide.wire import MAX_LOCK_SIZE, LaunchManifest, RequirementsLock, TlsMode

from ._admission import source_of
from ._manifest import runtime_code_hash

#: Largest owner certificate file read (a leaf and its intermediates).
MAX_CERTIFICATE_FILE: Final = 256 * 1024
#: Most certificates in the owner's chain.
MAX_CHAIN_LENGTH: Final = 8
#: Longest configuration wait accepted by ``--timeout`` (30 days).
MAX_TIMEOUT: Final = 30 * 24 * 3600.0


class _HashingSink:
    """A write-only file object that only hashes what it is given."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self._hash.update(data)
        return len(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def plaintext_digest(app_dir: Path) -> bytes:
    """SHA-256 of the deterministic archive of ``app_dir`` (what ``--plaincode`` measures)."""
    sink = _HashingSink()
    write_archive(app_dir, sink)
    return sink.digest()


@dataclass(frozen=True, slots=True)
class CodeSource:
    """Where the app's code comes from, and its measured digest."""

    path: Path
    #: True for a plaintext folder (``--plaincode``, local tests); False for an encrypted package.
    plaintext: bool
    #: SHA-256 of the encrypted package, or of the plaintext folder's deterministic archive.
    digest: bytes

    @classmethod
    def encrypted(cls, package: Path) -> CodeSource:
        try:
            with package.open("rb") as f:
                digest = package_digest(f)
        except OSError as exc:
            raise UsageError(f"cannot read the package {package}: {exc.strerror or exc}") from None
        return cls(path=package, plaintext=False, digest=digest)

    @classmethod
    def plaintext_folder(cls, app_dir: Path) -> CodeSource:
        if not app_dir.is_dir():
            raise UsageError(f"--app-dir {app_dir} is not a folder")
        return cls(path=app_dir, plaintext=True, digest=plaintext_digest(app_dir))


@dataclass(frozen=True, slots=True)
class OwnerCertificate:
    """The owner's certificate chain (``--certificate``), leaf first. No private key here."""

    chain: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the leaf in DER: what the launch manifest measures."""
        return hashlib.sha256(self.leaf.public_bytes(Encoding.DER)).digest()

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(Encoding.PEM) for c in self.chain)

    @classmethod
    def from_pem(cls, data: bytes, where: str) -> OwnerCertificate:
        try:
            chain = tuple(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise UsageError(f"{where} is not a PEM certificate chain: {exc}") from None
        if not 0 < len(chain) <= MAX_CHAIN_LENGTH:
            raise UsageError(f"{where} holds {len(chain)} certificates; 1 to {MAX_CHAIN_LENGTH}")
        return cls(chain=chain)

    @classmethod
    def read(cls, path: Path) -> OwnerCertificate:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_CERTIFICATE_FILE + 1)
        except OSError as exc:
            raise UsageError(f"cannot read the certificate {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_CERTIFICATE_FILE:
            raise UsageError(f"the certificate {path} is larger than {MAX_CERTIFICATE_FILE} bytes")
        return cls.from_pem(data, str(path))


def read_lock(path: Path) -> RequirementsLock:
    """The requirements lock at ``path`` (``--requirements``), parsed strictly."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_LOCK_SIZE + 1)
    except OSError as exc:
        raise UsageError(
            f"cannot read the requirements lock {path}: {exc.strerror or exc}"
        ) from None
    return RequirementsLock.from_bytes(data, where=f"the requirements lock {path}")


def launch_manifest(
    *,
    app_id: uuid.UUID,
    application: str,
    code: CodeSource,
    ratls_expiry: int | None,
    certificate: OwnerCertificate | None,
    san: tuple[str, ...],
    subject: str | None,
    runtime_sha256: bytes | None = None,
    lock: RequirementsLock | None = None,
) -> LaunchManifest:
    """The manifest a launch with these inputs measures to (RA-TLS when an expiry is given,
    the owner's certificate when one is given, plain HTTP otherwise).

    ``runtime_sha256`` defaults to the installed Confide's own code hash.
    """
    if ratls_expiry is not None:
        tls = TlsMode.RATLS
    elif certificate is not None:
        tls = TlsMode.OWNER
    else:
        tls = TlsMode.OPERATOR
    return LaunchManifest.for_app(
        app_id=app_id,
        application=application,
        tls=tls,
        expires_at=datetime.fromtimestamp(ratls_expiry, UTC) if ratls_expiry is not None else None,
        certificate_sha256=certificate.sha256 if certificate is not None else None,
        san=san,
        subject=subject,
        package_sha256=code.digest,
        runtime_sha256=runtime_sha256 if runtime_sha256 is not None else runtime_code_hash(),
        requirements_sha256=lock.digest() if lock is not None else None,
    )


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Everything ``confide runtime`` was told, parsed; nothing else reads the arguments.

    ``manifest`` is the launch manifest these settings measure to (with the
    installed runtime's code hash); a simulated TEE launches its measurement.
    """

    app_id: uuid.UUID
    application: str
    code: CodeSource
    host: str
    port: int
    tls: TlsMode
    ratls_expiry: datetime | None
    certificate: OwnerCertificate | None
    san: tuple[str, ...]
    subject: str | None
    #: Not measured: only data sealed to this measurement is written there (ADR 0011).
    state_dir: Path
    #: Seconds to wait for the configuration before stopping; ``None``: wait until the
    #: configuration certificate expires. Not measured: it can only stop the runtime sooner,
    #: which the host can do anyway (ADR 0011).
    timeout: float | None
    manifest: LaunchManifest
    #: Where the operator's router hands client connections off (ADR 0009); not measured:
    #: like the port, it changes where connections come from, not what is done with them.
    handoff: Path | None = None
    #: Addresses that relay other clients' connections (``--relay-source``): the per-source
    #: connection shares do not apply to them (ADR 0013). Not measured: availability only.
    relay_sources: frozenset[str] = frozenset()
    #: The app's requirements lock (``--requirements``): measured (ADR 0024).
    lock: RequirementsLock | None = None
    #: The operator's wheel cache (``--wheels``): not trusted, each wheel is checked
    #: against :attr:`lock` before it is installed.
    wheels: Path | None = None
    # No code folder here: the runtime always makes it in RAM itself (``CODE_ROOT``).

    @property
    def measurement(self) -> bytes:
        return self.manifest.measurement()

    @classmethod
    def from_arguments(
        cls,
        *,
        app_id: uuid.UUID,
        application: str,
        package: Path | None,
        app_dir: Path | None,
        plaincode: bool,
        host: str,
        port: int,
        ratls_expiry: int | None,
        certificate: Path | None,
        no_ssl: bool,
        san: tuple[str, ...],
        subject: str | None,
        state_dir: Path,
        timeout: float | None,
        now: datetime,
        runtime_sha256: bytes | None = None,
        handoff: Path | None = None,
        relay_sources: tuple[str, ...] = (),
        requirements: Path | None = None,
        wheels: Path | None = None,
    ) -> RuntimeSettings:
        """Check the arguments together, read and hash what is measured."""
        if now.tzinfo is None:
            raise UsageError("now must be a timezone-aware datetime")
        modes = sum((ratls_expiry is not None, certificate is not None, no_ssl))
        if modes != 1:
            raise UsageError("give exactly one of --ratls EXPIRY, --certificate PEM or --no-ssl")
        if package is not None and app_dir is None and not plaincode:
            code_path, encrypted = package, True
        elif app_dir is not None and package is None and plaincode:
            code_path, encrypted = app_dir, False
        else:
            raise UsageError(
                "give exactly one of --package PATH or --app-dir DIR --plaincode "
                "(--plaincode confirms that the code is not encrypted)"
            )
        if not 0 <= port <= 65535:
            raise UsageError(f"--port must be in 0..65535, got {port}")
        relays = frozenset(_relay_source(address) for address in relay_sources)
        if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
            raise UsageError(f"--timeout must be in (0, {MAX_TIMEOUT:.0f}] seconds, got {timeout}")
        expiry: datetime | None = None
        if ratls_expiry is not None:
            expiry = datetime.fromtimestamp(ratls_expiry, now.tzinfo)
            if expiry <= now:
                raise UsageError(
                    f"--ratls expiry {ratls_expiry} is in the past (now is {int(now.timestamp())})"
                )
        if (requirements is None) != (wheels is None):
            raise UsageError("give --requirements LOCK and --wheels DIR together, or neither")
        lock = read_lock(requirements) if requirements is not None else None
        owner = OwnerCertificate.read(certificate) if certificate is not None else None
        code = (
            CodeSource.encrypted(code_path) if encrypted else CodeSource.plaintext_folder(code_path)
        )
        manifest = launch_manifest(
            app_id=app_id,
            application=application,
            code=code,
            ratls_expiry=ratls_expiry,
            certificate=owner,
            san=san,
            subject=subject,
            runtime_sha256=runtime_sha256,
            lock=lock,
        )
        tls = manifest.tls
        return cls(
            app_id=app_id,
            application=application,
            code=code,
            host=host,
            port=port,
            tls=tls,
            ratls_expiry=expiry,
            certificate=owner,
            san=san,
            subject=subject,
            state_dir=state_dir,
            timeout=timeout,
            manifest=manifest,
            handoff=handoff,
            relay_sources=relays,
            lock=lock,
            wheels=wheels,
        )


def _relay_source(address: str) -> str:
    """``--relay-source``: an IP address, as the runtime's admission names sources."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(
            f"--relay-source must be an IP address (the relay's), got {address!r}"
        ) from None
    return source_of((str(ip), 0))
