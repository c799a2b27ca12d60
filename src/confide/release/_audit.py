"""Replaying a whole log: what ``confide log audit`` checks, pure (the leaves already fetched).

:func:`audit_log` takes the log's latest checkpoint, every leaf from index 0
to its size, and the checkpoint this auditor saw last, and checks:

- the checkpoint is signed by the log key (``log.format``, ``log.key``,
  ``log.signature``, ``log.origin``);
- the leaves, hashed per RFC 9162, give exactly the checkpoint's root
  (``log.replay``): the operator shows the tree it signed;
- the tree of the first ``seen.size`` leaves has the root seen before
  (``log.consistency``): nothing seen was rewritten, and the log did not shrink;
- every leaf is a DSSE envelope holding a Confide release or revocation
  statement, signed by the key its signature names (``log.entry``), and every
  revocation follows a release of the same fingerprint by the same key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confide.errors import AttestationError, LogError

from ._dsse import INTOTO_PAYLOAD_TYPE, Envelope
from ._merkle import leaf_hash, root
from ._note import Checkpoint, LogVerifier
from ._statement import Release, parse_statement


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What an audit proved: the checkpoint, what the log holds, what it was checked against."""

    checkpoint: Checkpoint
    releases: int
    revocations: int
    #: Key ids of the owners that signed entries.
    owners: frozenset[str]
    #: The size of the checkpoint seen before that this one extends (``None``: first audit).
    extends: int | None


def audit_log(
    note: bytes, leaves: Sequence[bytes], log: LogVerifier, seen: Checkpoint | None
) -> AuditReport:
    """Check the whole log (see the module's description); raise :class:`LogError` if not."""
    checkpoint = Checkpoint.open(note, log)
    if len(leaves) != checkpoint.size:
        raise LogError(
            "log.replay",
            "the number of entries the log shows",
            observed=len(leaves),
            expected=checkpoint.size,
        )
    hashes = [leaf_hash(leaf) for leaf in leaves]
    replayed = root(hashes)
    if replayed != checkpoint.root:
        raise LogError(
            "log.replay",
            "the root of the entries the log shows is not the checkpoint's",
            observed=replayed,
            expected=checkpoint.root,
            hint="the operator shows another tree than the one it signed",
        )
    if seen is not None:
        checkpoint.check_origin(seen)
        if seen.size > checkpoint.size or root(hashes[: seen.size]) != seen.root:
            raise LogError(
                "log.consistency",
                "the log is not an extension of the one seen before",
                observed=f"size {checkpoint.size}, first {seen.size} entries' root "
                f"{root(hashes[: seen.size]).hex()}",
                expected=f"an extension of size {seen.size}, root {seen.root.hex()}",
                hint="the operator rewrote or forked its log: report it",
            )
    releases: set[tuple[str, bytes]] = set()
    revocations, owners = 0, set()
    for index, leaf in enumerate(leaves):
        try:
            envelope = Envelope.from_json(leaf)
            signers = envelope.signers()
            if len(signers) != 1:
                raise LogError("log.entry", "an entry names exactly one signer key")
            statement = parse_statement(envelope.verified_payload(signers[0], INTOTO_PAYLOAD_TYPE))
        except AttestationError as exc:
            raise LogError(
                "log.entry",
                f"log entry {index} is not a signed Confide statement",
                detail=str(exc),
            ) from None
        owner = signers[0].key_id
        owners.add(owner)
        if isinstance(statement, Release):
            releases.add((owner, statement.fingerprint))
        elif (owner, statement.fingerprint) not in releases:
            raise LogError(
                "log.entry",
                f"log entry {index} revokes a release its key never logged",
                observed=statement.fingerprint,
            )
        else:
            revocations += 1
    return AuditReport(
        checkpoint,
        len(leaves) - revocations,
        revocations,
        frozenset(owners),
        seen.size if seen is not None else None,
    )
