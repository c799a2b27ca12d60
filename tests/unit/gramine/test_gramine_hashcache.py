"""The hash cache: a warm start-up hashes nothing; a changed file is always hashed again.

Hash calls are counted (never timed) by wrapping the one function that reads a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import confide.gramine._environment as environment
import confide.gramine._hashcache as hashcache
from confide.gramine import runtime_environment
from confide.gramine._hashcache import HashCache
from support.gramine_env import LATER_NS, FakeEnvironment, make_fake_environment


class Counter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = hashcache._file_sha256

        def counted(path: str) -> bytes:
            self.paths.append(path)
            return real(path)

        monkeypatch.setattr(hashcache, "_file_sha256", counted)


@pytest.fixture
def fake(tmp_path: Path) -> FakeEnvironment:
    return make_fake_environment(tmp_path / "env")


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Counter:
    return Counter(monkeypatch)


def _cache(path: Path) -> HashCache:
    # Hashing "starts" later than every file here was written, so none is racily clean.
    return HashCache(path, now_ns=time.time_ns() + LATER_NS)


def test_a_warm_scan_hashes_no_file(
    fake: FakeEnvironment, counter: Counter, tmp_path: Path
) -> None:
    cold = fake.scan(_cache(tmp_path / "c.json"))
    assert len(counter.paths) == len(cold.files) > 50
    counter.paths.clear()
    warm = fake.scan(_cache(tmp_path / "c.json"))
    assert counter.paths == []
    assert warm == cold


def test_the_real_warm_start_up_hashes_no_file(
    counter: Counter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the runtime does at start-up, twice: the second time reads no measured file."""
    # A file of the working tree edited in the last 2 s is rightly not cached yet.
    later = time.time_ns() + LATER_NS
    monkeypatch.setattr(environment, "time_ns", lambda: later)
    cold = runtime_environment(cache_dir=tmp_path)
    assert len(counter.paths) > 500
    counter.paths.clear()
    warm = runtime_environment(cache_dir=tmp_path)
    assert counter.paths == [] and warm.digest == cold.digest


def _same_size_change(path: Path, *, keep_mtime: bool) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


CHANGES = {
    "content, mtime put back (ctime differs)": True,
    "content and mtime": False,
}


@pytest.mark.parametrize("keep_mtime", CHANGES.values(), ids=CHANGES.keys())
def test_a_changed_file_is_hashed_again(
    fake: FakeEnvironment, counter: Counter, tmp_path: Path, keep_mtime: bool
) -> None:
    cold = fake.scan(_cache(tmp_path / "c.json"))
    target = fake.root / "site" / "h11" / "_readers.py"
    _same_size_change(target, keep_mtime=keep_mtime)
    counter.paths.clear()
    warm = fake.scan(_cache(tmp_path / "c.json"))
    assert counter.paths == [str(target)]
    assert warm.digest != cold.digest


def test_a_touched_file_is_hashed_again(
    fake: FakeEnvironment, counter: Counter, tmp_path: Path
) -> None:
    fake.scan(_cache(tmp_path / "c.json"))
    target = fake.root / "lib" / "python3" / "os.py"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    counter.paths.clear()
    fake.scan(_cache(tmp_path / "c.json"))
    assert counter.paths == [str(target)]


def test_a_replaced_file_is_hashed_again(
    fake: FakeEnvironment, counter: Counter, tmp_path: Path
) -> None:
    fake.scan(_cache(tmp_path / "c.json"))
    target = fake.root / "site" / "uvicorn" / "main.py"
    st = target.stat()
    copy = target.with_suffix(".new")
    copy.write_bytes(target.read_bytes())
    os.replace(copy, target)  # same content, size and (put back) mtime; another inode
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    counter.paths.clear()
    fake.scan(_cache(tmp_path / "c.json"))
    assert counter.paths == [str(target)]


def test_racily_clean_files_are_not_cached(
    fake: FakeEnvironment, counter: Counter, tmp_path: Path
) -> None:
    fake.scan(HashCache(tmp_path / "c.json", now_ns=time.time_ns()))
    counter.paths.clear()
    fake.scan(HashCache(tmp_path / "c.json", now_ns=time.time_ns()))
    # Every file of the fake environment was written just now: none could be trusted.
    assert len(counter.paths) > 50


CORRUPT = {
    "not json": b"{",
    "wrong format": b'{"format": "x", "version": 1, "files": {}}',
    "wrong row": b'{"format": "confide-hash-cache", "version": 1, "files": {"/a": [1]}}',
    "a list": b"[]",
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupted_cache_is_ignored_and_rewritten(
    fake: FakeEnvironment, counter: Counter, tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "c.json").write_bytes(content)
    cold = fake.scan(_cache(tmp_path / "c.json"))
    assert len(counter.paths) == len(cold.files)
    counter.paths.clear()
    assert fake.scan(_cache(tmp_path / "c.json")) == cold
    assert counter.paths == []


def test_a_forged_cache_entry_for_a_changed_file_is_not_trusted(
    fake: FakeEnvironment, counter: Counter, tmp_path: Path
) -> None:
    """A cache that claims the old hash under stale stat fields cannot hide a change."""
    cold = fake.scan(_cache(tmp_path / "c.json"))
    target = fake.root / "site" / "h11" / "_readers.py"
    _same_size_change(target, keep_mtime=True)
    counter.paths.clear()
    assert fake.scan(_cache(tmp_path / "c.json")).digest != cold.digest
    assert counter.paths == [str(target)]


CACHE_HOMES = {
    "XDG_CACHE_HOME": ({"XDG_CACHE_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/confide"),
    "HOME": ({"HOME": "/home/u"}, "/home/u/.cache/confide"),
    "relative XDG is ignored": ({"XDG_CACHE_HOME": "rel", "HOME": "/home/u"},
                                "/home/u/.cache/confide"),
}  # fmt: skip


@pytest.mark.parametrize(("env", "expected"), CACHE_HOMES.values(), ids=CACHE_HOMES.keys())
def test_the_default_cache_folder(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confide.gramine import default_cache_dir

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert default_cache_dir() == Path(expected)
