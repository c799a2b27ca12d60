"""Release and revocation statements: in-toto Statements v1 about a launch fingerprint.

A statement is the payload of a DSSE envelope (:mod:`._dsse`, payload type
``application/vnd.in-toto+json``); it is canonical JSON (sorted keys, no
spaces, UTF-8) and unknown members are refused at every level::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "confide-launch", "digest": {"sha256": FINGERPRINT_HEX}}],
     "predicateType": RELEASE_PREDICATE | REVOCATION_PREDICATE,
     "predicate": {...}}

The one subject is the launch fingerprint, the enclave's MRENCLAVE: SHA-256 over
the launch domain tag and the canonical launch manifest
(:meth:`confide.wire.LaunchManifest.measurement`), or, for an enclave launched
with Gramine (the predicate then has ``"gramine"``), the MRENCLAVE Gramine's
signer computes over the Gramine manifest rendered from the launch manifest, the
runtime environment and the enclave size and thread count given there (the owner
predicted it with ``gramine-sgx-sign``; it cannot be recomputed without it).

The release predicate (``urn:confide:release:v1``)::

    {"launchManifest": {...},          the manifest, as LaunchManifest.to_dict()
     "packageSha256": HEX,             the code package's digest (the manifest's)
     "names": [NAME, ...],             the names served (the manifest's SANs)
     "version": TEXT | null,           an optional version label
     "sourceRef": TEXT | null,         an optional source reference (a commit, a URL)
     "notBefore": TIME, "notAfter": TIME,   the validity window
     "gramine": {"enclaveSize": "512M", "maxThreads": N}}   only for a Gramine enclave

The revocation predicate (``urn:confide:revocation:v1``)::

    {"revokedAt": TIME, "reason": TEXT | null}

A revocation by an owner key revokes every release statement of that key for
the same fingerprint, for good: a release is its code, and code once revoked
by its owner stays revoked (a fixed release has a new fingerprint). ``TIME`` is
``YYYY-MM-DDTHH:MM:SSZ`` (UTC, RFC 3339). The predicate type URIs are names,
never fetched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from confide import strictjson
from confide.errors import JsonError, ReleaseError, UsageError
from confide.wire import LaunchManifest

from ._dsse import INTOTO_PAYLOAD_TYPE, MAX_ENVELOPE_SIZE, Envelope
from ._keys import OwnerKey, OwnerPublicKey

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
RELEASE_PREDICATE: Final = "urn:confide:release:v1"
REVOCATION_PREDICATE: Final = "urn:confide:revocation:v1"
SUBJECT_NAME: Final = "confide-launch"
#: Longest version label, source reference or revocation reason.
MAX_LABEL: Final = 256
#: Longest validity window a release statement may claim.
MAX_VALIDITY: Final = timedelta(days=398)

_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
#: A Gramine ``sgx.enclave_size`` (as ``confide.gramine`` renders it) and the most threads.
_ENCLAVE_SIZE: Final = re.compile(r"[1-9][0-9]{0,5}[KMG]")
MAX_GRAMINE_THREADS: Final = 4096


def format_time(when: datetime) -> str:
    if when.tzinfo is None:
        raise UsageError("statement times must be timezone-aware")
    return when.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: object, what: str) -> datetime:
    if not isinstance(text, str) or len(text) != len("2026-01-01T00:00:00Z"):
        raise UsageError(f"{what} must be a time YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"{what} must be a time YYYY-MM-DDTHH:MM:SSZ, got {text!r}") from None


def _label(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_LABEL:
        raise UsageError(f"{what} must be 1 to {MAX_LABEL} characters or null")
    return value


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _statement(fingerprint: bytes, predicate_type: str, predicate: dict[str, Any]) -> bytes:
    return _canonical(
        {
            "_type": STATEMENT_TYPE,
            "predicate": predicate,
            "predicateType": predicate_type,
            "subject": [{"digest": {"sha256": fingerprint.hex()}, "name": SUBJECT_NAME}],
        }
    )


@dataclass(frozen=True, slots=True)
class Release:
    """What an owner states about one release (the release predicate, parsed)."""

    fingerprint: bytes
    manifest: LaunchManifest
    version: str | None
    source_ref: str | None
    not_before: datetime
    not_after: datetime
    #: A Gramine enclave's ``sgx.enclave_size`` and ``sgx.max_threads``: the fingerprint is
    #: then the MRENCLAVE of its Gramine manifest, not the launch manifest's own measurement.
    gramine: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if self.gramine is None and self.manifest.measurement() != self.fingerprint:
            raise UsageError("the release's launch manifest does not measure to its fingerprint")
        if self.gramine is not None:
            size, threads = self.gramine
            if not isinstance(size, str) or not _ENCLAVE_SIZE.fullmatch(size):
                raise UsageError("the release's Gramine enclave size is not like 512M")
            if not isinstance(threads, int) or not 0 < threads <= MAX_GRAMINE_THREADS:
                raise UsageError(
                    f"the release's Gramine thread count is not 1..{MAX_GRAMINE_THREADS}"
                )
            if len(self.fingerprint) != 32:
                raise UsageError("a fingerprint is 32 bytes")
        if not self.not_before < self.not_after <= self.not_before + MAX_VALIDITY:
            raise UsageError(
                f"a release's validity window must be non-empty and at most {MAX_VALIDITY.days} "
                "days"
            )
        _label(self.version, "the version label")
        _label(self.source_ref, "the source reference")

    @property
    def names(self) -> tuple[str, ...]:
        return self.manifest.san

    @classmethod
    def of(
        cls,
        manifest: LaunchManifest,
        *,
        not_before: datetime,
        validity: timedelta,
        version: str | None = None,
        source_ref: str | None = None,
        gramine: tuple[bytes, str, int] | None = None,
    ) -> Release:
        """``gramine``: (MRENCLAVE, enclave size, threads) of a Gramine enclave of ``manifest``."""
        start = not_before.astimezone(UTC).replace(microsecond=0)
        if gramine is not None:
            mrenclave, size, threads = gramine
            return cls(
                mrenclave, manifest, version, source_ref, start, start + validity, (size, threads)
            )
        return cls(manifest.measurement(), manifest, version, source_ref, start, start + validity)

    def statement(self) -> bytes:
        predicate = {
            "launchManifest": self.manifest.to_dict(),
            "names": list(self.manifest.san),
            "notAfter": format_time(self.not_after),
            "notBefore": format_time(self.not_before),
            "packageSha256": self.manifest.package_sha256.hex(),
            "sourceRef": self.source_ref,
            "version": self.version,
        }
        if self.gramine is not None:
            predicate["gramine"] = {"enclaveSize": self.gramine[0], "maxThreads": self.gramine[1]}
        return _statement(self.fingerprint, RELEASE_PREDICATE, predicate)

    def sign(self, key: OwnerKey) -> Envelope:
        return Envelope.sign(INTOTO_PAYLOAD_TYPE, self.statement(), key)


@dataclass(frozen=True, slots=True)
class Revocation:
    """An owner's revocation of every release of one fingerprint."""

    fingerprint: bytes
    revoked_at: datetime
    reason: str | None = None

    def __post_init__(self) -> None:
        if len(self.fingerprint) != 32:
            raise UsageError("a fingerprint is 32 bytes")
        _label(self.reason, "the revocation reason")

    def statement(self) -> bytes:
        predicate = {"reason": self.reason, "revokedAt": format_time(self.revoked_at)}
        return _statement(self.fingerprint, REVOCATION_PREDICATE, predicate)

    def sign(self, key: OwnerKey) -> Envelope:
        return Envelope.sign(INTOTO_PAYLOAD_TYPE, self.statement(), key)


