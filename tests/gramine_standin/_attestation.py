"""A ``/dev/attestation`` tree backed by a simulated TEE (Gramine's "Attestation" page).

- ``attestation_type``: ``dcap``.
- ``user_report_data``: written with 64 bytes before ``quote`` is read.
- ``quote``: read: a DCAP quote whose REPORTDATA is the last 64 bytes written to
  ``user_report_data`` (zeros if none were), made by the simulated platform for
  this enclave's MRENCLAVE and MRSIGNER.
- ``keys/_sgx_mrenclave``: read: the 16-byte sealing key bound to MRENCLAVE on
  this platform.

``user_report_data``, ``quote`` and the key are FIFOs served by threads of the
stand-in: the key is never written to a file. The server holds
``user_report_data`` open for reading, so a write never blocks and its bytes are
in the pipe before the writer can open ``quote`` (which is when they are read):
the write-then-read order of one process gives the quote it asked for. Each
open of ``quote`` or of the key gets exactly one copy: the next reader is served
only once the last one has closed the FIFO (its close is read from inotify).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import struct
import threading
import time
from pathlib import Path
from typing import Final

from confide.tee import SimulationTee

REPORT_DATA_SIZE: Final = 64
KEY_SIZE: Final = 16
#: Longest a reader may keep a served pseudo-file open before the next one is served.
READER_WAIT: Final = 10.0
_IN_CLOSE_NOWRITE: Final = 0x10
#: struct inotify_event without its name: wd, mask, cookie, len.
_EVENT: Final = struct.Struct("iIII")


class AttestationTree:
    def __init__(self, root: Path, tee: SimulationTee) -> None:
        self.root = root
        self._tee = tee
        self._report_data = bytes(REPORT_DATA_SIZE)
        self._pending = b""
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        (root / "keys").mkdir(mode=0o755, exist_ok=True)
        (root / "attestation_type").write_text("dcap")
        for name, mode in (("user_report_data", 0o666), ("quote", 0o444)):
            os.mkfifo(root / name, mode)
        os.mkfifo(root / "keys" / "_sgx_mrenclave", 0o400)
        self._report_fd = os.open(root / "user_report_data", os.O_RDONLY | os.O_NONBLOCK)

    def start(self) -> None:
        for target in (self._serve_quotes, self._serve_key):
            threading.Thread(target=target, daemon=True).start()

    def _drain(self) -> None:
        """Take what was written to ``user_report_data`` since the last quote."""
        while True:
            try:
                chunk = os.read(self._report_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        if len(self._pending) >= REPORT_DATA_SIZE:
            self._report_data = self._pending[-REPORT_DATA_SIZE:]
        self._pending = b""

    def _serve_quotes(self) -> None:
        closes = _ReaderCloses(self.root / "quote")
        while True:
            fd = os.open(self.root / "quote", os.O_WRONLY)  # blocks until a reader opens it
            try:
                self._drain()
                _write_all(fd, self._tee.get_quote(self._report_data))
            finally:
                os.close(fd)
            closes.wait_one()

    def _serve_key(self) -> None:
        key = self._tee.sealing_key()[:KEY_SIZE]
        path = self.root / "keys" / "_sgx_mrenclave"
        closes = _ReaderCloses(path)
        while True:
            fd = os.open(path, os.O_WRONLY)
            try:
                _write_all(fd, key)
            finally:
                os.close(fd)
            closes.wait_one()


class _ReaderCloses:
    """Counts closes of a FIFO by its readers (inotify ``IN_CLOSE_NOWRITE``).

    Reopening a FIFO for writing while the reader just served still holds it open
    would hand that reader a second copy after the EOF it has not read yet; the
    reader's close is therefore awaited, from the kernel's own event queue (an
    event that came before the wait is not lost).
    """

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_CLOEXEC)
        if self._fd < 0 or libc.inotify_add_watch(self._fd, bytes(path), _IN_CLOSE_NOWRITE) < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify on {path}: {os.strerror(code)}")
        self._pending = 0

    def wait_one(self) -> None:
        deadline = time.monotonic() + READER_WAIT
        while self._pending == 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return  # a reader that never closes: serve the next one anyway
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                raw = os.read(self._fd, 4096)
                offset = 0
                while offset + _EVENT.size <= len(raw):
                    _, mask, _, length = _EVENT.unpack_from(raw, offset)
                    offset += _EVENT.size + length
                    if mask & _IN_CLOSE_NOWRITE:
                        self._pending += 1
        self._pending -= 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    with contextlib.suppress(BrokenPipeError):
        while view:
            try:
                view = view[os.write(fd, view) :]
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    return
                raise
