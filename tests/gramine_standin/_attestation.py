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
the write-then-read order of one process gives the quote it asked for.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path
from typing import Final

from confide.tee import SimulationTee

REPORT_DATA_SIZE: Final = 64
KEY_SIZE: Final = 16
#: Longest a reader may keep a served pseudo-file open before the next one is served.
READER_WAIT: Final = 10.0


class AttestationTree:
    def __init__(self, root: Path, tee: SimulationTee) -> None:
        self.root = root
        self._tee = tee
        self._report_data = bytes(REPORT_DATA_SIZE)
        self._pending = b""
        #: The enclave's process (set once it is started), whose descriptors are watched.
        self.reader_pid: int | None = None
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        (root / "keys").mkdir(mode=0o755, exist_ok=True)
        (root / "attestation_type").write_text("dcap")
        for name, mode in (("user_report_data", 0o666), ("quote", 0o444)):
            os.mkfifo(root / name, mode)
        os.mkfifo(root / "keys" / "_sgx_mrenclave", 0o400)
        self._report_fd = os.open(root / "user_report_data", os.O_RDONLY | os.O_NONBLOCK)

    def start(self, reader_pid: int) -> None:
        self.reader_pid = reader_pid
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
        while True:
            fd = os.open(self.root / "quote", os.O_WRONLY)  # blocks until a reader opens it
            try:
                self._drain()
                _write_all(fd, self._tee.get_quote(self._report_data))
            finally:
                os.close(fd)
            _wait_reader_gone(self.root / "quote", self.reader_pid)

    def _serve_key(self) -> None:
        key = self._tee.sealing_key()[:KEY_SIZE]
        path = self.root / "keys" / "_sgx_mrenclave"
        while True:
            fd = os.open(path, os.O_WRONLY)
            try:
                _write_all(fd, key)
            finally:
                os.close(fd)
            _wait_reader_gone(path, self.reader_pid)


def _wait_reader_gone(path: Path, pid: int | None) -> None:
    """Wait until the enclave process has closed the FIFO just served (at most READER_WAIT).

    Reopening a FIFO for writing while its last reader still holds it open would hand
    that reader a second copy after the EOF it has not read yet, and a probe that
    opens it would look like a writer to the next reader: so the enclave's open
    descriptors are looked at instead (Gramine's pseudo-files are per process).
    """
    if pid is None:
        return
    deadline = time.monotonic() + READER_WAIT
    target = str(path)
    while time.monotonic() < deadline:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return  # the enclave is gone
        held = False
        for fd in fds:
            try:
                held = os.readlink(f"/proc/{pid}/fd/{fd}") == target
            except OSError:
                continue
            if held:
                break
        if not held:
            return
        time.sleep(0.001)


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
