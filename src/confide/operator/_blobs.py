"""Content-addressed storage of encrypted packages.

A blob is stored under its SHA-256: ``<root>/ab/cdef...`` (the first two hex
digits name a folder). It is streamed into a temporary file in
``<root>/tmp`` while being hashed and counted, refused as soon as it grows
past the limit, flushed to disk, then moved into place with one atomic rename;
a blob already there is kept (uploads are deduplicated). Blobs are never
modified. The operator stores exactly the bytes it was sent: the owner's CLI
encrypted the package, the operator never sees its plaintext.

Example::

    >>> import io
    >>> store = BlobStore(Path("/var/lib/confide/blobs"))  # doctest: +SKIP
    >>> blob = store.put(io.BytesIO(b"CONFIDEP..."), limit=1024)  # doctest: +SKIP
    >>> store.path(blob.sha256).read_bytes()  # doctest: +SKIP
    b'CONFIDEP...'
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from confide.errors import UsageError

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
