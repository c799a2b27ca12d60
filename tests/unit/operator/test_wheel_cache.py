"""The operator's wheel cache (ADR 0024): content-addressed, fetched once, never trusted."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.operator._wheels import WheelCache, WheelFetchError
from confide.wire import LockedRequirement, RequirementsLock
from support.wheels import lock_of, pep503_index, sdist_bytes, wheel_bytes, write_wheel

WHEEL = wheel_bytes("tinydep", "1.0")
LOCK = lock_of(("tinydep", "1.0", WHEEL))


def test_a_locks_wheels_are_fetched_once_and_stored_by_hash(tmp_path: Path) -> None:
    index = tmp_path / "index"
    write_wheel(index, "tinydep", "1.0", WHEEL)
    cache = WheelCache(tmp_path / "cache", find_links=str(index))
    assert cache.missing(LOCK) == ["tinydep==1.0"]
    assert cache.fetch(LOCK) == 1
    stored = cache.wheel_path(hashlib.sha256(WHEEL).digest())
    assert stored.read_bytes() == WHEEL
    assert stat.S_IMODE(stored.stat().st_mode) == 0o440
    # Cached: nothing is fetched again (pip would fail if it ran).
    again = WheelCache(tmp_path / "cache", pip=["/bin/false"])
    assert again.fetch(LOCK) == 0 and again.missing(LOCK) == []


def test_an_index_serving_another_file_fills_nothing(tmp_path: Path) -> None:
    index = tmp_path / "index"
    write_wheel(index, "tinydep", "1.0", wheel_bytes("tinydep", "1.0", {"tinydep/x.py": b"1"}))
    cache = WheelCache(tmp_path / "cache", find_links=str(index))
    with pytest.raises(WheelFetchError, match="tinydep==1.0"):
        cache.fetch(LOCK)
    assert cache.missing(LOCK) == ["tinydep==1.0"]


def test_locks_are_kept_by_their_digest(tmp_path: Path) -> None:
    cache = WheelCache(tmp_path / "cache")
    path = cache.put_lock(LOCK)
    assert path.read_bytes() == LOCK.to_bytes()
    assert cache.read_lock(LOCK.digest()) == LOCK
    other = lock_of(("tinydep", "1.1", wheel_bytes("tinydep", "1.1")))
    path.chmod(0o600)
    path.write_bytes(other.to_bytes())  # another lock under this digest's name
    with pytest.raises(UsageError, match="is not the lock"):
        cache.read_lock(LOCK.digest())
    with pytest.raises(UsageError, match="not stored"):
        cache.read_lock(bytes(32))


# -- source distributions: by hash, from the index's PEP 503 page, never through pip ----------


SDIST = sdist_bytes("tinypkg", "1.0")
SDIST_LOCK = RequirementsLock(
    python="3.11",
    platform="manylinux_2_28_x86_64",
    source="tests",
    requirements=(LockedRequirement("tinypkg", "1.0", hashlib.sha256(SDIST).digest(), "sdist"),),
    allow_sdists=("tinypkg",),
)


def _page(data: bytes) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    return (
        f'<a href="../../files/tinypkg-1.0.tar.gz#sha256={digest}">tinypkg-1.0.tar.gz</a>'.encode()
    )


def test_a_locked_sdist_is_fetched_from_the_index_by_hash_without_pip(tmp_path: Path) -> None:
    files = {"/simple/tinypkg/": _page(SDIST), "/files/tinypkg-1.0.tar.gz": SDIST}
    with pep503_index(files) as url:
        cache = WheelCache(tmp_path / "cache", index_url=url, pip=["/bin/false"])
        assert cache.missing(SDIST_LOCK) == ["tinypkg==1.0"]
        assert cache.fetch(SDIST_LOCK) == 1
    assert cache.wheel_path(hashlib.sha256(SDIST).digest()).read_bytes() == SDIST
    assert cache.fetch(SDIST_LOCK) == 0  # cached: no request (the index is gone)


def test_an_index_serving_another_sdist_fills_nothing(tmp_path: Path) -> None:
    other = sdist_bytes("tinypkg", "1.0", extra={"x.py": b"1"})
    # the page claims the locked hash, the file is another: hashed again, not stored as it
    files = {"/simple/tinypkg/": _page(SDIST), "/files/tinypkg-1.0.tar.gz": other}
    with pep503_index(files) as url:
        cache = WheelCache(tmp_path / "cache", index_url=url, pip=["/bin/false"])
        with pytest.raises(WheelFetchError, match="tinypkg==1.0"):
            cache.fetch(SDIST_LOCK)
    assert cache.missing(SDIST_LOCK) == ["tinypkg==1.0"]


def test_a_locked_sdist_is_found_by_hash_in_a_find_links_folder(tmp_path: Path) -> None:
    folder = tmp_path / "links"
    folder.mkdir()
    (folder / "tinypkg-1.0.tar.gz").write_bytes(SDIST)
    (folder / "tinypkg-0.9.tar.gz").write_bytes(sdist_bytes("tinypkg", "0.9"))
    cache = WheelCache(tmp_path / "cache", find_links=str(folder), pip=["/bin/false"])
    assert cache.fetch(SDIST_LOCK) == 1 and cache.missing(SDIST_LOCK) == []
