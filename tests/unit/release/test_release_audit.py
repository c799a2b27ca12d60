"""``audit_log``: replaying a whole log, each way it must refuse one, and what it reports."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from confide.errors import LogError
from confide.release import (
    Checkpoint,
    Envelope,
    LogKey,
    OwnerKey,
    Release,
    Revocation,
    audit_log,
    leaf_hash,
    root,
)
from confide.wire import LaunchManifest, TlsMode

ORIGIN = "operator.example/confide-log"
LOG = LogKey(ORIGIN, bytes(range(32)))
OWNER = OwnerKey(bytes([1]) * 32)
OTHER = OwnerKey(bytes([2]) * 32)
START = datetime(2026, 12, 1, tzinfo=UTC)


def release(package: int, key: OwnerKey = OWNER) -> bytes:
    manifest = LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes([package]) * 32,
        app_id=uuid.UUID(int=package),
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=30,
        certificate_sha256=None,
        san=("a.example",),
        subject=None,
    )
    return Release.of(manifest, not_before=START, validity=timedelta(days=1)).sign(key).to_json()


def fingerprint_of(leaf: bytes) -> bytes:
    return bytes.fromhex(Envelope.from_json(leaf).payload.split(b'"sha256":"')[1][:64].decode())


LEAVES = [release(1), release(2, OTHER), release(3)]
REVOKE_1 = Revocation(fingerprint_of(LEAVES[0]), START).sign(OWNER).to_json()


def head(leaves: list[bytes]) -> Checkpoint:
    return Checkpoint(ORIGIN, len(leaves), root([leaf_hash(leaf) for leaf in leaves]))


@dataclass(frozen=True)
class Audit:
    note: bytes
    leaves: list[bytes]
    seen: Checkpoint | None
    key: LogKey = LOG

    def run(self) -> object:
        return audit_log(self.note, self.leaves, self.key.verifier, self.seen)


ALL = [*LEAVES, REVOKE_1]
GOOD = Audit(head(ALL).sign(LOG), ALL, head(LEAVES[:2]))

TAMPER: dict[str, tuple[Callable[[Audit], Audit], str]] = {
    "an entry changed": (lambda a: replace(a, leaves=[release(9), *a.leaves[1:]]), "log.replay"),
    "an entry missing": (lambda a: replace(a, leaves=a.leaves[:-1]), "log.replay"),
    "history rewritten under a new checkpoint": (
        lambda a: replace(
            a, note=head([release(9), *ALL[1:]]).sign(LOG), leaves=[release(9), *ALL[1:]]
        ),
        "log.consistency",
    ),
    "the log shrank": (lambda a: replace(a, seen=head([*ALL, release(7)])), "log.consistency"),
    "the last seen checkpoint of another log": (
        lambda a: replace(a, seen=replace(head(LEAVES[:2]), origin="other.example/log")),
        "log.origin",
    ),
    "another log's key": (lambda a: replace(a, key=LogKey(ORIGIN, bytes(32))), "log.key"),
    "an entry that is no statement": (
        lambda a: replace(a, note=head([*ALL, b"{}"]).sign(LOG), leaves=[*ALL, b"{}"]),
        "log.entry",
    ),
    "a revocation by a key that never released": (
        lambda a: replace(
            a,
            note=head(
                [*ALL, Revocation(fingerprint_of(LEAVES[0]), START).sign(OTHER).to_json()]
            ).sign(LOG),
            leaves=[*ALL, Revocation(fingerprint_of(LEAVES[0]), START).sign(OTHER).to_json()],
        ),
        "log.entry",
    ),
}


@pytest.mark.parametrize(("tamper", "code"), TAMPER.values(), ids=TAMPER.keys())
def test_audit_tamper(tamper: Callable[[Audit], Audit], code: str) -> None:
    GOOD.run()
    changed = tamper(GOOD)
    assert changed != GOOD, "the tamper changed nothing"
    with pytest.raises(LogError) as caught:
        changed.run()
    assert caught.value.code == code


def test_the_report() -> None:
    report = audit_log(GOOD.note, GOOD.leaves, LOG.verifier, GOOD.seen)
    assert (report.releases, report.revocations, report.extends) == (3, 1, 2)
    assert report.owners == {OWNER.public_key.key_id, OTHER.public_key.key_id}
    assert audit_log(GOOD.note, GOOD.leaves, LOG.verifier, None).extends is None
