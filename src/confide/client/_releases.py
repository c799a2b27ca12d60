"""The owner's signing key and the user's last-seen log checkpoints, on disk (ADR 0019).

- The owner key: ``$XDG_CONFIG_HOME/confide/owner.key`` (``~/.config/confide``
  by default), in :class:`confide.release.OwnerKey`'s file format; folder mode
  0700, file 0600, created exclusively (an existing key is never
  overwritten). Reading refuses a link, a file of another user, or one that
  others can read.
- The last checkpoint seen from each operator's log:
  ``$XDG_STATE_HOME/confide/logs/<sha256 of the operator's URL, hex>.json``
  (``~/.local/state/confide`` by default), version 1::

      {"version": 1, "operator": URL, "log_key": "<name>+<hash>+<key>",
       "checkpoint": "<signed note>"}

  Kept per operator URL (what the user addressed), not per log origin, so an
  operator cannot start a fresh history by naming a new log. The first
  verification against an operator trusts its log key and checkpoint (trust
  on first use, unless the key is given); every later one must show the same
  key and a log consistent with the stored checkpoint before the new one
  replaces it (written atomically).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Final

import httpx

from confide import strictjson
from confide.errors import Error, LogError, UsageError
from confide.release import (
    MAX_ENTRIES,
    MAX_PROOF_LENGTH,
    MAX_TREE_SIZE,
    AuditReport,
    Checkpoint,
    LoggedEntry,
    LogVerifier,
    OwnerKey,
    OwnerPublicKey,
    ReleaseEvidence,
    VerifiedRelease,
    audit_log,
    b64decode_strict,
    leaf_hash,
    verify_checkpoint,
    verify_inclusion,
    verify_release,
)
from confide.runtime import write_atomically

from ._api import OperatorClient, normalize_url
from ._credentials import config_dir, read_private

OWNER_KEY_FILE: Final = "owner.key"
#: Largest state file read (a checkpoint note is at most 8 KiB).
MAX_STATE_FILE: Final = 32 * 1024
_STATE_VERSION: Final = 1
#: Entries asked for per page (the operator's limit).
MAX_PAGE: Final = 256


def owner_key_path(environ: Mapping[str, str]) -> Path:
    return config_dir(environ) / OWNER_KEY_FILE


def state_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/confide``, or ``~/.local/state/confide`` (a relative path is ignored)."""
    base = environ.get("XDG_STATE_HOME", "")
    if base and Path(base).is_absolute():
        return Path(base) / "confide"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state" / "confide"


def _write_private(path: Path, data: bytes, what: str, *, replace: bool) -> None:
    """Write ``data`` 0600 in a 0700 folder, atomically; never over a file unless ``replace``."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if replace:
            write_atomically(path, data)
            return
        tmp = folder / f".{path.name}.{secrets.token_hex(8)}.new"
        write_atomically(tmp, data)  # whole, 0600, then linked: never a half-written key
        try:
            os.link(tmp, path)  # fails if the file exists: never overwrite a key
        finally:
            tmp.unlink()
    except FileExistsError:
        raise UsageError(
            f"{what} {path} already exists; it is not overwritten",
            hint="move it away first if you really mean to replace it",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write {what} {path}: {exc.strerror or exc}") from None


class OwnerKeyStore:
    """The owner's signing key file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> OwnerKey | None:
        data = read_private(self.path, "the owner key", 1024)
        if data is None:
            return None
        try:
            return OwnerKey.from_file_bytes(data)
        except UsageError as exc:
            raise UsageError(f"the owner key {self.path} is malformed: {exc}") from None

    def create(self) -> OwnerKey:
        """A new key, written exclusively; :class:`UsageError` if one exists."""
        key = OwnerKey.generate()
        _write_private(self.path, key.to_file_bytes(), "the owner key", replace=False)
        return key

    def load_or_create(self) -> tuple[OwnerKey, bool]:
        """The key, and whether it was created now."""
        key = self.load()
        return (key, False) if key is not None else (self.create(), True)


@dataclass(frozen=True, slots=True)
class SeenLog:
    """An operator's log as this client last saw it: its key and its verified checkpoint."""

    log_key: LogVerifier
    checkpoint: Checkpoint
    note: bytes


