"""The wheel cache: apps' requirement locks, and the wheels they name, by SHA-256 (ADR 0024).

Layout, under ``<data>/wheels``::

    locks/<sha256 of the lock>        a lock as the owner sent it (canonical bytes)
    <ab>/<cdef...>                    a wheel, named by its SHA-256 (first two hex digits
                                      name a folder), 0440
    tmp/                              downloads in progress

The operator is not trusted with what runs: it fetches a lock's wheels (``pip
download --require-hashes --no-deps`` for the lock's target, from PyPI, or from
the configured index or folder of wheels), hashes what it got, and stores each
file under its own SHA-256 with one atomic rename. The runtime reads a wheel by
the hash its measured lock names and refuses it unless the file's SHA-256 is
that hash: a wrong file in this cache (tampered with, truncated, another
version) stops the app, never runs. A wheel already cached is not fetched
again, so a second deploy with the same lock downloads nothing.

A version 2 lock's source distributions (``# sdist``) are cached the same way,
by their SHA-256, but not with pip: ``pip download`` of an sdist prepares its
metadata, which runs its build code on the operator's host. The operator reads
the index's PEP 503 page of the distribution (``<index>/<name>/``, PyPI's
``https://pypi.org/simple`` by default) and downloads the one file whose link
carries the locked ``#sha256=`` (or, with ``wheel_find_links``, hashes the
``.tar.gz`` files of that folder); each file is hashed again as it is stored.
The lock's build-only wheels are fetched with its other wheels.

Example::

    >>> cache = WheelCache(Path("/var/lib/confide/wheels"))  # doctest: +SKIP
    >>> cache.put_lock(lock)  # doctest: +SKIP
    >>> cache.fetch(lock)  # doctest: +SKIP
    >>> cache.wheel_path(lock.requirements[0].sha256).is_file()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from confide.errors import UsageError
from confide.simpleindex import DEFAULT_INDEX, project_files, read_url
from confide.wire import (
    MAX_LOCK_SIZE,
    SDIST,
    LockedRequirement,
    RequirementsLock,
    compatible_platforms,
)

#: Largest wheel cached (bytes); the runtime has its own, equal bound.
MAX_WHEEL_SIZE: Final = 1024 * 1024 * 1024
#: Seconds one fetch (all of a lock's missing wheels) may take.
FETCH_TIMEOUT: Final = 1800.0
_BLOCK: Final = 1024 * 1024
#: Most files of a find-links folder hashed.
MAX_FIND_LINKS_FILES: Final = 10_000


class WheelFetchError(UsageError):
    """The wheels of a lock could not be fetched (the app cannot be launched now)."""

    code = "operator.wheels"


class WheelCache:
    """Locks and wheels under one folder, named by their SHA-256."""

    def __init__(
        self,
        root: Path,
        *,
        index_url: str | None = None,
        find_links: str | None = None,
        pip: Sequence[str] | None = None,
    ) -> None:
        self.root = root
        self._index_url = index_url
        self._find_links = find_links
        self._pip = tuple(pip) if pip is not None else (sys.executable, "-m", "pip")

    # -- locks ---------------------------------------------------------------------------------

    def lock_path(self, sha256: bytes) -> Path:
        if len(sha256) != 32:
            raise UsageError("a lock digest is 32 bytes")
        return self.root / "locks" / sha256.hex()

    def put_lock(self, lock: RequirementsLock) -> Path:
        """Store ``lock`` (its canonical bytes) under its digest; where it is."""
        final = self.lock_path(lock.digest())
        if final.is_file():
            return final
        self._write_atomic(final, lock.to_bytes())
        return final

    def read_lock(self, sha256: bytes) -> RequirementsLock:
        """The stored lock with this digest (:class:`UsageError` if absent or not that lock)."""
        path = self.lock_path(sha256)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_LOCK_SIZE + 1)
        except OSError as exc:
            raise UsageError(f"the requirements lock {sha256.hex()} is not stored: {exc}") from None
        lock = RequirementsLock.from_bytes(data, where=str(path))
        if lock.digest() != sha256:
            raise UsageError(f"the stored lock {path} is not the lock {sha256.hex()}")
        return lock

    # -- wheels --------------------------------------------------------------------------------

    @property
    def wheels_dir(self) -> Path:
        """What the runtime is given (``--wheels``): it finds each wheel by its SHA-256."""
        return self.root

    def wheel_path(self, sha256: bytes) -> Path:
        if len(sha256) != 32:
            raise UsageError("a wheel digest is 32 bytes")
        name = sha256.hex()
        return self.root / name[:2] / name[2:]

    def missing(self, lock: RequirementsLock) -> list[str]:
        """The pins of the lock's wheels and sdists that are not cached."""
        return [r.pin for r in lock.requirements if not self.wheel_path(r.sha256).is_file()]

    def fetch(self, lock: RequirementsLock) -> int:
        """Fetch and cache every wheel of ``lock`` not cached yet; how many were fetched.

        pip checks each download against the lock's hash (``--require-hashes``); each
        file is hashed again here and stored under its own digest.
        """
        if not self.missing(lock):
            return 0
        stored = self._fetch_sdists([r for r in lock.of_kind(SDIST) if self._absent(r)])
        if all(r.kind == SDIST or not self._absent(r) for r in lock.requirements):
            left = self.missing(lock)
            if left:
                raise WheelFetchError(
                    f"the index gave no sdist with the locked hash for {', '.join(left)[:300]}"
                )
            return stored
        tmp_root = self.root / "tmp"
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WheelFetchError(f"cannot write in {tmp_root}: {exc.strerror or exc}") from None
        with tempfile.TemporaryDirectory(prefix="fetch-", dir=tmp_root) as tmp:
            folder = Path(tmp)
            wanted = [r for r in lock.requirements if r.kind != SDIST and self._absent(r)]
            partial = RequirementsLock(
                python=lock.python,
                platform=lock.platform,
                source=lock.source,
                requirements=tuple(LockedRequirement(r.name, r.version, r.sha256) for r in wanted),
            )
            (folder / "lock.txt").write_bytes(partial.to_bytes())
            out = folder / "out"
            argv = [
                *self._pip,
                "download",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                lock.python,
                *(f"--platform={tag}" for tag in compatible_platforms(lock.platform)),
                "--dest",
                str(out),
                "-r",
                str(folder / "lock.txt"),
            ]
            if self._find_links is not None:
                argv += ["--no-index", "--find-links", self._find_links]
            elif self._index_url is not None:
                argv += ["--index-url", self._index_url]
            try:
                done = subprocess.run(  # noqa: S603 - our argv, no shell
                    argv, capture_output=True, timeout=FETCH_TIMEOUT, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise WheelFetchError(f"fetching the app's wheels failed: {exc}") from None
            if done.returncode != 0:
                lines = [
                    line
                    for line in done.stderr.decode(errors="replace").splitlines()
                    if line.strip()
                ]
                raise WheelFetchError(
                    f"fetching the app's wheels ({', '.join(partial.pins())[:200]}) failed: "
                    f"{(lines[-1] if lines else f'pip exit {done.returncode}')[:300]}",
                    hint="check the operator's wheel_index_url / wheel_find_links",
                )
            expected = {r.sha256 for r in wanted}
            for path in sorted(out.iterdir()) if out.is_dir() else []:
                digest = self._put_file(path)
                if digest in expected:
                    stored += 1
        left = self.missing(lock)
        if left:
            raise WheelFetchError(
                f"the index gave no wheel with the locked hash for {', '.join(left)[:300]}"
            )
        return stored

    def _absent(self, req: LockedRequirement) -> bool:
        return not self.wheel_path(req.sha256).is_file()

    def _fetch_sdists(self, wanted: list[LockedRequirement]) -> int:
        """Cache each sdist of ``wanted`` by its hash, without pip (see the module's
        description); how many were stored. One not found is left missing."""
        if not wanted:
            return 0
        tmp_root = self.root / "tmp"
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WheelFetchError(f"cannot write in {tmp_root}: {exc.strerror or exc}") from None
        stored = 0
        with tempfile.TemporaryDirectory(prefix="sdist-", dir=tmp_root) as tmp:
            folder = Path(tmp)
            if self._find_links is not None:
                local = Path(self._find_links.removeprefix("file://"))
                files = sorted(local.glob("*.tar.gz"))[:MAX_FIND_LINKS_FILES]
                wanted_hashes = {r.sha256 for r in wanted}
                for path in files:
                    if not path.is_file() or path.stat().st_size > MAX_WHEEL_SIZE:
                        continue
                    copy = folder / path.name
                    with path.open("rb") as src, copy.open("wb") as dst:
                        shutil.copyfileobj(src, dst, _BLOCK)
                    if self._put_file(copy) in wanted_hashes:
                        stored += 1
                    copy.unlink(missing_ok=True)
                return stored
            index = self._index_url or DEFAULT_INDEX
            for req in wanted:
                for found in project_files(index, req.name, error=WheelFetchError):
                    if found.sha256 != req.sha256:
                        continue
                    copy = folder / req.sha256.hex()
                    copy.write_bytes(read_url(found.url, MAX_WHEEL_SIZE, error=WheelFetchError))
                    if self._put_file(copy) == req.sha256:
                        stored += 1
                        break
        return stored

    def _put_file(self, path: Path) -> bytes:
        """Move a downloaded file into the cache under its SHA-256 (bounded)."""
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as f:
            while block := f.read(_BLOCK):
                size += len(block)
                if size > MAX_WHEEL_SIZE:
                    raise WheelFetchError(f"{path.name} is larger than {MAX_WHEEL_SIZE} bytes")
                digest.update(block)
        sha256 = digest.digest()
        final = self.wheel_path(sha256)
        if final.is_file():
            return sha256
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o440)
        os.replace(path, final)
        return sha256

    def _write_atomic(self, final: Path, data: bytes) -> None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(name, 0o440)
                os.replace(name, final)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise UsageError(f"cannot store {final}: {exc.strerror or exc}") from None
