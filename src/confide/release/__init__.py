"""Verifiable releases: owner keys, signed release statements, the operator's transparency log.

An app owner signs, at each deploy, an in-toto Statement in a DSSE envelope
(:class:`Release`, :class:`Revocation`; formats in :mod:`._statement` and
:mod:`._dsse`) with an Ed25519 :class:`OwnerKey`. The operator appends every
statement to an append-only Merkle log (RFC 9162 hashing, :mod:`._merkle`)
and signs its tree heads as C2SP checkpoints (:class:`Checkpoint`,
:class:`LogKey`, :mod:`._note`). An app user who knows only the owner's
public key checks a release with :func:`verify_release` (pure: the evidence
is fetched by the caller, time is a parameter). ADR 0019 says what this
proves and what it does not.

This package imports nothing of Confide's but :mod:`confide.errors`,
:mod:`confide.strictjson` and :mod:`confide.wire`.

Example::

    >>> from datetime import UTC, datetime
    >>> log = LogKey.generate("operator.example/log")
    >>> note = Checkpoint("operator.example/log", 0, root([])).sign(log)
    >>> Checkpoint.open(note, log.verifier).size
    0
"""

from ._audit import AuditReport, audit_log
from ._dsse import INTOTO_PAYLOAD_TYPE, MAX_ENVELOPE_SIZE, MAX_SIGNATURES, Envelope, pae
from ._keys import (
    ED25519_KEY_SIZE,
    MAX_PUBLIC_KEY_TEXT,
    OwnerKey,
    OwnerPublicKey,
    b64decode_strict,
)
from ._merkle import (
    HASH_SIZE,
    MAX_PROOF_LENGTH,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from ._note import (
    MAX_NOTE_SIGNATURES,
    MAX_NOTE_SIZE,
    MAX_TREE_SIZE,
    Checkpoint,
    LogKey,
    LogVerifier,
)
from ._statement import (
    MAX_LABEL,
    MAX_VALIDITY,
    RELEASE_PREDICATE,
    REVOCATION_PREDICATE,
    STATEMENT_TYPE,
    Release,
    Revocation,
    open_statement,
    parse_statement,
)
from ._verify import (
    MAX_ENTRIES,
    LoggedEntry,
    ReleaseEvidence,
    VerifiedRelease,
    verify_checkpoint,
    verify_release,
)

__all__ = [
    "ED25519_KEY_SIZE",
    "HASH_SIZE",
    "INTOTO_PAYLOAD_TYPE",
    "MAX_ENTRIES",
    "MAX_ENVELOPE_SIZE",
    "MAX_LABEL",
    "MAX_NOTE_SIGNATURES",
    "MAX_NOTE_SIZE",
    "MAX_PROOF_LENGTH",
    "MAX_PUBLIC_KEY_TEXT",
    "MAX_SIGNATURES",
    "MAX_TREE_SIZE",
    "MAX_VALIDITY",
    "RELEASE_PREDICATE",
    "REVOCATION_PREDICATE",
    "STATEMENT_TYPE",
    "Checkpoint",
    "Envelope",
    "LogKey",
    "LogVerifier",
    "LoggedEntry",
    "OwnerKey",
    "OwnerPublicKey",
    "Release",
    "ReleaseEvidence",
    "Revocation",
    "AuditReport",
    "VerifiedRelease",
    "audit_log",
    "b64decode_strict",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "open_statement",
    "pae",
    "parse_statement",
    "root",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_release",
]
