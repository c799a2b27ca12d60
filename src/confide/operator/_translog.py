"""The operator's release transparency log: append-only, in its database (ADR 0019).

Every release or revocation statement an owner logs (a DSSE envelope signed by
an owner key, :mod:`confide.release`) becomes one leaf of an RFC 9162 Merkle
tree. :meth:`TransparencyLog.append` checks the statement (its signature by the
owner key given with it, its form, and that a release is about one of the
caller's apps, a revocation about a fingerprint that key released), then, in
one transaction, inserts the leaf at the next index and the checkpoint of the
grown tree, signed by the log key. A concurrent append loses on the primary
key and is retried: indexes never skip or repeat.

The log key is an Ed25519 key in the data folder (``log-key``, mode 0600,
created on first use), named after the log's origin
``<base-domain>/confide-log``. File format, one line::

    confide-log-key-v1 <origin> <base64 of the 32-byte seed>

Reads answer from the stored leaf hashes (the tree is recomputed per call;
fine up to :data:`MAX_LOG_SIZE` leaves). Bounds: a statement is at most
:data:`~confide.release.MAX_ENVELOPE_SIZE` bytes, an account logs at most
:data:`MAX_STATEMENTS_PER_ACCOUNT`, a page of entries is at most
:data:`MAX_PAGE` long.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from confide.errors import AttestationError, UsageError
from confide.release import (
    MAX_ENTRIES,
    MAX_ENVELOPE_SIZE,
    Checkpoint,
    Envelope,
    LogKey,
    OwnerPublicKey,
    Release,
    Revocation,
    b64decode_strict,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    open_statement,
    root,
)

from ._db import AuthenticatedToken, Database
from ._models import App, LogCheckpoint, LogEntry
from ._seams import Clock

LOG_KEY_FILE: Final = "log-key"
#: Most leaves the log holds (each read recomputes the tree from the leaf hashes).
MAX_LOG_SIZE: Final = 1_000_000
#: Most statements one account may log.
MAX_STATEMENTS_PER_ACCOUNT: Final = 10_000
#: Most entries in one page of ``GET /log/entries``.
MAX_PAGE: Final = 256
_KEY_PREFIX: Final = "confide-log-key-v1"
_APPEND_ATTEMPTS: Final = 8


class LogRefused(UsageError):
    """A statement the log does not take: ``loc`` names the field, as the API's 422 does."""

    code = "log_refused"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def load_log_key(folder: Path, origin: str) -> LogKey:
    """The log key in ``folder/log-key``, created (0600) on first use."""
    path = folder / LOG_KEY_FILE
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        key = LogKey.generate(origin)
        line = f"{_KEY_PREFIX} {origin} {base64.b64encode(key.seed).decode()}\n".encode()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_log_key(folder, origin)  # another process created it first
        with os.fdopen(fd, "wb") as f:
            f.write(line)
        return key
    with os.fdopen(fd, "rb") as f:
        if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
            raise UsageError(f"the log key {path} is readable by others; run `chmod 600 {path}`")
        parts = f.read(1024).decode("ascii", "replace").split()
    if len(parts) != 3 or parts[0] != _KEY_PREFIX:
        raise UsageError(f"the log key {path} is malformed")
    if parts[1] != origin:
        raise UsageError(
            f"the log key {path} is for the log {parts[1]}, not {origin}",
            hint="the base domain changed: a log keeps its origin; restore the old base domain",
        )
    return LogKey(origin, b64decode_strict(parts[2], f"the log key {path}"))


@dataclass(frozen=True, slots=True)
class Appended:
    """A logged statement: its index, the checkpoint that includes it, the inclusion proof."""

    index: int
    checkpoint: bytes
    proof: list[bytes]


@dataclass(frozen=True, slots=True)
class FingerprintEvidence:
    """What the log shows about one fingerprint, at its latest checkpoint."""

    checkpoint: bytes
    #: (index, envelope, inclusion proof) of each statement shown.
    entries: list[tuple[int, bytes, list[bytes]]]
    consistency: list[bytes]


