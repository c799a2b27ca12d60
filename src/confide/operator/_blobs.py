"""Content-addressed storage of encrypted packages.

A blob is stored under its SHA-256: ``<root>/ab/cdef...`` (the first two hex
digits name a folder). It is streamed into a temporary file in
``<root>/tmp`` while being hashed and counted, refused as soon as it grows
past the limit, flushed to disk, then moved into place with one atomic rename;
a blob already there is kept (uploads are deduplicated). Blobs are never
modified. The operator stores exactly the bytes it was sent: the owner's CLI
encrypted the package, the operator never sees its plaintext.

Blobs are read back without authentication only by the Kubernetes backend's pods
(``GET /api/v1/blobs/<sha256>``, ADR 0007): an encrypted package, or a wheel of a live
app's requirements lock from the operator's wheel cache (ADR 0030, :class:`LiveWheels`).
That read is bounded here
(:class:`BlobGate`, a pure core: time is a parameter): per source, a token
bucket of requests and a count of downloads at once; overall, a count of
downloads at once. What is over a bound is shed at once (429 per source, 503
overall, each with ``Retry-After``), before any database or disk work.

Example::

    >>> import io
    >>> store = BlobStore(Path("/var/lib/confide/blobs"))  # doctest: +SKIP
    >>> blob = store.put(io.BytesIO(b"CONFIDEP..."), limit=1024)  # doctest: +SKIP
    >>> store.path(blob.sha256).read_bytes()  # doctest: +SKIP
    b'CONFIDEP...'
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from confide.errors import UsageError
from confide.wire import AppStatus, LaunchManifest

from ._models import App
from ._wheels import MAX_WHEEL_SIZE, WheelCache

#: Bytes read and written at a time.
BLOCK_SIZE: Final = 1024 * 1024


class PackageTooLarge(UsageError):
    """An upload is larger than the operator accepts."""

    code = "operator.package_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the package is larger than the operator's limit of {limit} bytes",
            hint="make the package smaller (see .confideignore) or ask the operator",
        )
        self.limit = limit


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob in the store."""

    sha256: bytes
    size: int
    #: False when the same content was already stored (deduplicated).
    created: bool

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()


