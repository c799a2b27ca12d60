"""The operator's wheel cache (ADR 0024): content-addressed, fetched once, never trusted."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.operator._wheels import WheelCache, WheelFetchError
from support.wheels import lock_of, wheel_bytes, write_wheel

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
