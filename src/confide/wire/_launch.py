"""The launch manifest and the measurement (the fingerprint) of a launch.

As Gramine measures its trusted files and its arguments into MRENCLAVE, the
simulated loader measures a launch as SHA-256 over a canonical, versioned
launch manifest. ``confide fingerprint`` recomputes the same value on the
owner's or the user's machine, with no TEE.

Manifest format, version 1: a JSON object, UTF-8, keys sorted, no spaces
(``json.dumps(..., sort_keys=True, separators=(",", ":"))``)::

    {"app_id": "<uuid, lower-case, hyphenated>",
     "application": "<module:attribute>",
     "certificate_sha256": "<hex SHA-256 of the owner's certificate (DER)>" | null,
     "format": "confide-launch-manifest",
     "package_sha256": "<hex SHA-256 of the encrypted package>",
     "ratls_expiry": <UNIX seconds> | null,
     "requirements_sha256": "<hex SHA-256 of the requirements lock>",  (only with a lock)
     "runtime_sha256": "<hex runtime code hash>",
     "san": ["<name>", ...],
     "subject": "<RA-TLS subject CN>" | null,
     "tls": "ratls" | "certificate" | "none",
     "version": 1}

``requirements_sha256`` is present exactly when the app installs locked wheels: the
SHA-256 of its requirements lock (:class:`confide.wire.RequirementsLock`, ADR 0024);
an app without one has the manifest (and the fingerprint) it had before locks existed.

measurement = SHA-256("confide/launch/v1" || 0x00 || manifest bytes), 32 bytes,
the size of MRENCLAVE.

The runtime carries these exact manifest bytes in its RA-TLS certificate, in
the non-critical extension :data:`LAUNCH_MANIFEST_OID`: its extnValue octets are
the raw JSON bytes, as the quote extension holds the raw quote (at most
:data:`MAX_MANIFEST_SIZE` bytes). Nothing
there is trusted as such: a verifier recomputes the measurement of those bytes
and compares it with the quote's MRENCLAVE, so whoever delivers the certificate
cannot change a name or a field without changing the measurement (ADR 0010).

One builder, :meth:`LaunchManifest.for_app`, turns an app's TLS mode and expiry into
the manifest's fields; the operator, the client and the runtime all use it.

Example::

    >>> import uuid
    >>> m = LaunchManifest(
    ...     runtime_sha256=bytes(32), package_sha256=bytes(32),
    ...     app_id=uuid.UUID(int=1), application="app:app", tls=TlsMode.RATLS,
    ...     ratls_expiry=1900000000, certificate_sha256=None, san=("a.example",), subject=None,
    ... )
    >>> len(m.measurement())
    32
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography import x509

from confide.errors import UsageError

from ._enums import TlsMode
from ._names import APPLICATION_PATTERN

MANIFEST_VERSION: Final = 1
_DOMAIN: Final = b"confide/launch/v1\x00"
_FORMAT: Final = "confide-launch-manifest"
_APPLICATION: Final = re.compile(APPLICATION_PATTERN)
MAX_SANS: Final = 64
MAX_NAME: Final = 253
#: The RA-TLS certificate extension carrying the launch manifest's bytes: in the UUID arc
#: (ITU-T X.667, 2.25, no registration), a random number under 2**32, because pyca/cryptography
#: before 44 (which Cosmian's clients pin) refuses a certificate with a larger arc (ADR 0010).
LAUNCH_MANIFEST_OID: Final = x509.ObjectIdentifier("2.25.2723124448")
#: Largest launch manifest read from a certificate (64 SANs of 253 characters fit).
MAX_MANIFEST_SIZE: Final = 32 * 1024


def _hex32(value: object, name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise UsageError(f"{name} must be 32 bytes")
    return value


@dataclass(frozen=True, slots=True)
class LaunchManifest:
    """Every input that decides what a launched runtime does."""

    runtime_sha256: bytes
    package_sha256: bytes
    app_id: uuid.UUID
    application: str
    tls: TlsMode
    ratls_expiry: int | None
    certificate_sha256: bytes | None
    san: tuple[str, ...]
    subject: str | None
    #: SHA-256 of the app's requirements lock (ADR 0024); ``None``: no locked wheels.
    requirements_sha256: bytes | None = None

    def __post_init__(self) -> None:
        _hex32(self.runtime_sha256, "runtime_sha256")
        if self.requirements_sha256 is not None:
            _hex32(self.requirements_sha256, "requirements_sha256")
        _hex32(self.package_sha256, "package_sha256")
        if not _APPLICATION.match(self.application):
            raise UsageError(
                f"application must be module:attribute (e.g. app:app), got {self.application!r}"
            )
        if (self.tls == TlsMode.RATLS) != (self.ratls_expiry is not None):
            raise UsageError("an RA-TLS expiry is given exactly when the TLS mode is ratls")
        if (self.tls == TlsMode.OWNER) != (self.certificate_sha256 is not None):
            raise UsageError("a certificate hash is given exactly when the TLS mode is certificate")
        if self.certificate_sha256 is not None:
            _hex32(self.certificate_sha256, "certificate_sha256")
        if len(self.san) > MAX_SANS or any(not 0 < len(s) <= MAX_NAME for s in self.san):
            raise UsageError(f"at most {MAX_SANS} SAN names of 1 to {MAX_NAME} characters")
        if self.subject is not None and not 0 < len(self.subject) <= MAX_NAME:
            raise UsageError(f"the subject must be 1 to {MAX_NAME} characters")

    def to_dict(self) -> dict[str, Any]:
        fields = {
            "app_id": str(self.app_id),
            "application": self.application,
            "certificate_sha256": (
                self.certificate_sha256.hex() if self.certificate_sha256 is not None else None
            ),
            "format": _FORMAT,
            "package_sha256": self.package_sha256.hex(),
            "ratls_expiry": self.ratls_expiry,
            "runtime_sha256": self.runtime_sha256.hex(),
            "san": list(self.san),
            "subject": self.subject,
            "tls": self.tls.launch,
            "version": MANIFEST_VERSION,
        }
        if self.requirements_sha256 is not None:
            fields["requirements_sha256"] = self.requirements_sha256.hex()
        return fields

    def to_json(self) -> bytes:
        """The canonical bytes that are measured."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    def measurement(self) -> bytes:
        """SHA-256 of the domain tag and the canonical manifest: the enclave's MRENCLAVE."""
        return hashlib.sha256(_DOMAIN + self.to_json()).digest()

    @classmethod
    def from_json(cls, data: bytes | str) -> LaunchManifest:
        """Parse a manifest written by :meth:`to_json` (unknown versions fail)."""
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise UsageError(f"the launch manifest is not JSON: {exc}") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: object) -> LaunchManifest:
        """Parse a manifest given as :meth:`to_dict` gives it (unknown fields fail)."""
        if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
            raise UsageError("not a Confide launch manifest")
        if obj.get("version") != MANIFEST_VERSION:
            raise UsageError(
                f"launch manifest version {obj.get('version')!r} is not supported "
                f"(this Confide reads version {MANIFEST_VERSION}); upgrade Confide"
            )
        try:
            cert = obj["certificate_sha256"]
            locked = obj.get("requirements_sha256")
            manifest = cls(
                runtime_sha256=bytes.fromhex(obj["runtime_sha256"]),
                package_sha256=bytes.fromhex(obj["package_sha256"]),
                app_id=uuid.UUID(obj["app_id"]),
                application=obj["application"],
                tls=TlsMode.from_launch(obj["tls"]),
                ratls_expiry=obj["ratls_expiry"],
                certificate_sha256=bytes.fromhex(cert) if cert is not None else None,
                san=tuple(obj["san"]),
                subject=obj["subject"],
                requirements_sha256=bytes.fromhex(locked) if locked is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"the launch manifest is malformed: {exc}") from None
        if (
            manifest.to_json()
            != json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ):
            raise UsageError("the launch manifest has fields this version does not know")
        return manifest

    @classmethod
    def for_app(
        cls,
        *,
        app_id: uuid.UUID,
        application: str,
        tls: TlsMode,
        expires_at: datetime | None,
        certificate_sha256: bytes | None,
        san: tuple[str, ...],
        subject: str | None,
        package_sha256: bytes,
        runtime_sha256: bytes,
        requirements_sha256: bytes | None = None,
    ) -> LaunchManifest:
        """The manifest of an app served in ``tls`` mode: RA-TLS measures the app's expiry
        (whole seconds) and the owner's mode the SHA-256 of the owner's leaf (DER); the
        other mode's input must be ``None`` (an inconsistent call raises :class:`UsageError`).
        """
        return cls(
            runtime_sha256=runtime_sha256,
            package_sha256=package_sha256,
            app_id=app_id,
            application=application,
            tls=tls,
            ratls_expiry=int(expires_at.timestamp())
            if tls == TlsMode.RATLS and expires_at
            else None,
            certificate_sha256=certificate_sha256,
            san=san,
            subject=subject,
            requirements_sha256=requirements_sha256,
        )