class TransparencyLog:
    """The log in ``database``, signed with ``key``."""

    def __init__(self, database: Database, key: LogKey, clock: Clock) -> None:
        self._database = database
        self._key = key
        self._clock = clock

    @property
    def origin(self) -> str:
        return self._key.name

    @property
    def verifier_text(self) -> str:
        return self._key.verifier.to_text()

    # -- writes ------------------------------------------------------------------------------

    def append(self, auth: AuthenticatedToken, envelope_json: bytes, owner_key: str) -> Appended:
        """Check a statement and append it (see the module's description)."""
        if len(envelope_json) > MAX_ENVELOPE_SIZE:
            raise LogRefused("envelope", f"a statement is at most {MAX_ENVELOPE_SIZE} bytes")
        try:
            owner = OwnerPublicKey.from_text(owner_key)
        except UsageError as exc:
            raise LogRefused("owner_key", str(exc)) from None
        try:
            envelope = Envelope.from_json(envelope_json)
            statement = open_statement(envelope, owner)
        except AttestationError as exc:
            raise LogRefused("envelope", f"{exc.code}: {exc}") from None
        # One signature, naming its key, in canonical form: every entry checks out for a monitor.
        if [sig.keyid for sig in envelope.signatures] != [owner.to_text()]:
            raise LogRefused("envelope", "the envelope has one signature, whose keyid is its key")
        if envelope.to_json() != envelope_json:
            raise LogRefused("envelope", "the envelope is not in canonical form")
        kind = "release" if isinstance(statement, Release) else "revocation"
        fingerprint = statement.fingerprint.hex()
        with self._database.session() as s:
            self._check_allowed(s, auth, statement, owner)
        for _ in range(_APPEND_ATTEMPTS):
            try:
                return self._append_once(auth, envelope_json, kind, fingerprint, owner.key_id)
            except IntegrityError:
                continue  # another append took this index: read the new size and retry
        raise LogRefused("envelope", "the log is busy; try again")

    def _check_allowed(
        self,
        s: Session,
        auth: AuthenticatedToken,
        statement: Release | Revocation,
        owner: OwnerPublicKey,
    ) -> None:
        count = s.scalar(
            select(func.count()).select_from(LogEntry).where(LogEntry.account_id == auth.account_id)
        )
        if (count or 0) >= MAX_STATEMENTS_PER_ACCOUNT:
            raise LogRefused(
                "envelope", f"this account logged {MAX_STATEMENTS_PER_ACCOUNT} statements already"
            )
        if isinstance(statement, Release):
            app = s.get(App, statement.manifest.app_id)
            if app is None or app.account_id != auth.account_id:
                raise LogRefused("envelope", "the release is not about one of your apps")
            return
        fingerprint = statement.fingerprint.hex()
        released = s.scalar(
            select(func.count())
            .select_from(LogEntry)
            .where(
                LogEntry.fingerprint == fingerprint,
                LogEntry.kind == "release",
                LogEntry.owner_key_id == owner.key_id,
            )
        )
        if not released:
            raise LogRefused("envelope", "this owner key logged no release of that fingerprint")

    def _append_once(
        self, auth: AuthenticatedToken, leaf: bytes, kind: str, fingerprint: str, key_id: str
    ) -> Appended:
        now: datetime = self._clock()
        with self._database.session() as s:
            hashes = self._hashes(s)
            if len(hashes) >= MAX_LOG_SIZE:
                raise LogRefused("envelope", f"the log is full ({MAX_LOG_SIZE} entries)")
            index = len(hashes)
            hashes.append(leaf_hash(leaf))
            s.add(
                LogEntry(
                    index=index,
                    leaf=leaf,
                    leaf_hash=hashes[-1],
                    kind=kind,
                    fingerprint=fingerprint,
                    owner_key_id=key_id,
                    account_id=auth.account_id,
                    created_at=now,
                )
            )
            checkpoint = Checkpoint(self.origin, len(hashes), root(hashes))
            note = checkpoint.sign(self._key)
            s.add(
                LogCheckpoint(
                    size=checkpoint.size, root=checkpoint.root, note=note.decode(), created_at=now
                )
            )
            s.commit()
        return Appended(index, note, inclusion_proof(hashes, index))

    # -- reads -------------------------------------------------------------------------------

    @staticmethod
    def _hashes(s: Session, size: int | None = None) -> list[bytes]:
        query = select(LogEntry.leaf_hash).order_by(LogEntry.index)
        if size is not None:
            query = query.where(LogEntry.index < size)
        return list(s.scalars(query))

    def _latest(self, s: Session) -> tuple[bytes, int]:
        row = s.scalars(select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1)).first()
        if row is None:
            return Checkpoint(self.origin, 0, root([])).sign(self._key), 0
        return row.note.encode(), row.size

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint (the empty tree's before the first append)."""
        with self._database.session() as s:
            return self._latest(s)[0]

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """The leaves ``start <= index < end`` (at most :data:`MAX_PAGE`)."""
        if not 0 <= start <= end or end - start > MAX_PAGE:
            raise LogRefused("end", f"ask for 0 to {MAX_PAGE} entries from a start >= 0")
        with self._database.session() as s:
            rows = s.execute(
                select(LogEntry.index, LogEntry.leaf)
                .where(LogEntry.index >= start, LogEntry.index < end)
                .order_by(LogEntry.index)
            ).all()
        return [(int(i), bytes(leaf)) for i, leaf in rows]

    def consistency(self, first: int, second: int) -> list[bytes]:
        """The consistency proof from size ``first`` to size ``second``."""
        with self._database.session() as s:
            size = self._latest(s)[1]
            if not 0 <= first <= second <= size:
                raise LogRefused("second", f"sizes must satisfy 0 <= first <= second <= {size}")
            return consistency_proof(self._hashes(s, second), first)

    def about(self, fingerprint: bytes, since: int) -> FingerprintEvidence:
        """The statements about ``fingerprint`` (the newest revocations and releases, half of
        :data:`MAX_ENTRIES` each, so that no number of releases pushes a revocation out),
        each with its inclusion proof, and the consistency proof from size ``since``, at the
        latest checkpoint."""
        with self._database.session() as s:
            note, size = self._latest(s)
            if not 0 <= since <= size:
                raise LogRefused("since", f"since must be between 0 and the log's size {size}")
            hashes = self._hashes(s, size)
            rows = [
                row
                for kind in ("revocation", "release")
                for row in s.execute(
                    select(LogEntry.index, LogEntry.leaf)
                    .where(
                        LogEntry.fingerprint == fingerprint.hex(),
                        LogEntry.kind == kind,
                        LogEntry.index < size,
                    )
                    .order_by(LogEntry.index.desc())
                    .limit(MAX_ENTRIES // 2)
                ).all()
            ]
        entries = [(int(i), bytes(leaf), inclusion_proof(hashes, int(i))) for i, leaf in rows]
        return FingerprintEvidence(note, entries, consistency_proof(hashes, since))


def encode_hashes(hashes: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]