class CheckpointStore:
    """The last checkpoint this client saw from each log, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, operator: str) -> Path:
        name = hashlib.sha256(normalize_url(operator).encode()).hexdigest()
        return self.folder / "logs" / f"{name}.json"

    def load(self, operator: str) -> SeenLog | None:
        path = self.path(operator)
        data = read_private(path, "the log state", MAX_STATE_FILE)
        if data is None:
            return None
        try:
            doc = strictjson.loads(data, what="it", max_bytes=MAX_STATE_FILE)
            if not isinstance(doc, dict) or doc.get("version") != _STATE_VERSION:
                raise UsageError("not a version 1 log state")
            if doc.get("operator") != normalize_url(operator):
                raise UsageError(f"it is about {doc.get('operator')!r}")
            key = LogVerifier.from_text(doc["log_key"])
            note = doc["checkpoint"].encode()
            return SeenLog(key, Checkpoint.open(note, key), note)
        except (Error, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(
                f"the log state {path} is malformed: {exc}",
                hint="it is written by Confide only; remove it to trust the log afresh",
            ) from None

    def save(self, operator: str, seen: SeenLog) -> None:
        doc = {
            "version": _STATE_VERSION,
            "operator": normalize_url(operator),
            "log_key": seen.log_key.to_text(),
            "checkpoint": seen.note.decode(),
        }
        data = json.dumps(doc, indent=2).encode() + b"\n"
        _write_private(self.path(operator), data, "the log state", replace=True)


# -- talking to the operator's log -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogInfo:
    """``GET /log``: the operator's log origin, its key, its latest checkpoint (unverified)."""

    origin: str
    log_key: LogVerifier
    checkpoint: bytes


def _strict_b64(value: object, what: str) -> bytes:
    """Standard padded base64, canonical (as the operator writes it)."""
    if not isinstance(value, str):
        raise UsageError(f"{what} is not a string")
    return b64decode_strict(value, what)


def _hashes(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > MAX_PROOF_LENGTH:
        raise UsageError(f"a proof is a list of at most {MAX_PROOF_LENGTH} base64 hashes")
    return tuple(_strict_b64(item, "a proof hash") for item in value)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{what} is not a string")
    return value


def read_log_info(client: OperatorClient) -> LogInfo:
    doc = client.log_read("")
    try:
        return LogInfo(
            _text(doc.get("origin"), "origin"),
            LogVerifier.from_text(_text(doc.get("log_key"), "log_key")),
            _text(doc.get("checkpoint"), "checkpoint").encode(),
        )
    except (UsageError, UnicodeError) as exc:
        raise client.malformed("GET /log", str(exc)) from None


def read_evidence(client: OperatorClient, fingerprint: bytes, since: int) -> ReleaseEvidence:
    """What the operator's log shows about ``fingerprint`` (not trusted yet)."""
    what = f"GET /log/fingerprints/{fingerprint.hex()}"
    doc = client.log_read(f"/fingerprints/{fingerprint.hex()}", params={"since": str(since)})
    try:
        items = doc.get("entries")
        if not isinstance(items, list) or len(items) > MAX_ENTRIES:
            raise UsageError(f"entries is a list of at most {MAX_ENTRIES}")
        entries = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("index"), int):
                raise UsageError("an entry has an integer index")
            envelope = _strict_b64(item.get("envelope"), "an envelope")
            entries.append(LoggedEntry(item["index"], envelope, _hashes(item.get("proof"))))
        return ReleaseEvidence(
            _text(doc.get("checkpoint"), "checkpoint").encode(),
            tuple(entries),
            _hashes(doc.get("consistency")),
        )
    except UsageError as exc:
        raise client.malformed(what, str(exc)) from None


def _trusted_log(info: LogInfo, seen: SeenLog | None, pinned: LogVerifier | None) -> LogVerifier:
    """The log key to verify with: the one given, else the one seen before, else the operator's
    (trust on first use). A key other than the one given or seen is refused."""
    expected = pinned or (seen.log_key if seen is not None else None)
    if expected is not None and expected != info.log_key:
        raise LogError(
            "log.key",
            "the operator's log key",
            observed=info.log_key.to_text(),
            expected=expected.to_text(),
            hint="the operator changed its log key, or this is another operator's log",
        )
    return info.log_key


def check_release(
    client: OperatorClient,
    *,
    owner: OwnerPublicKey,
    fingerprint: bytes,
    store: CheckpointStore,
    now: datetime,
    log_key: LogVerifier | None = None,
) -> VerifiedRelease:
    """Fetch and verify that ``owner`` released ``fingerprint`` in the log of the operator
    ``client`` talks to (:func:`confide.release.verify_release`), consistent with the last
    checkpoint this client saw from it; then keep the new checkpoint."""
    seen = store.load(client.base_url)
    info = read_log_info(client)
    verifier = _trusted_log(info, seen, log_key)
    evidence = read_evidence(client, fingerprint, seen.checkpoint.size if seen else 0)
    verified = verify_release(
        evidence,
        owner=owner,
        fingerprint=fingerprint,
        log=verifier,
        last_seen=seen.checkpoint if seen is not None else None,
        now=now,
    )
    store.save(client.base_url, SeenLog(verifier, verified.checkpoint, verified.checkpoint_note))
    return verified


@dataclass(frozen=True, slots=True)
class LoggedStatement:
    """A statement the operator's log proved it holds."""

    index: int
    checkpoint: Checkpoint


