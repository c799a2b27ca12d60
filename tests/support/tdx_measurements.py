"""A user-space stand-in for the TDX guest driver's measurement registers (test tooling).

It behaves as ``Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest``
(Linux 6.16) documents ``/sys/devices/virtual/misc/tdx_guest/measurements/``:

* ``rtmr0:sha384`` ... ``rtmr3:sha384`` (RW): a read returns the register's 48
  bytes; a write extends the register with the written buffer, which must be 48
  bytes written at offset 0 (anything else is EINVAL), as ``TDG.MR.RTMR.EXTEND``
  does: ``RTMR = SHA-384(RTMR || data)``;
* ``mrtd:sha384`` (RO, the TD's build-time measurement), ``mrconfigid``,
  ``mrowner``, ``mrownerconfig`` (RO, 48 bytes): a write is EACCES (sysfs mode 0444);
* any other name is ENOENT; nothing can be created or removed (EPERM).

It implements :class:`confide.tee.TsmFilesystem` for the paths under its
``root``, like :mod:`support.configfs_tsm` for configfs-tsm: sysfs binary
attributes whose write runs a TDCALL cannot be emulated by files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

#: Bytes of every TDX measurement register.
MR_SIZE = 48
_RTMRS = tuple(f"rtmr{i}:sha384" for i in range(4))
_READ_ONLY = ("mrtd:sha384", "mrconfigid", "mrowner", "mrownerconfig")


def _error(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


class TdxMeasurements:
    """The kernel side of ``<root>/{rtmr[0-3]:sha384, mrtd:sha384, ...}``."""

    def __init__(
        self, root: Path, *, mr_td: bytes, rtmrs: Sequence[bytes] = (bytes(MR_SIZE),) * 4
    ) -> None:
        if len(mr_td) != MR_SIZE or len(rtmrs) != 4 or any(len(r) != MR_SIZE for r in rtmrs):
            raise ValueError("MRTD and the four RTMRs are 48 bytes each")
        self.root = root
        self._lock = threading.Lock()
        self._values: dict[str, bytes] = dict(zip(_RTMRS, rtmrs, strict=True))
        self._values.update({"mrtd:sha384": mr_td, **dict.fromkeys(_READ_ONLY[1:], bytes(48))})
        #: Every extend, in order: (register index, data).
        self.extends: list[tuple[int, bytes]] = []

    def rtmr(self, index: int) -> bytes:
        with self._lock:
            return self._values[_RTMRS[index]]

    # -- TsmFilesystem ---------------------------------------------------------

    def is_dir(self, path: Path) -> bool:
        return path == self.root

    def mkdir(self, path: Path) -> None:
        raise _error(errno.EPERM, path)

    def rmdir(self, path: Path) -> None:
        raise _error(errno.EPERM, path)

    def read(self, path: Path, limit: int) -> bytes:
        with self._lock:
            if path.parent != self.root or path.name not in self._values:
                raise _error(errno.ENOENT, path)
            return self._values[path.name][:limit]

    def write(self, path: Path, data: bytes) -> None:
        with self._lock:
            if path.parent != self.root or path.name not in self._values:
                raise _error(errno.ENOENT, path)
            if path.name in _READ_ONLY:
                raise _error(errno.EACCES, path)
            if len(data) != MR_SIZE:
                raise _error(errno.EINVAL, path)
            old = self._values[path.name]
            self._values[path.name] = hashlib.sha384(old + bytes(data)).digest()
            self.extends.append((_RTMRS.index(path.name), bytes(data)))