class BlobStore:
    """Blobs named by their SHA-256 under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: bytes) -> Path:
        """Where the blob with this digest is (or would be)."""
        if len(sha256) != 32:
            raise UsageError("a blob digest is 32 bytes")
        name = sha256.hex()
        return self.root / name[:2] / name[2:]

    def exists(self, sha256: bytes) -> bool:
        return self.path(sha256).is_file()

    def put(self, src: BinaryIO, *, limit: int) -> StoredBlob:
        """Store everything ``src`` holds; :class:`PackageTooLarge` past ``limit`` bytes.

        Nothing is left behind when it fails: the temporary file is removed.
        """
        tmp_dir = self.root / "tmp"
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix="upload-", dir=tmp_dir)
        except OSError as exc:
            raise UsageError(f"cannot write in {tmp_dir}: {exc.strerror or exc}") from exc
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while block := src.read(BLOCK_SIZE):
                    size += len(block)
                    if size > limit:
                        raise PackageTooLarge(limit)
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.digest()
            final = self.path(sha256)
            final.parent.mkdir(exist_ok=True)
            if final.is_file():
                tmp.unlink()
                return StoredBlob(sha256=sha256, size=size, created=False)
            os.chmod(tmp, 0o440)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            return StoredBlob(sha256=sha256, size=size, created=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


# -- the unauthenticated read's bounds -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobLimits:
    """Bounds of ``GET /api/v1/blobs/<sha256>`` (no token: anyone who reaches the API).

    A pod fetches its package once per launch, and the supervisor launches a few at a
    time (``SupervisorOptions.max_starting``): the defaults leave room for a node's
    launches behind one address, not for a scraper.
    """

    #: Requests per second from one source (an IP address), in a bucket of ``burst``.
    per_source_rate: float = 2.0
    per_source_burst: int = 16
    #: Downloads under way at once from one source, and in all.
    per_source_concurrent: int = 4
    concurrent: int = 32
    #: Sources whose bucket is remembered (the least recently seen is forgotten first).
    max_sources: int = 4096
    #: Longest one download may take (seconds); a slower reader is cut.
    send_deadline: float = 300.0
    #: Bytes read from the file and handed to the server at a time.
    chunk: int = 64 * 1024

    def __post_init__(self) -> None:
        if not (self.per_source_rate > 0 and self.send_deadline > 0):
            raise UsageError("blob limits: rate and deadline must be positive")
        if min(self.per_source_burst, self.per_source_concurrent, self.concurrent) < 1:
            raise UsageError("blob limits: burst and concurrency must be at least 1")
        if self.max_sources < 1 or self.chunk < 1:
            raise UsageError("blob limits: max_sources and chunk must be at least 1")


class BlobShed(UsageError):
    """A blob request over a bound: answered ``status`` with ``Retry-After``, not served."""

    code = "operator.blob_shed"

    def __init__(self, message: str, *, status: int, retry_after: int) -> None:
        super().__init__(message)
        self.http_status = status
        self.retry_after = retry_after


class BlobGate:
    """Admits blob downloads within :class:`BlobLimits`; thread-safe.

    :meth:`admit` takes one token of the source's bucket and one download slot,
    or raises :class:`BlobShed`; every admitted download is matched by one
    :meth:`release`. Memory is bounded: at most ``max_sources`` buckets and
    ``concurrent`` counters.
    """

    def __init__(self, limits: BlobLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        #: source -> (tokens, when they were counted), least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._active: dict[str, int] = {}
        self._total = 0

    def admit(self, source: str, now: float) -> None:
        limits = self.limits
        with self._lock:
            if self._total >= limits.concurrent:
                raise BlobShed(
                    f"{limits.concurrent} package downloads are under way; try again later",
                    status=503,
                    retry_after=1,
                )
            if self._active.get(source, 0) >= limits.per_source_concurrent:
                raise BlobShed(
                    f"{limits.per_source_concurrent} downloads from {source} are under way",
                    status=429,
                    retry_after=1,
                )
            tokens, then = self._buckets.pop(source, (float(limits.per_source_burst), now))
            tokens = min(
                float(limits.per_source_burst),
                tokens + max(0.0, now - then) * limits.per_source_rate,
            )
            if tokens < 1.0:
                self._remember(source, tokens, now)
                wait = math.ceil((1.0 - tokens) / limits.per_source_rate)
                raise BlobShed(
                    f"more than {limits.per_source_rate:g} package requests per second "
                    f"from {source}",
                    status=429,
                    retry_after=max(1, wait),
                )
            self._remember(source, tokens - 1.0, now)
            self._active[source] = self._active.get(source, 0) + 1
            self._total += 1

    def release(self, source: str) -> None:
        with self._lock:
            left = self._active.get(source, 0) - 1
            if left < 0:
                return  # never admitted: nothing to give back
            if left:
                self._active[source] = left
            else:
                del self._active[source]
            self._total -= 1

    def _remember(self, source: str, tokens: float, now: float) -> None:
        self._buckets[source] = (tokens, now)  # last: the most recently seen
        while len(self._buckets) > self.limits.max_sources:
            self._buckets.popitem(last=False)

    def under_way(self) -> int:
        """Downloads admitted and not yet released."""
        with self._lock:
            return self._total


def live_package(session: Session, sha256_hex: str) -> bool:
    """Whether an app of this operator that may launch now has this package.

    Live is spawning, initializing or running, and no deletion asked: a pod is
    only launched then. A deleted, stopped, expired or failed app's package is
    not served (404, as one never stored).
    """
    found = session.scalar(
        select(App.id)
        .where(
            App.package_sha256 == sha256_hex,
            App.status.in_([s.value for s in AppStatus if s.active]),
            App.delete_requested.is_(False),
        )
        .limit(1)
    )
    return found is not None


def _live(session: Session) -> list[str]:
    """The launch manifests of the apps that may launch now and lock requirements."""
    return list(
        session.scalars(
            select(App.launch_manifest).where(
                App.status.in_([s.value for s in AppStatus if s.active]),
                App.delete_requested.is_(False),
                # Only narrows the rows read: each one is parsed and checked below.
                App.launch_manifest.contains('"requirements_sha256"'),
            )
        )
    )


#: Most locks whose wheel digests :class:`LiveWheels` remembers (a lock is immutable: it is
#: named by its own SHA-256, so what was read once stays true).
MAX_REMEMBERED_LOCKS: Final = 1024
#: Most launch manifests whose measured lock :class:`LiveWheels` remembers (each is at most
#: a few KiB: a few MiB in all).
MAX_REMEMBERED_MANIFESTS: Final = 4096


class LiveWheels:
    """Which wheels ``GET /api/v1/blobs/<sha256>`` may serve: those named by the measured
    requirements lock of an app that may launch now (ADR 0030).

    Live is what it is for packages (:func:`live_package`). The lock of each live app is
    read from the wheel cache by the digest its launch manifest measures (a stored lock
    that is not that lock is skipped), and the wheel must be in the cache and at most
    :data:`~._wheels.MAX_WHEEL_SIZE` bytes; anything else is ``None`` (404, as a digest
    never stored). The cache is not trusted: the runtime checks each wheel it gets against
    the measured lock. Thread-safe; memory bounded by :data:`MAX_REMEMBERED_LOCKS`.
    """

    def __init__(self, cache: WheelCache) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._wheels: OrderedDict[bytes, frozenset[bytes]] = OrderedDict()
        #: Launch manifest text -> the lock it measures (None: none), most recent last.
        self._measured: OrderedDict[str, bytes | None] = OrderedDict()
        #: The live locks last seen, all read, and the union of their wheels: an unchanged
        #: set of live locks costs a set lookup, however many they are (review: past
        #: MAX_REMEMBERED_LOCKS, every request read and parsed every lock from disk).
        self._union: tuple[frozenset[bytes], frozenset[bytes]] | None = None

    def _wheels_of(self, lock_sha256: bytes) -> frozenset[bytes] | None:
        with self._lock:
            known = self._wheels.get(lock_sha256)
            if known is not None:
                self._wheels.move_to_end(lock_sha256)
                return known
        try:
            lock = self.cache.read_lock(lock_sha256)
        except UsageError:
            return None  # not stored (yet), or not that lock: nothing of it is served
        found = frozenset(r.sha256 for r in lock.requirements)
        with self._lock:
            self._wheels[lock_sha256] = found
            while len(self._wheels) > MAX_REMEMBERED_LOCKS:
                self._wheels.popitem(last=False)
        return found

    def _lock_of(self, text: str) -> bytes | None:
        with self._lock:
            if text in self._measured:
                self._measured.move_to_end(text)
                return self._measured[text]
        try:
            locked = LaunchManifest.from_json(text).requirements_sha256
        except UsageError:
            locked = None
        with self._lock:
            self._measured[text] = locked
            while len(self._measured) > MAX_REMEMBERED_MANIFESTS:
                self._measured.popitem(last=False)
        return locked

    def _servable(self, locks: frozenset[bytes]) -> frozenset[bytes]:
        with self._lock:
            if self._union is not None and self._union[0] == locks:
                return self._union[1]
        union: set[bytes] = set()
        complete = True
        for lock in sorted(locks):
            wheels = self._wheels_of(lock)
            if wheels is None:
                complete = False  # not stored yet: it may be later, so nothing is remembered
            else:
                union |= wheels
        found = frozenset(union)
        if complete:
            with self._lock:
                self._union = (locks, found)
        return found

    def path(self, session: Session, sha256: bytes) -> Path | None:
        """Where the wheel with this digest is, if a live app's lock names it; else ``None``."""
        locks = frozenset(
            locked for text in _live(session) if (locked := self._lock_of(text)) is not None
        )
        if sha256 not in self._servable(locks):
            return None
        path = self.cache.wheel_path(sha256)
        try:
            info = path.lstat()
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_WHEEL_SIZE:
            return None
        return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