def log_statement(
    client: OperatorClient,
    envelope: bytes,
    owner: OwnerPublicKey,
    *,
    store: CheckpointStore | None,
) -> LoggedStatement:
    """Append ``envelope`` to the operator's log and check it is there: the answer's checkpoint
    is signed by the log key (the one seen before, if any), consistent with the last one
    seen, and includes the statement. :class:`LogError` if not (the statement is not
    logged, whatever the operator says)."""
    seen = store.load(client.base_url) if store is not None else None
    info = read_log_info(client)
    verifier = _trusted_log(info, seen, None)
    answer = client.log_statement(envelope, owner.to_text())
    try:
        index = answer.get("index")
        if not isinstance(index, int):
            raise UsageError("index is not an integer")
        note = _text(answer.get("checkpoint"), "checkpoint").encode()
        proof = _hashes(answer.get("proof"))
    except UsageError as exc:
        raise client.malformed("POST /log/statements", str(exc)) from None
    consistency: tuple[bytes, ...] = ()
    if seen is not None:
        doc = client.log_read(
            "/consistency",
            params={"first": str(seen.checkpoint.size), "second": str(_size_of(note))},
        )
        try:
            consistency = _hashes(doc.get("proof"))
        except UsageError as exc:
            raise client.malformed("GET /log/consistency", str(exc)) from None
    checkpoint = verify_checkpoint(
        note, verifier, seen.checkpoint if seen is not None else None, consistency
    )
    verify_inclusion(leaf_hash(envelope), index, checkpoint.size, proof, checkpoint.root)
    if store is not None:
        store.save(client.base_url, SeenLog(verifier, checkpoint, note))
    return LoggedStatement(index, checkpoint)


def _size_of(note: bytes) -> int:
    """The tree size a checkpoint note states (read before it is verified, to ask for a proof)."""
    lines = note.split(b"\n", 2)
    if len(lines) < 3 or not lines[1].isdigit() or len(lines[1]) > 19:
        raise LogError("log.format", "the checkpoint's size line is malformed")
    return int(lines[1])


@dataclass(frozen=True)
class OperatorReleaseLog:
    """The release log of the operator at ``url``, as a :class:`~confide.client.ReleaseSource`
    of :class:`~confide.client.EnclaveVerifier` (a connection per check; its last
    checkpoint kept in ``store``; ``log_key``: pin the log key instead of trusting the
    first one seen).

    Without a ``transport``, each check connects with the system's CA bundle, loaded
    once per instance: building that TLS context is most of a check's cost.
    """

    url: str
    store: CheckpointStore
    timeout: float
    log_key: LogVerifier | None = None
    transport: httpx.BaseTransport | None = None

    @cached_property
    def _tls(self) -> ssl.SSLContext:
        return httpx.create_ssl_context()

    def __call__(self, owner: OwnerPublicKey, fingerprint: bytes, now: datetime) -> VerifiedRelease:
        transport = self.transport or httpx.HTTPTransport(verify=self._tls)
        with OperatorClient(self.url, None, timeout=self.timeout, transport=transport) as client:
            return check_release(
                client,
                owner=owner,
                fingerprint=fingerprint,
                store=self.store,
                now=now,
                log_key=self.log_key,
            )


def release_summary(release: VerifiedRelease) -> dict[str, object]:
    """What ``--json`` reports about a verified release."""
    return {
        "owner_key_id": release.owner.key_id,
        "owner_key": release.owner.to_text(),
        "fingerprint": release.fingerprint.hex(),
        "version": release.release.version,
        "source_ref": release.release.source_ref,
        "not_before": release.release.not_before.isoformat(),
        "not_after": release.release.not_after.isoformat(),
        "log_index": release.log_index,
        "checkpoint": {
            "origin": release.checkpoint.origin,
            "size": release.checkpoint.size,
            "root": release.checkpoint.root.hex(),
        },
    }


def audit_operator_log(
    client: OperatorClient, store: CheckpointStore, *, log_key: LogVerifier | None = None
) -> AuditReport:
    """Replay the whole log of the operator ``client`` talks to
    (:func:`confide.release.audit_log`), against the last checkpoint this client saw from
    it; then keep the new checkpoint."""
    seen = store.load(client.base_url)
    info = read_log_info(client)
    verifier = _trusted_log(info, seen, log_key)
    size = _size_of(info.checkpoint)
    if size > MAX_TREE_SIZE:
        raise LogError("log.format", "the checkpoint's size", observed=size)
    leaves: list[bytes] = []
    while len(leaves) < size:
        start = len(leaves)
        end = min(size, start + MAX_PAGE)
        doc = client.log_read("/entries", params={"start": str(start), "end": str(end)})
        items = doc.get("entries")
        if not isinstance(items, list) or not items or len(items) > end - start:
            raise client.malformed("GET /log/entries", f"expected entries {start} to {end - 1}")
        for offset, item in enumerate(items):
            if not isinstance(item, dict) or item.get("index") != start + offset:
                raise client.malformed("GET /log/entries", "entries out of order")
            try:
                leaves.append(_strict_b64(item.get("envelope"), "an envelope"))
            except UsageError as exc:
                raise client.malformed("GET /log/entries", str(exc)) from None
    report = audit_log(
        info.checkpoint, leaves, verifier, seen.checkpoint if seen is not None else None
    )
    store.save(client.base_url, SeenLog(verifier, report.checkpoint, info.checkpoint))
    return report
