"""BlobStore: content addressing, deduplication, atomic writes, the size limit."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.operator import BlobStore, PackageTooLarge


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_blobs_are_named_by_their_sha256(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(3 * 1024 * 1024 + 7)  # several blocks
    blob = store.put(io.BytesIO(data), limit=len(data))
    digest = hashlib.sha256(data).hexdigest()
    assert (blob.sha256_hex, blob.size, blob.created) == (digest, len(data), True)
    path = tmp_path / "blobs" / digest[:2] / digest[2:]
    assert store.path(blob.sha256) == path and store.exists(blob.sha256)
    assert path.read_bytes() == data
    assert _files(tmp_path / "blobs") == [path]
    assert path.stat().st_mode & 0o222 == 0  # never modified once stored


def test_the_same_content_is_stored_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    first = store.put(io.BytesIO(b"same"), limit=10)
    again = store.put(io.BytesIO(b"same"), limit=10)
    other = store.put(io.BytesIO(b"other"), limit=10)
    assert first.sha256 == again.sha256 and again.created is False
    assert other.created and other.sha256 != first.sha256
    assert len(_files(tmp_path)) == 2


def test_the_limit_is_enforced_while_reading(tmp_path: Path) -> None:
    class Endless(io.RawIOBase):
        reads = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            self.reads += 1
            buffer[:] = b"\0" * len(buffer)
            return len(buffer)

    store = BlobStore(tmp_path)
    source = Endless()
    with pytest.raises(PackageTooLarge, match="limit of 2097152 bytes") as info:
        store.put(source, limit=2 * 1024 * 1024)  # type: ignore[arg-type]
    assert info.value.limit == 2 * 1024 * 1024
    assert source.reads <= 4  # stopped just past the limit, not at the end of the stream
    assert _files(tmp_path) == []  # nothing left behind


@pytest.mark.parametrize(("size", "limit", "ok"), [(0, 0, True), (10, 10, True), (11, 10, False)])
def test_limit_boundaries(tmp_path: Path, size: int, limit: int, ok: bool) -> None:
    store = BlobStore(tmp_path)
    if ok:
        assert store.put(io.BytesIO(b"x" * size), limit=limit).size == size
    else:
        with pytest.raises(PackageTooLarge):
            store.put(io.BytesIO(b"x" * size), limit=limit)
        assert _files(tmp_path) == []


def test_a_failing_source_leaves_nothing(tmp_path: Path) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 0:
                raise OSError("connection reset")
            return super().read(5)

    store = BlobStore(tmp_path)
    with pytest.raises(OSError, match="connection reset"):
        store.put(Broken(b"0123456789"), limit=100)
    assert _files(tmp_path) == []


def test_digests_must_be_32_bytes(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        BlobStore(tmp_path).path(b"short")
