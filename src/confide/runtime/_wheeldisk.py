"""The wheel disk: an app's requirements lock and its wheels, on a read-only disk of a TD
(ADR 0030).

The operator's TDX backend attaches one raw image per locked app as a read-only virtio
block device whose serial is :data:`DISK_SERIAL`; ``confide td-runtime`` finds it by that
serial (``/sys/block/<vdX>/serial``) and reads it from ``/dev/<vdX>``. The format is
parsed in user space with a bound on every field: a host that controls the disk controls
nothing but these bytes (no file system of the host's making is mounted in the TD, so the
guest kernel parses none). Big-endian integers::

    magic      8 bytes   b"CONFIDEW"
    version    u32       1
    count      u32       number of files, at most MAX_LOCKED
    lock_size  u32       at most MAX_LOCK_SIZE
    lock       lock_size bytes: the requirements lock (its canonical bytes)
    count x    sha256 (32 bytes), size (u64, at most MAX_DISK_FILE)   the table
    the files' bytes, in the table's order
    zero padding to a whole 512-byte sector (fewer than 512 bytes)

The lock must be the one the launch measures (checked before any file is written: a host
cannot make the guest fill its memory with another lock's files). Every file named in the
table must be locked, once; the sizes together are at most
:data:`MAX_DISK_TOTAL`; anything after the files but the sector's zero padding is
refused (``td.wheel_disk``). :func:`read_wheel_disk` writes the lock and each file under
its SHA-256 (``wheels/<ab>/<cdef...>``, as the operator's cache) into a RAM folder of the
guest, streaming, and checks no file's hash: the runtime checks each against the measured
lock while it installs it (``requirements.hash_mismatch``), exactly as for every backend.

Example::

    >>> write_wheel_disk(lock, {r.sha256: cache.wheel_path(r.sha256)  # doctest: +SKIP
    ...                         for r in lock.requirements}, Path("wheels.disk"))
    >>> read_wheel_disk(Path("/dev/vdb"), Path("/run/confide/requirements"),  # doctest: +SKIP
    ...                 lock_sha256=launch.requirements_sha256)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Final

from confide.errors import FormatError, UsageError
from confide.wire import MAX_LOCK_SIZE, MAX_LOCKED, RequirementsLock

MAGIC: Final = b"CONFIDEW"
VERSION: Final = 1
#: The virtio-blk serial the guest finds the disk by (the device ID is at most 20 bytes).
DISK_SERIAL: Final = "confide-wheels"
#: A block device is read in whole sectors (virtio-blk's capacity counts 512-byte sectors).
SECTOR: Final = 512
#: Largest file on the disk, and most bytes of files in all (the runtime's own bounds).
MAX_DISK_FILE: Final = 1024 * 1024 * 1024
MAX_DISK_TOTAL: Final = 4 * 1024 * 1024 * 1024
#: What the guest writes: the lock's file name and the wheels' folder.
LOCK_FILE: Final = "requirements.lock"
WHEELS_FOLDER: Final = "wheels"
_HEAD: Final = struct.Struct(">8sIII")
_ENTRY: Final = struct.Struct(">32sQ")
_BLOCK: Final = 1024 * 1024


def _bad(message: str) -> FormatError:
    return FormatError("td.wheel_disk", "the TD's wheel disk is malformed", detail=message)


def write_wheel_disk(lock: RequirementsLock, files: Mapping[bytes, Path], out: Path) -> int:
    """Write the disk image of ``lock`` with ``files`` (SHA-256 -> a file of the operator's
    cache: not checked here, the runtime checks) to ``out``, atomically; its size."""
    if len(files) > MAX_LOCKED:
        raise UsageError(f"a wheel disk holds at most {MAX_LOCKED} files")
    locked = {r.sha256 for r in lock.requirements}
    if not set(files) <= locked:
        raise UsageError("a wheel disk holds only files its lock names")
    table = sorted(files.items())
    sizes = [path.stat().st_size for _, path in table]
    if any(s > MAX_DISK_FILE for s in sizes) or sum(sizes) > MAX_DISK_TOTAL:
        raise UsageError(f"a wheel disk holds files of at most {MAX_DISK_FILE} bytes, "
                         f"{MAX_DISK_TOTAL} in all")  # fmt: skip
    raw_lock = lock.to_bytes()
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("wb") as f:
        f.write(_HEAD.pack(MAGIC, VERSION, len(table), len(raw_lock)))
        f.write(raw_lock)
        for (digest, _), size in zip(table, sizes, strict=True):
            f.write(_ENTRY.pack(digest, size))
        for (_, path), size in zip(table, sizes, strict=True):
            with path.open("rb") as src:
                left = size
                while left and (block := src.read(min(_BLOCK, left))):
                    f.write(block)
                    left -= len(block)
            if left:
                raise UsageError(f"{path} changed while the wheel disk was written")
        f.write(b"\0" * (-f.tell() % SECTOR))
        size = f.tell()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return size


def _exactly(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise _bad(f"it ends inside {what}")
    return data


def _copy_out(src: BinaryIO, wheels: Path, digest: bytes, size: int) -> None:
    name = digest.hex()
    target = wheels / name[:2] / name[2:]
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    with os.fdopen(fd, "wb") as f:
        left = size
        while left:
            block = src.read(min(_BLOCK, left))
            if not block:
                raise _bad(f"it ends inside the file {name}")
            f.write(block)
            left -= len(block)


def read_wheel_disk(device: Path, out: Path, *, lock_sha256: bytes) -> tuple[Path, Path]:
    """Parse the disk at ``device`` (see the module's description) into ``out``: the lock's
    path and the wheels' folder. Raises :class:`FormatError` ``td.wheel_disk`` on anything
    outside the format's bounds, or when the disk's lock is not ``lock_sha256`` (the one the
    launch measures: refused before any file is written); :class:`UsageError` when the
    files cannot be written (the TD's memory must hold them). Nothing it wrote is then
    used."""
    try:
        src = device.open("rb")
    except OSError as exc:
        raise UsageError(
            f"cannot read the TD's wheel disk {device}: {exc.strerror or exc}"
        ) from None
    with src:
        magic, version, count, lock_size = _HEAD.unpack(_exactly(src, _HEAD.size, "its header"))
        if magic != MAGIC or version != VERSION:
            raise _bad(f"not a version {VERSION} wheel disk")
        if count > MAX_LOCKED:
            raise _bad(f"it names {count} files, more than {MAX_LOCKED}")
        if lock_size > MAX_LOCK_SIZE:
            raise _bad(f"its lock is {lock_size} bytes, more than {MAX_LOCK_SIZE}")
        raw_lock = _exactly(src, lock_size, "its lock")
        try:
            lock = RequirementsLock.from_bytes(raw_lock, where="the wheel disk's lock")
        except UsageError as exc:
            raise _bad(str(exc)) from None
        if (digest := lock.digest()) != lock_sha256:
            raise _bad(
                f"its lock's SHA-256 is {digest.hex()}, the launch measures {lock_sha256.hex()}"
            )
        locked = {r.sha256 for r in lock.requirements}
        table = [_ENTRY.unpack(_exactly(src, _ENTRY.size, "its table")) for _ in range(count)]
        seen: set[bytes] = set()
        total = 0
        for digest, size in table:
            if digest not in locked or digest in seen:
                raise _bad(f"its file {digest.hex()} is not locked, or named twice")
            if size > MAX_DISK_FILE:
                raise _bad(f"its file {digest.hex()} is {size} bytes, more than {MAX_DISK_FILE}")
            seen.add(digest)
            total += size
        if total > MAX_DISK_TOTAL:
            raise _bad(f"its files are {total} bytes, more than {MAX_DISK_TOTAL}")
        wheels = out / WHEELS_FOLDER
        try:
            out.mkdir(mode=0o700, parents=True, exist_ok=True)
            for digest, size in table:
                _copy_out(src, wheels, digest, size)
        except OSError as exc:
            raise UsageError(
                f"cannot write the TD's wheel disk into {out}: {exc.strerror or exc}",
                hint="the TD's memory must hold the lock's wheels twice during the start",
            ) from None
        used = _HEAD.size + lock_size + count * _ENTRY.size + total
        tail = src.read(SECTOR)
        if len(tail) >= SECTOR or tail.strip(b"\0") or (used + len(tail)) % SECTOR:
            raise _bad("it has bytes after its files other than a sector's zero padding")
        lock_path = out / LOCK_FILE
        try:
            lock_path.write_bytes(raw_lock)
        except OSError as exc:
            raise UsageError(
                f"cannot write the TD's requirements lock {lock_path}: {exc.strerror or exc}"
            ) from None
    return lock_path, wheels
