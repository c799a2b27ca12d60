"""The user's check of a release: pure, with the evidence already fetched and time given.

:func:`verify_release` takes what the operator answered for one fingerprint
(:class:`ReleaseEvidence`: its log's signed checkpoint, the logged statements
about the fingerprint with their inclusion proofs, and a consistency proof
from the checkpoint this client saw last) and proves, in this order:

1. the checkpoint is signed by the operator's log key and is of its origin
   (``log.format``, ``log.key``, ``log.signature``, ``log.origin``);
2. the log is an extension of the last checkpoint this client saw from this
   operator (``log.consistency``): a log rewritten or forked after the client
   saw it is caught here;
3. some statement about the fingerprint is signed by the owner key
   (``release.absent`` when there is none at all, ``release.owner`` when all
   are another key's, ``release.signature`` for a tampered one,
   ``release.format``) and is about exactly this fingerprint
   (``release.subject``);
4. it is included in the checkpoint's tree (``log.inclusion``): an unlogged
   statement is refused;
5. it is within its validity window at ``now`` (``release.not_yet_valid``,
   ``release.expired``);
6. no logged revocation by the same owner for this fingerprint
   (``release.revoked``; revocations signed by other keys are ignored).

What the log cannot prove: that the operator showed this client every
revocation. Presence is proven; absence is only as good as the auditors who
replay the whole log (``confide log audit``), see ADR 0019.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from confide.errors import ReleaseError

from ._dsse import INTOTO_PAYLOAD_TYPE, Envelope
from ._keys import OwnerPublicKey
from ._merkle import leaf_hash, verify_consistency, verify_inclusion
from ._note import Checkpoint, LogVerifier
from ._statement import Release, Revocation, parse_statement

#: Most logged statements read about one fingerprint (releases and revocations together).
MAX_ENTRIES: Final = 32


@dataclass(frozen=True, slots=True)
class LoggedEntry:
    """One log entry: its index, its leaf (a DSSE envelope's bytes), its inclusion proof."""

    index: int
    envelope: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ReleaseEvidence:
    """What the operator answers about one fingerprint (nothing in it is trusted yet)."""

    #: The log's latest checkpoint, a signed note.
    checkpoint: bytes
    #: The logged statements about the fingerprint (releases and revocations).
    entries: tuple[LoggedEntry, ...]
    #: Consistency proof from the client's last seen checkpoint to ``checkpoint``.
    consistency: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class VerifiedRelease:
    """What :func:`verify_release` proved."""

    owner: OwnerPublicKey
    release: Release
    #: The statement's index in the log.
    log_index: int
    #: The verified checkpoint (keep it: it is the next ``last_seen``).
    checkpoint: Checkpoint
    #: Its signed note, as received.
    checkpoint_note: bytes

    @property
    def fingerprint(self) -> bytes:
        return self.release.fingerprint


def verify_checkpoint(
    note: bytes,
    verifier: LogVerifier,
    last_seen: Checkpoint | None,
    consistency: Sequence[bytes],
) -> Checkpoint:
    """Steps 1 and 2 of :func:`verify_release`: the checkpoint, consistent with ``last_seen``."""
    checkpoint = Checkpoint.open(note, verifier)
    if last_seen is not None:
        checkpoint.check_origin(last_seen)
        verify_consistency(
            last_seen.size, checkpoint.size, consistency, last_seen.root, checkpoint.root
        )
    return checkpoint


def verify_release(
    evidence: ReleaseEvidence,
    *,
    owner: OwnerPublicKey,
    fingerprint: bytes,
    log: LogVerifier,
    last_seen: Checkpoint | None,
    now: datetime,
) -> VerifiedRelease:
    """Prove that ``owner`` released ``fingerprint``, logged, valid and not revoked at ``now``
    (the steps and codes are in the module's description); raise the first that fails."""
    checkpoint = verify_checkpoint(evidence.checkpoint, log, last_seen, evidence.consistency)
    if len(evidence.entries) > MAX_ENTRIES:
        raise ReleaseError(
            "release.format",
            "too many statements about one fingerprint",
            observed=len(evidence.entries),
            expected=f"at most {MAX_ENTRIES}",
        )
    releases: list[tuple[LoggedEntry, Release]] = []
    revocations: list[tuple[LoggedEntry, Revocation]] = []
    refusal: ReleaseError | None = None
    for entry in evidence.entries:
        envelope = Envelope.from_json(entry.envelope)
        try:
            statement = parse_statement(envelope.verified_payload(owner, INTOTO_PAYLOAD_TYPE))
        except ReleaseError as exc:
            # Keep the most telling refusal: a tampered statement over another owner's.
            if refusal is None or exc.code == "release.signature":
                refusal = exc
            continue
        if statement.fingerprint != fingerprint:
            raise ReleaseError(
                "release.subject",
                "the owner's statement is about another fingerprint",
                observed=statement.fingerprint,
                expected=fingerprint,
                hint="the operator answered with another release's statement",
            )
        if isinstance(statement, Release):
            releases.append((entry, statement))
        else:
            revocations.append((entry, statement))
    if not releases:
        if refusal is not None and not revocations:
            raise refusal
        raise ReleaseError(
            "release.absent",
            "no release statement of the owner key for this fingerprint",
            observed=f"{len(evidence.entries)} statements, none a release by this owner",
            expected=f"a release signed by {owner.key_id} for {fingerprint.hex()}",
            hint="the owner has not released this code, or the operator does not show it",
        )
    for entry, _ in (*releases, *revocations):
        verify_inclusion(
            leaf_hash(entry.envelope), entry.index, checkpoint.size, entry.proof, checkpoint.root
        )
    if revocations:
        entry, revocation = revocations[0]
        raise ReleaseError(
            "release.revoked",
            "the owner revoked this release",
            observed=f"revoked at {revocation.revoked_at.isoformat()} (log index {entry.index})",
            expected="no revocation",
            detail=revocation.reason,
        )
    current = [(e, r) for e, r in releases if r.not_before <= now < r.not_after]
    if not current:
        entry, release = max(releases, key=lambda pair: pair[1].not_after)
        early = release.not_before > now
        raise ReleaseError(
            "release.not_yet_valid" if early else "release.expired",
            "the release statement's validity window",
            observed=now.isoformat(),
            expected=f"{release.not_before.isoformat()} to {release.not_after.isoformat()}",
            hint="the owner must sign a new release statement (redeploy)",
        )
    entry, release = max(current, key=lambda pair: pair[0].index)
    return VerifiedRelease(owner, release, entry.index, checkpoint, evidence.checkpoint)