def _exact(obj: object, members: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != members:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise UsageError(f"{what} has members {found}, expected {sorted(members)}")
    return obj


def _subject(statement: dict[str, Any]) -> bytes:
    subjects = statement["subject"]
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise UsageError("a statement has exactly one subject")
    subject = _exact(subjects[0], {"name", "digest"}, "the subject")
    digest = _exact(subject["digest"], {"sha256"}, "the subject's digest")
    if subject["name"] != SUBJECT_NAME:
        raise UsageError(f"the subject's name must be {SUBJECT_NAME!r}")
    value = digest["sha256"]
    if not isinstance(value, str) or len(value) != 64 or value != value.lower():
        raise UsageError("the subject's sha256 must be 64 lowercase hex digits")
    return bytes.fromhex(value)


_RELEASE_KEYS: Final = frozenset(
    {"launchManifest", "names", "notAfter", "notBefore", "packageSha256", "sourceRef", "version"}
)


def _release(fingerprint: bytes, obj: object) -> Release:
    keys = set(_RELEASE_KEYS)
    if isinstance(obj, dict) and "gramine" in obj:
        keys.add("gramine")
    predicate = _exact(obj, keys, "the release predicate")
    gramine = None
    if "gramine" in predicate:
        shape = _exact(predicate["gramine"], {"enclaveSize", "maxThreads"}, "the Gramine shape")
        gramine = (shape["enclaveSize"], shape["maxThreads"])
        if isinstance(gramine[1], bool):
            raise UsageError("the release's Gramine thread count is not a number")
    manifest = LaunchManifest.from_dict(predicate["launchManifest"])
    if predicate["names"] != list(manifest.san):
        raise UsageError("the release's names are not its launch manifest's")
    if predicate["packageSha256"] != manifest.package_sha256.hex():
        raise UsageError("the release's package digest is not its launch manifest's")
    return Release(
        fingerprint,
        manifest,
        _label(predicate["version"], "the version label"),
        _label(predicate["sourceRef"], "the source reference"),
        parse_time(predicate["notBefore"], "notBefore"),
        parse_time(predicate["notAfter"], "notAfter"),
        gramine,
    )


def _revocation(fingerprint: bytes, obj: object) -> Revocation:
    predicate = _exact(obj, {"reason", "revokedAt"}, "the revocation predicate")
    return Revocation(
        fingerprint,
        parse_time(predicate["revokedAt"], "revokedAt"),
        _label(predicate["reason"], "the revocation reason"),
    )


def parse_statement(payload: bytes) -> Release | Revocation:
    """Parse a verified envelope's payload; :class:`ReleaseError` ``release.format`` if it is
    not exactly a canonical Confide release or revocation statement."""
    try:
        obj = strictjson.loads_object(payload, what="the statement", max_bytes=MAX_ENVELOPE_SIZE)
        statement = _exact(obj, {"_type", "subject", "predicateType", "predicate"}, "a statement")
        if statement["_type"] != STATEMENT_TYPE:
            raise UsageError(f"_type must be {STATEMENT_TYPE}")
        fingerprint = _subject(statement)
        kind = statement["predicateType"]
        parsed: Release | Revocation
        if kind == RELEASE_PREDICATE:
            parsed = _release(fingerprint, statement["predicate"])
        elif kind == REVOCATION_PREDICATE:
            parsed = _revocation(fingerprint, statement["predicate"])
        else:
            raise UsageError(f"unknown predicate type {str(kind)[:80]!r}")
        if parsed.statement() != payload:
            raise UsageError("the statement is not in canonical form")
        return parsed
    except (JsonError, UsageError) as exc:
        raise ReleaseError(
            "release.format", "the release statement is malformed", detail=str(exc)
        ) from None


def open_statement(envelope: Envelope, key: OwnerPublicKey) -> Release | Revocation:
    """The statement of ``envelope`` once ``key``'s signature verifies (see
    :meth:`Envelope.verified_payload` for the errors)."""
    return parse_statement(envelope.verified_payload(key, INTOTO_PAYLOAD_TYPE))
