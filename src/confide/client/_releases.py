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

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from confide.errors import Error, UsageError
from confide.release import Checkpoint, LogVerifier, OwnerKey

from ._api import normalize_url
from ._credentials import config_dir

__all__ = [
    "OWNER_KEY_FILE",
    "CheckpointStore",
    "OwnerKeyStore",
    "SeenLog",
    "owner_key_path",
    "state_dir",
]

OWNER_KEY_FILE: Final = "owner.key"
#: Largest state file read (a checkpoint note is at most 8 KiB).
MAX_STATE_FILE: Final = 32 * 1024
_STATE_VERSION: Final = 1


def owner_key_path(environ: Mapping[str, str]) -> Path:
    return config_dir(environ) / OWNER_KEY_FILE


def state_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/confide``, or ``~/.local/state/confide`` (a relative path is ignored)."""
    base = environ.get("XDG_STATE_HOME", "")
    if base and Path(base).is_absolute():
        return Path(base) / "confide"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state" / "confide"


def _read_private(path: Path, what: str, limit: int) -> bytes | None:
    """The bytes of a file only this user can read; ``None`` when there is none."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(
            f"cannot read {what} {path}: {exc.strerror or exc}",
            hint="it must be a regular file, not a link",
        ) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{what} {path} is not a regular file")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise UsageError(f"{what} {path} belongs to another user (uid {info.st_uid})")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise UsageError(
                f"{what} {path} is readable by others (mode {mode:04o})",
                hint=f"run `chmod 600 {path}`",
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit} bytes")
    return data


def _write_private(path: Path, data: bytes, what: str, *, replace: bool) -> None:
    """Write ``data`` 0600 in a 0700 folder, atomically; never over a file unless ``replace``."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # fails if the file exists: never overwrite a key
                tmp.unlink()
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
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
        data = _read_private(self.path, "the owner key", 1024)
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
        data = _read_private(path, "the log state", MAX_STATE_FILE)
        if data is None:
            return None
        try:
            doc = json.loads(data)
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
