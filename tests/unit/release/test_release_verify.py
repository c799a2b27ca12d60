"""The user's check of a release (``verify_release``): each piece of evidence changed alone.

Each row starts from one scenario that verifies (an owner's release logged
as entry 1 of a 2-entry log, the client having seen the 1-entry log before),
changes one thing, and names the error class and code the check must raise.
A row whose change leaves the scenario as it was fails, so the table cannot
pass vacuously.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from confide.errors import AttestationError, LogError, ReleaseError
from confide.release import (
    Checkpoint,
    Envelope,
    LoggedEntry,
    LogKey,
    OwnerKey,
    Release,
    ReleaseEvidence,
    Revocation,
    VerifiedRelease,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_release,
)
from confide.wire import LaunchManifest, TlsMode

ORIGIN = "operator.example/confide-log"
LOG = LogKey(ORIGIN, bytes(range(32)))
OTHER_LOG = LogKey(ORIGIN, bytes(range(1, 33)))
OWNER = OwnerKey(bytes([7]) * 32)
OTHER_OWNER = OwnerKey(bytes([8]) * 32)
START = datetime(2026, 12, 1, tzinfo=UTC)
NOW = START + timedelta(days=2)


def manifest(package: int = 1) -> LaunchManifest:
    return LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes([package]) * 32,
        app_id=uuid.UUID(int=1),
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=30,
        certificate_sha256=None,
        san=("app.example",),
        subject=None,
    )


RELEASE = Release.of(manifest(), not_before=START, validity=timedelta(days=30), version="1.0")
FINGERPRINT = RELEASE.fingerprint
FILLER = Release.of(manifest(2), not_before=START, validity=timedelta(days=30)).sign(OWNER)


@dataclass(frozen=True)
class Scenario:
    log: list[bytes]  # every leaf the operator's log holds
    shown: list[int]  # the indexes it answers with for the fingerprint
    size: int  # the checkpoint's size
    seen: Checkpoint | None  # the client's last checkpoint
    owner: OwnerKey = OWNER
    now: datetime = NOW
    key: LogKey = LOG
    fingerprint: bytes = FINGERPRINT
    served: dict[int, bytes] = dataclasses.field(default_factory=dict)  # leaves shown otherwise

    def evidence(self) -> ReleaseEvidence:
        hashes = [leaf_hash(leaf) for leaf in self.log[: self.size]]
        note = Checkpoint(ORIGIN, self.size, root(hashes)).sign(self.key)
        entries = tuple(
            LoggedEntry(
                i,
                self.served.get(i, self.log[i]),
                tuple(inclusion_proof(hashes, i) if i < self.size else ()),
            )
            for i in self.shown
        )
        old = self.seen.size if self.seen is not None else 0
        consistency = consistency_proof(hashes, old) if old <= self.size else []
        return ReleaseEvidence(note, entries, tuple(consistency))

    def verify(self) -> VerifiedRelease:
        return verify_release(
            self.evidence(),
            owner=self.owner.public_key,
            fingerprint=self.fingerprint,
            log=LOG.verifier,
            last_seen=self.seen,
            now=self.now,
        )


def seen(leaves: Sequence[bytes]) -> Checkpoint:
    return Checkpoint(ORIGIN, len(leaves), root([leaf_hash(leaf) for leaf in leaves]))


STATEMENT = RELEASE.sign(OWNER).to_json()
GOOD = Scenario([FILLER.to_json(), STATEMENT], [1], 2, seen([FILLER.to_json()]))


def revoked_by(key: OwnerKey) -> Callable[[Scenario], Scenario]:
    def change(s: Scenario) -> Scenario:
        revocation = Revocation(FINGERPRINT, START + timedelta(days=1), "CVE").sign(key).to_json()
        return dataclasses.replace(s, log=[*s.log, revocation], shown=[1, 2], size=3)

    return change


def tampered_payload(s: Scenario) -> Scenario:
    envelope = Envelope.from_json(STATEMENT)
    body = envelope.payload.replace(b'"1.0"', b'"6.6"')
    forged = dataclasses.replace(envelope, payload=body).to_json()
    return dataclasses.replace(s, log=[s.log[0], forged])


def unlogged(s: Scenario) -> Scenario:
    # The operator shows a statement at index 1 that its log does not hold there.
    other = Release.of(manifest(), not_before=START, validity=timedelta(days=29)).sign(OWNER)
    return dataclasses.replace(s, served={1: other.to_json()})


def other_fingerprint(s: Scenario) -> Scenario:
    return dataclasses.replace(s, log=[s.log[0], FILLER.to_json()])


def wrong_type(s: Scenario) -> Scenario:
    envelope = Release.of(manifest(), not_before=START, validity=timedelta(days=30))
    forged = Envelope.sign("application/json", envelope.statement(), OWNER).to_json()
    return dataclasses.replace(s, log=[s.log[0], forged])


TAMPER: dict[str, tuple[Callable[[Scenario], Scenario], type[AttestationError], str]] = {
    "another owner's key": (
        lambda s: dataclasses.replace(s, owner=OTHER_OWNER),
        ReleaseError,
        "release.owner",
    ),
    "statement altered after signing": (tampered_payload, ReleaseError, "release.signature"),
    "no statement at all": (
        lambda s: dataclasses.replace(s, shown=[]),
        ReleaseError,
        "release.absent",
    ),
    "another fingerprint's statement": (other_fingerprint, ReleaseError, "release.subject"),
    "wrong payload type": (wrong_type, ReleaseError, "release.payload_type"),
    "malformed envelope": (
        lambda s: dataclasses.replace(s, log=[s.log[0], b"{}"]),
        ReleaseError,
        "release.format",
    ),
    "an unlogged statement": (unlogged, LogError, "log.inclusion"),
    "a statement past the checkpoint": (
        lambda s: dataclasses.replace(s, log=[*s.log, STATEMENT], shown=[2]),
        LogError,
        "log.inclusion",
    ),
    "a revoked release": (revoked_by(OWNER), ReleaseError, "release.revoked"),
    "an expired statement": (
        lambda s: dataclasses.replace(s, now=START + timedelta(days=30)),
        ReleaseError,
        "release.expired",
    ),
    "a statement not yet valid": (
        lambda s: dataclasses.replace(s, now=START - timedelta(seconds=1)),
        ReleaseError,
        "release.not_yet_valid",
    ),
    "the log rewritten after the client saw it": (
        lambda s: dataclasses.replace(s, seen=seen([STATEMENT])),
        LogError,
        "log.consistency",
    ),
    "the log shrank": (
        lambda s: dataclasses.replace(s, seen=seen([*s.log, STATEMENT])),
        LogError,
        "log.consistency",
    ),
    "the last seen checkpoint of another log": (
        lambda s: dataclasses.replace(
            s, seen=dataclasses.replace(seen(s.log[:1]), origin="other.example/log")
        ),
        LogError,
        "log.origin",
    ),
    "a checkpoint by another log key": (
        lambda s: dataclasses.replace(s, key=OTHER_LOG),
        LogError,
        "log.key",
    ),
}


@pytest.mark.parametrize(("tamper", "cls", "code"), TAMPER.values(), ids=TAMPER.keys())
def test_release_tamper(
    tamper: Callable[[Scenario], Scenario], cls: type[AttestationError], code: str
) -> None:
    GOOD.verify()  # the untampered scenario verifies
    changed = tamper(GOOD)
    assert changed != GOOD, "the tamper changed nothing"
    with pytest.raises(cls) as caught:
        changed.verify()
    assert caught.value.code == code


def test_the_scenario_proves_the_release() -> None:
    verified = GOOD.verify()
    assert verified == verify_release(
        GOOD.evidence(),
        owner=OWNER.public_key,
        fingerprint=FINGERPRINT,
        log=LOG.verifier,
        last_seen=GOOD.seen,
        now=NOW,
    )
    assert (verified.log_index, verified.release.version) == (1, "1.0")
    assert verified.checkpoint.size == 2


def test_a_revocation_by_another_key_is_ignored() -> None:
    revoked_by(OTHER_OWNER)(GOOD).verify()


def test_a_first_verification_trusts_the_first_checkpoint() -> None:
    dataclasses.replace(GOOD, seen=None).verify()


def test_the_newest_valid_release_is_reported() -> None:
    again = Release.of(manifest(), not_before=START, validity=timedelta(days=60), version="1.1")
    scenario = dataclasses.replace(
        GOOD, log=[*GOOD.log, again.sign(OWNER).to_json()], shown=[1, 2], size=3
    )
    verified = scenario.verify()
    assert verified.log_index == 2
    # Past the first statement's window, the second one still holds.
    later = dataclasses.replace(scenario, now=START + timedelta(days=45)).verify()
    assert later.release.version == "1.1"
