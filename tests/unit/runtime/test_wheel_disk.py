"""The wheel disk of a TD (``confide.runtime._wheeldisk``, ADR 0030): written by the operator,
parsed by the guest within bounds. A table of hostile disks, each refused with
``td.wheel_disk`` and words of its own; a hypothesis test that any bytes either parse or
raise our error; and the round trip."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.errors import FormatError, UsageError
from confide.runtime import read_wheel_disk, write_wheel_disk
from confide.runtime._wheeldisk import MAGIC, MAX_DISK_FILE, SECTOR
from confide.wire import MAX_LOCK_SIZE, MAX_LOCKED, RequirementsLock
from support.wheels import lock_of, wheel_bytes

ONE = wheel_bytes("one", "1.0")
TWO = wheel_bytes("two", "2.0")
LOCK = lock_of(("one", "1.0", ONE), ("two", "2.0", TWO))
HEAD = struct.Struct(">8sIII")
ENTRY = struct.Struct(">32sQ")


def _disk(
    lock: RequirementsLock = LOCK,
    files: list[tuple[bytes, bytes]] | None = None,
    *,
    head: tuple[bytes, int] = (MAGIC, 1),
    raw_lock: bytes | None = None,
    sizes: list[int] | None = None,
    tail: bytes | None = None,
) -> bytes:
    """A disk image built by hand (so it can break every rule)."""
    chosen = files if files is not None else [(hashlib.sha256(d).digest(), d) for d in (ONE, TWO)]
    body = raw_lock if raw_lock is not None else lock.to_bytes()
    out = HEAD.pack(head[0], head[1], len(chosen), len(body)) + body
    for i, (digest, data) in enumerate(chosen):
        out += ENTRY.pack(digest, sizes[i] if sizes is not None else len(data))
    out += b"".join(data for _, data in chosen)
    return out + (tail if tail is not None else bytes(-len(out) % SECTOR))


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "disk"
    path.write_bytes(data)
    return path


def test_the_round_trip_gives_the_lock_and_each_file_under_its_hash(tmp_path: Path) -> None:
    sources = {}
    for name, data in (("one", ONE), ("two", TWO)):
        sources[hashlib.sha256(data).digest()] = tmp_path / name
        (tmp_path / name).write_bytes(data)
    size = write_wheel_disk(LOCK, sources, tmp_path / "wheels.disk")
    assert size % SECTOR == 0 and (tmp_path / "wheels.disk").stat().st_size == size
    assert (tmp_path / "wheels.disk").read_bytes() == _disk()  # the format, byte for byte
    lock_path, wheels = read_wheel_disk(
        tmp_path / "wheels.disk", tmp_path / "guest", lock_sha256=LOCK.digest()
    )
    assert RequirementsLock.from_bytes(lock_path.read_bytes()) == LOCK
    for digest, source in sources.items():
        name = digest.hex()
        assert (wheels / name[:2] / name[2:]).read_bytes() == source.read_bytes()


def test_the_writer_takes_only_locked_files(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    with pytest.raises(UsageError, match="only files its lock names"):
        write_wheel_disk(LOCK, {hashlib.sha256(b"x").digest(): tmp_path / "x"}, tmp_path / "d")


_ONE = hashlib.sha256(ONE).digest()
_TWO = hashlib.sha256(TWO).digest()
_OTHER = lock_of(("one", "1.0", ONE))
#: (row, the disk's bytes, words of the refusal).
HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", "ends inside its header"),
    "wrong magic": (lambda: _disk(head=(b"CONFIDEX", 1)), "not a version 1"),
    "wrong version": (lambda: _disk(head=(MAGIC, 2)), "not a version 1"),
    "too many files": (
        lambda: HEAD.pack(MAGIC, 1, MAX_LOCKED + 1, 0) + bytes(SECTOR),
        f"more than {MAX_LOCKED}",
    ),
    "lock too large": (
        lambda: HEAD.pack(MAGIC, 1, 0, MAX_LOCK_SIZE + 1) + bytes(SECTOR),
        f"more than {MAX_LOCK_SIZE}",
    ),
    "lock cut": (lambda: _disk()[: HEAD.size + 10], "ends inside its lock"),
    "lock not a lock": (lambda: _disk(raw_lock=b"pandas==2.2\n"), "malformed"),
    "file not locked": (
        lambda: _disk(files=[(hashlib.sha256(b"other").digest(), b"other")]),
        "is not locked, or named twice",
    ),
    "file twice": (lambda: _disk(files=[(_ONE, ONE), (_ONE, ONE)]), "named twice"),
    "file too large": (
        lambda: _disk(files=[(_ONE, ONE)], sizes=[MAX_DISK_FILE + 1]),
        f"more than {MAX_DISK_FILE}",
    ),
    "table cut": (lambda: _disk()[: HEAD.size + len(LOCK.to_bytes()) + 8], "inside its table"),
    "file cut": (lambda: _disk(files=[(_ONE, ONE)], sizes=[len(ONE) + 1], tail=b""), "inside the"),
    "bytes after the files": (lambda: _disk(tail=b"\1" + bytes(SECTOR - 1)), "other than"),
    "a sector too many": (
        lambda: _disk() + bytes(SECTOR),
        "other than a sector's zero padding",
    ),
    # Review (ADR 0030): a well-formed disk of another lock was written out whole before the
    # launch check refused it; now it is refused at the lock, naming both hashes.
    "a lock not the measured one": (
        lambda: _disk(lock=_OTHER, files=[(_ONE, ONE)]),
        f"its lock's SHA-256 is {_OTHER.digest().hex()}, the launch measures {LOCK.digest().hex()}",
    ),
}


@pytest.mark.parametrize("row", HOSTILE, ids=list(HOSTILE))
def test_hostile_disks_are_refused(row: str, tmp_path: Path) -> None:
    make, words = HOSTILE[row]
    with pytest.raises(FormatError) as info:
        read_wheel_disk(_write(tmp_path, make()), tmp_path / "guest", lock_sha256=LOCK.digest())
    assert info.value.code == "td.wheel_disk"
    assert words in str(info.value)


def test_another_lock_is_refused_before_any_file_is_written(tmp_path: Path) -> None:
    disk = _write(tmp_path, _disk(lock=_OTHER, files=[(_ONE, ONE)]))
    with pytest.raises(FormatError, match="the launch measures"):
        read_wheel_disk(disk, tmp_path / "guest", lock_sha256=LOCK.digest())
    assert not (tmp_path / "guest").exists()
    # Guard: the same disk is read whole when its lock is the measured one.
    read_wheel_disk(disk, tmp_path / "guest", lock_sha256=_OTHER.digest())
    assert (tmp_path / "guest" / "requirements.lock").read_bytes() == _OTHER.to_bytes()


def test_a_file_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    """Review (ADR 0030): an OSError while the files were written (a TD whose memory cannot
    hold them: ENOSPC; a file already there) left ``confide td-runtime`` with a traceback."""
    name = _ONE.hex()
    taken = tmp_path / "guest" / "wheels" / name[:2] / name[2:]
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"left from an earlier start")
    with pytest.raises(UsageError, match="cannot write the TD's wheel disk into") as info:
        read_wheel_disk(_write(tmp_path, _disk()), tmp_path / "guest", lock_sha256=LOCK.digest())
    assert not isinstance(info.value, FormatError)  # not the disk's fault
    # Guard: with that file gone the same disk is read.
    taken.unlink()
    read_wheel_disk(_write(tmp_path, _disk()), tmp_path / "guest", lock_sha256=LOCK.digest())


def test_the_hostile_table_is_not_vacuous(tmp_path: Path) -> None:
    """Guard: the well-formed disk the rows start from is accepted, and each row differs."""
    read_wheel_disk(_write(tmp_path, _disk()), tmp_path / "guest", lock_sha256=LOCK.digest())
    assert len({make() for make, _ in HOSTILE.values()}) == len(HOSTILE)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0, max_value=4096),
    flip=st.integers(min_value=0, max_value=4095),
    junk=st.binary(max_size=64),
)
def test_any_damaged_disk_parses_or_raises_our_error(
    tmp_path_factory: pytest.TempPathFactory, cut: int, flip: int, junk: bytes
) -> None:
    good = bytearray(_disk())
    if flip < len(good):
        good[flip] ^= 0x41
    data = bytes(good[: max(0, len(good) - cut)]) + junk
    folder = tmp_path_factory.mktemp("disk")
    try:
        read_wheel_disk(_write(folder, data), folder / "guest", lock_sha256=LOCK.digest())
    except FormatError as exc:
        assert exc.code == "td.wheel_disk"
