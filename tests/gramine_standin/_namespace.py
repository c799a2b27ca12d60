"""A private mount namespace with ``/dev/attestation`` in it (Linux, as root).

``/dev`` is covered by an overlay whose lower layer is the host's ``/dev`` and
whose upper layer lives on a fresh tmpfs, so the tree made at ``/dev/attestation``
(and anything else written under ``/dev``) exists only in this namespace and
vanishes with it: nothing is left on the host, and no other process (another
test's runtime using ``--tee auto``) ever sees a ``/dev/attestation``.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Final

CLONE_NEWNS: Final = 0x00020000
MS_BIND: Final = 0x1000
MS_REC: Final = 0x4000
MS_PRIVATE: Final = 1 << 18
_SCRATCH: Final = Path("/dev/shm")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    result = _libc().mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {fstype or 'bind'} at {target}: {os.strerror(code)}")


def enter_private_namespace() -> None:
    """Unshare the mount namespace (this single-threaded process and its future children)."""
    if _libc().unshare(CLONE_NEWNS) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNS): {os.strerror(code)}")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)


def private_dev() -> None:
    """Cover ``/dev`` with an overlay written to a namespace-private tmpfs."""
    _mount("tmpfs", str(_SCRATCH), "tmpfs", 0, "mode=0700")
    (_SCRATCH / "upper").mkdir()
    (_SCRATCH / "work").mkdir()
    _mount(
        "overlay",
        "/dev",
        "overlay",
        0,
        f"lowerdir=/dev,upperdir={_SCRATCH}/upper,workdir={_SCRATCH}/work",
    )


def tmpfs(path: Path) -> None:
    """A fresh RAM folder at ``path`` (Gramine's ``tmpfs`` mount: in-enclave, per process)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("tmpfs", str(path), "tmpfs", 0, "mode=1777")


def bind(source: Path, target: Path) -> None:
    _mount(str(source), str(target), None, MS_BIND, None)
