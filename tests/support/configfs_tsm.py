"""A user-space stand-in for the kernel's configfs-tsm report interface (test tooling).

It behaves as ``Documentation/ABI/testing/configfs-tsm`` and the TDX guest
driver do, for the paths under its ``root``:

* ``mkdir root/<name>`` creates an entry holding ``inblob`` (write only),
  ``outblob``, ``provider`` and ``generation`` (read only); ``rmdir`` removes it;
  an entry outside ``root`` or a second one of the same name fails (ENOENT, EEXIST);
* a write to ``inblob`` over 64 bytes fails with EFBIG (configfs's size bound),
  a read of a write-only or a write to a read-only attribute with EACCES;
* every write to ``inblob`` increments ``generation``;
* reading ``outblob`` makes the report of the current ``inblob`` (EINVAL unless
  it is 64 bytes, as the TDX driver requires) with the ``quote`` function given.

Why an emulation behind :class:`confide.tee._tdx.TsmFilesystem` and not a
directory tree: configfs attributes appear when the entry is made and
``outblob`` is computed when read, which a plain directory, FIFOs, or a
helper thread watching the tree cannot do without racing the reader's first
open; configfs itself needs the kernel (and FUSE a mount). The TEE's real
file operations (:class:`~confide.tee._tdx.OsTsmFilesystem`) are tested on
real folders separately.

``before_outblob`` runs at each ``outblob`` read, before the report is made:
tests use it to act as a concurrent writer (another process writing the
same entry between the TEE's write and its read).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: configfs-tsm's bound on ``inblob`` (TSM_INBLOB_MAX).
INBLOB_MAX = 64
_READ_ONLY = ("outblob", "provider", "generation")


@dataclass
class _Entry:
    generation: int = 0
    inblob: bytes = b""


class ConfigfsTsm:
    """The kernel side of ``<root>/<entry>/{inblob,outblob,provider,generation}``."""

    def __init__(
        self,
        root: Path,
        quote: Callable[[bytes], bytes],
        *,
        provider: str = "tdx_guest",
        before_outblob: Callable[[Path], None] | None = None,
    ) -> None:
        self.root = root
        self.provider = provider
        self.before_outblob = before_outblob
        self._quote = quote
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        #: Every entry name ever created, in order (to check the TEE's naming and cleanup).
        self.created: list[str] = []

    @property
    def entries(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._entries)

    # -- TsmFilesystem ---------------------------------------------------------

    def is_dir(self, path: Path) -> bool:
        if path == self.root:
            return True
        with self._lock:
            return path.parent == self.root and path.name in self._entries

    def mkdir(self, path: Path) -> None:
        if path.parent != self.root:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        with self._lock:
            if path.name in self._entries:
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
            self._entries[path.name] = _Entry()
            self.created.append(path.name)

    def rmdir(self, path: Path) -> None:
        with self._lock:
            if path.parent != self.root or self._entries.pop(path.name, None) is None:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))

    def read(self, path: Path, limit: int) -> bytes:
        name = path.name
        if name == "inblob":
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        if name == "outblob":
            if self.before_outblob is not None:
                self.before_outblob(path.parent)
            with self._lock:
                inblob = self._entry(path).inblob
            if len(inblob) != INBLOB_MAX:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
            return self._quote(inblob)[:limit]
        with self._lock:
            entry = self._entry(path)
            if name == "provider":
                return f"{self.provider}\n".encode()[:limit]
            if name == "generation":
                return f"{entry.generation}\n".encode()[:limit]
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))

    def write(self, path: Path, data: bytes) -> None:
        name = path.name
        with self._lock:
            entry = self._entry(path)
            if name in _READ_ONLY:
                raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            if name != "inblob":
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
            if len(data) > INBLOB_MAX:
                raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(path))
            entry.inblob = bytes(data)
            entry.generation += 1

    def _entry(self, path: Path) -> _Entry:
        entry_dir = path.parent
        entry = self._entries.get(entry_dir.name) if entry_dir.parent == self.root else None
        if entry is None:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        return entry
