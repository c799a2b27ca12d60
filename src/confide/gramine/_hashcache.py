"""A cache of file SHA-256 digests, keyed by what ``stat`` says about each file.

Format, version 1: one JSON file per runtime environment, written atomically
(a temporary file renamed over the old one), mode 0600::

    {"format": "confide-hash-cache", "version": 1,
     "files": {"<absolute path>": [size, mtime_ns, ctime_ns, inode, device, "<hex sha256>"]}}

A digest is taken from the cache only when all five stat fields of the file are
what they were when it was hashed. Writing a file changes its ctime, which no
system call can set back, and replacing it changes its inode: a changed file
always misses. A file whose mtime or ctime is less than :data:`RACY_WINDOW_NS`
before the hashing started is hashed but not cached ("racily clean", as git
says: a second write in the same timestamp tick would keep the same stat). A
file whose stat changes while it is hashed is not cached either. A cache file
that cannot be read or parsed is ignored and rewritten: it can only make a
start-up slower, never make a changed file look unchanged (ADR 0017).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Final

_FORMAT: Final = "confide-hash-cache"
_VERSION: Final = 1
#: Files changed this recently before hashing started are not cached (2 s, in ns).
RACY_WINDOW_NS: Final = 2_000_000_000
#: Largest cache file read (an environment has some thousands of files).
MAX_CACHE_FILE: Final = 64 * 1024 * 1024

_Key = tuple[int, int, int, int, int]


def _key(st: os.stat_result) -> _Key:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _file_sha256(path: str) -> bytes:
    """SHA-256 of a file's content (the only place that reads a measured file)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _load(path: Path) -> dict[str, tuple[_Key, bytes]]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CACHE_FILE + 1)
        if len(raw) > MAX_CACHE_FILE:
            return {}
        obj = json.loads(raw)
        if obj.get("format") != _FORMAT or obj.get("version") != _VERSION:
            return {}
        entries: dict[str, tuple[_Key, bytes]] = {}
        for name, row in obj["files"].items():
            size, mtime, ctime, ino, dev, digest = row
            if not all(type(v) is int for v in (size, mtime, ctime, ino, dev)):
                return {}
            sha = bytes.fromhex(digest)
            if len(sha) != 32:
                return {}
            entries[name] = ((size, mtime, ctime, ino, dev), sha)
        return entries
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        # Missing or corrupted: start empty and rewrite it; never trust part of it.
        return {}


class HashCache:
    """SHA-256 of files, from the cache file at ``path`` when their stat is unchanged.

    ``path`` ``None`` keeps nothing between runs. ``now_ns`` is when hashing starts
    (``time.time_ns()`` at the entry point). Call :meth:`save` once at the end: it
    writes only the entries used in this run, so files that left the environment
    leave the cache.
    """

    __slots__ = ("_changed", "_entries", "_now_ns", "_path", "_used", "hashed")

    def __init__(self, path: Path | None, *, now_ns: int) -> None:
        self._path = path
        self._now_ns = now_ns
        self._entries = _load(path) if path is not None else {}
        self._used: dict[str, tuple[_Key, bytes]] = {}
        self._changed = False
        #: How many files this cache had to read and hash (the rest came from the cache).
        self.hashed = 0

    def sha256(self, path: str) -> bytes:
        """SHA-256 of the content of the file at the absolute path ``path``."""
        name = path
        before = _key(os.stat(path))
        cached = self._entries.get(name)
        if cached is not None and cached[0] == before:
            self._used[name] = cached
            return cached[1]
        digest = _file_sha256(path)
        self.hashed += 1
        after = _key(os.stat(path))
        racy = max(after[1], after[2]) >= self._now_ns - RACY_WINDOW_NS
        if after == before and not racy:
            self._used[name] = (after, digest)
            self._changed = True
        return digest

    def save(self) -> None:
        """Write the entries used in this run (best effort: a cache that cannot be written
        only makes the next start-up slower)."""
        if self._path is None or (not self._changed and len(self._used) == len(self._entries)):
            return
        data = json.dumps(
            {
                "format": _FORMAT,
                "version": _VERSION,
                "files": {k: [*key, sha.hex()] for k, (key, sha) in sorted(self._used.items())},
            },
            separators=(",", ":"),
        ).encode()
        with contextlib.suppress(OSError):
            self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".hashes-", dir=self._path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self._path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
