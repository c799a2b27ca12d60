"""Intel TDX through the kernel's configfs-tsm report interface (Linux 6.7 and later).

What the kernel documents (``Documentation/ABI/testing/configfs-tsm``):

* ``mkdir /sys/kernel/config/tsm/report/<name>`` creates a report entry; the
  kernel fills it with its attributes, ``rmdir`` removes it;
* ``inblob`` (write only): up to 64 bytes of caller data (TDX REPORTDATA);
* ``outblob`` (read only): the report made from ``inblob``, in the format
  ``provider`` names: ``tdx_guest`` is a DCAP TDX quote;
* ``generation`` (read only): incremented on every write to ``inblob`` or any
  option, so a reader detects a concurrent writer by checking that the count
  of writes between its reading ``generation`` and its reading ``outblob`` is
  its own.

:class:`TdxTee` does both things the document offers against concurrent
writers: one fresh entry per quote (removed afterwards) and the generation
check. All file access goes through a :class:`TsmFilesystem`, so tests give it
a user-space stand-in with the kernel's semantics (configfs cannot be mounted
without the kernel module).

RTMR3 is extended from the guest through the TDX guest driver's measurement
registers (``Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest``,
Linux 6.16 and later): ``/sys/class/misc/tdx_guest/measurements/rtmr3:sha384``
reads as the register's 48 bytes, and a write of exactly 48 bytes at offset 0
extends it (``TDG.MR.RTMR.EXTEND``; a partial write is EINVAL).
:meth:`TdxTee.extend_launch` does it once, before the runtime's first quote
(ADR 0020): it requires RTMR3 to be still zero (a fresh TD: one launch per TD
boot), writes the launch event's digest and reads the register back, which must
be the event log's replay. :func:`~confide.tee.select_tee` always does it.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
from pathlib import Path
from typing import Final, Protocol

from confide.attestation import Quote, TdReportBody, TdxEventLog
from confide.errors import FormatError, TsmError

from ._base import REPORT_DATA_SIZE, TeeKind, check_report_data

#: Where configfs-tsm's report entries live.
DEFAULT_TSM_REPORT_ROOT: Final = Path("/sys/kernel/config/tsm/report")
#: The ``provider`` of a TDX guest (quotes in Intel's DCAP TDX format).
TDX_PROVIDER: Final = "tdx_guest"
#: Largest quote read back; TDX quotes are about 5 KiB, kernels pad to at most 16 KiB.
MAX_OUTBLOB_READ: Final = 64 * 1024
#: Largest ``provider`` or ``generation`` value read.
_SMALL_ATTRIBUTE_MAX: Final = 64
#: Prefix of the entries this process creates (pid and a random suffix follow).
ENTRY_PREFIX: Final = "confide-"
#: The TDX guest driver's measurement registers (Linux 6.16 and later).
DEFAULT_TDX_MEASUREMENTS: Final = Path("/sys/class/misc/tdx_guest/measurements")
#: RTMR3's file there: read the register, write 48 bytes to extend it.
RTMR3_FILE: Final = "rtmr3:sha384"
_RTMR_SIZE: Final = 48


class TsmFilesystem(Protocol):
    """The four file operations :class:`TdxTee` needs; errors are :class:`OSError`."""

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def read(self, path: Path, limit: int) -> bytes: ...

    def write(self, path: Path, data: bytes) -> None: ...

    def is_dir(self, path: Path) -> bool: ...


class OsTsmFilesystem:
    """The real file system: one ``write(2)`` per attribute, reads bounded by ``limit``."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path, limit: int) -> bytes:
        with path.open("rb", buffering=0) as f:
            return f.read(limit)

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(errno.EIO, f"short write: {written} of {len(data)} bytes")

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()


class TdxTee:
    """The :class:`~confide.tee.Tee` of a TDX guest: quotes from configfs-tsm.

    Construction creates and removes one entry to check the interface is there
    and its provider is ``tdx_guest``, raising :class:`~confide.errors.TsmError`
    (``tsm.absent``, ``tsm.provider``) otherwise. ``measurement`` is MRTD (48
    bytes). TDX has no sealing key: :meth:`sealing_key` raises ``tdx.no_sealing_key``.
    """

    __slots__ = (
        "_event_log",
        "_fs",
        "_lock",
        "_measurement",
        "_measurements",
        "_registers",
        "_root",
    )

    def __init__(
        self,
        root: Path = DEFAULT_TSM_REPORT_ROOT,
        *,
        filesystem: TsmFilesystem | None = None,
        measurements: Path = DEFAULT_TDX_MEASUREMENTS,
        registers: TsmFilesystem | None = None,
    ) -> None:
        self._root = root
        self._fs: TsmFilesystem = filesystem if filesystem is not None else OsTsmFilesystem()
        self._measurements = measurements
        self._registers: TsmFilesystem = registers if registers is not None else OsTsmFilesystem()
        self._lock = threading.Lock()
        self._measurement: bytes | None = None
        self._event_log: TdxEventLog | None = None
        if not self._fs.is_dir(root):
            raise TsmError(
                "tsm.absent",
                "the configfs-tsm report interface",
                observed=f"no folder {root}",
                expected="a folder (a TDX guest on Linux 6.7 or later)",
                hint="run in a TDX guest with configfs mounted at /sys/kernel/config",
            )
        with self._lock:
            entry = self._new_entry()
            try:
                self._check_provider(entry)
            finally:
                self._remove(entry, failing=False)

    @property
    def kind(self) -> TeeKind:
        return TeeKind.TDX

    @property
    def root(self) -> Path:
        return self._root

    @property
    def measurement(self) -> bytes:
        """MRTD, parsed out of a quote (taken once and kept)."""
        if self._measurement is None:
            body = self._quote(bytes(REPORT_DATA_SIZE)).body
            if not isinstance(body, TdReportBody):
                raise TsmError("tsm.quote", "configfs-tsm returned a quote without a TD report")
            self._measurement = body.mr_td
        return self._measurement

    def get_quote(self, report_data: bytes) -> bytes:
        """A DCAP TDX quote binding ``report_data`` (exactly 64 bytes)."""
        data = check_report_data(report_data)
        quote = self._quote(data)
        if quote.report_data != data:
            raise TsmError(
                "tsm.report_data",
                "the quote binds other report data than was written",
                observed=quote.report_data.hex(),
                expected=data.hex(),
            )
        return quote.to_bytes()

    @property
    def event_log(self) -> TdxEventLog | None:
        """What this TEE extended into RTMR3 (``None`` before :meth:`extend_launch`)."""
        return self._event_log

    def extend_launch(self, launch_measurement: bytes) -> TdxEventLog:
        """Extend RTMR3 with the launch event of ``launch_measurement``, once (ADR 0020).

        Raises :class:`~confide.errors.TsmError`: ``tdx.measurements`` (no
        measurement registers: a kernel before 6.16), ``tdx.rtmr3_not_fresh`` (RTMR3
        is not zero: something was extended before, or this is a second launch in the
        TD), ``tdx.rtmr3_io`` and ``tdx.rtmr3_extend`` (the register after the write is
        not the event log's replay: another writer, or no extend happened).
        """
        log = TdxEventLog.for_launch(launch_measurement)
        path = self._measurements / RTMR3_FILE
        with self._lock:
            if self._event_log is not None:
                raise TsmError("tdx.rtmr3_not_fresh", "this TEE already extended its launch")
            if not self._registers.is_dir(self._measurements):
                raise TsmError(
                    "tdx.measurements",
                    "the TDX guest's measurement registers",
                    observed=f"no folder {self._measurements}",
                    expected="a folder (the tdx_guest driver of Linux 6.16 or later)",
                    hint="run a guest kernel with TSM measurements (6.16 or later)",
                )
            before = self._read_rtmr(path)
            if before != bytes(_RTMR_SIZE):
                raise TsmError(
                    "tdx.rtmr3_not_fresh",
                    "RTMR3 was extended before this launch (one launch per TD boot)",
                    observed=before.hex(),
                    expected=bytes(_RTMR_SIZE).hex(),
                    hint="boot a new TD for this launch",
                )
            try:
                self._registers.write(path, log.events[0].digest)
            except OSError as exc:
                raise TsmError(
                    "tdx.rtmr3_io", f"cannot extend {path}: {exc.strerror or exc}"
                ) from exc
            after = self._read_rtmr(path)
            if after != log.replay():
                raise TsmError(
                    "tdx.rtmr3_extend",
                    "RTMR3 after extending the launch event",
                    observed=after.hex(),
                    expected=log.replay().hex(),
                    hint="another process extends RTMR3 in this TD; find it",
                )
            self._event_log = log
        return log

    def _read_rtmr(self, path: Path) -> bytes:
        try:
            raw = self._registers.read(path, _RTMR_SIZE + 1)
        except OSError as exc:
            raise TsmError("tdx.rtmr3_io", f"cannot read {path}: {exc.strerror or exc}") from exc
        if len(raw) != _RTMR_SIZE:
            raise TsmError(
                "tdx.rtmr3_io",
                f"the register {path}",
                observed=f"{len(raw)} bytes",
                expected=f"{_RTMR_SIZE} bytes",
            )
        return raw

    def sealing_key(self) -> bytes:
        """TDX has no sealing key (see ADR 0020): always raises."""
        raise TsmError(
            "tdx.no_sealing_key",
            "a TDX guest has no sealing key",
            hint="state does not survive a restart on TDX; the owner configures the app again",
        )

    # -- the protocol ---------------------------------------------------------

    def _quote(self, report_data: bytes) -> Quote:
        with self._lock:
            entry = self._new_entry()
            failing = True
            try:
                self._check_provider(entry)
                before = self._generation(entry)
                self._write(entry / "inblob", report_data)
                raw = self._read(entry / "outblob", MAX_OUTBLOB_READ + 1)
                after = self._generation(entry)
                failing = False
            finally:
                self._remove(entry, failing=failing)
        if after != before + 1:
            # Someone else wrote to our entry between our write and our read: the
            # quote may bind their data, or ours with their options. Never use it.
            raise TsmError(
                "tsm.generation",
                f"writes to {entry.name} while the quote was made (a concurrent writer)",
                observed=f"generation {after}",
                expected=f"generation {before + 1}",
                hint="another process writes to this process's configfs-tsm entry; find it",
            )
        if len(raw) > MAX_OUTBLOB_READ:
            raise TsmError(
                "tsm.outblob",
                "configfs-tsm returned an oversized report",
                observed=f"over {MAX_OUTBLOB_READ} bytes",
                expected=f"at most {MAX_OUTBLOB_READ}",
            )
        try:
            quote = Quote.from_bytes(raw)
        except FormatError as exc:
            raise TsmError(
                "tsm.outblob", f"configfs-tsm returned a malformed quote: {exc}"
            ) from exc
        if not quote.is_tdx:
            raise TsmError(
                "tsm.outblob",
                "configfs-tsm returned a quote that is not a TDX quote",
                observed=f"TEE type {quote.header.tee_type:#x}",
                expected="TEE type 0x81 (TDX)",
            )
        return quote

    def _new_entry(self) -> Path:
        entry = self._root / f"{ENTRY_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        try:
            self._fs.mkdir(entry)
        except OSError as exc:
            raise TsmError(
                "tsm.entry",
                f"cannot create the report entry {entry}: {exc.strerror or exc}",
                hint="creating configfs-tsm entries needs root (CAP_SYS_ADMIN) in the guest",
            ) from exc
        return entry

    def _remove(self, entry: Path, *, failing: bool) -> None:
        try:
            self._fs.rmdir(entry)
        except OSError as exc:
            if not failing:
                raise TsmError(
                    "tsm.entry",
                    f"cannot remove the report entry {entry}: {exc.strerror or exc}",
                ) from exc

    def _check_provider(self, entry: Path) -> None:
        raw = self._read(entry / "provider", _SMALL_ATTRIBUTE_MAX)
        provider = raw.decode("ascii", "replace").strip()
        if provider != TDX_PROVIDER:
            raise TsmError(
                "tsm.provider",
                "the configfs-tsm provider",
                observed=repr(provider),
                expected=repr(TDX_PROVIDER),
                hint="this guest is not a TDX trust domain (e.g. sev_guest is AMD SEV-SNP)",
            )

    def _generation(self, entry: Path) -> int:
        raw = self._read(entry / "generation", _SMALL_ATTRIBUTE_MAX)
        text = raw.decode("ascii", "replace").strip()
        if not text.isdigit() or len(text) > 20:
            raise TsmError(
                "tsm.generation_format",
                f"the generation of {entry.name}",
                observed=repr(text),
                expected="a decimal count",
            )
        return int(text)

    def _read(self, path: Path, limit: int) -> bytes:
        try:
            return self._fs.read(path, limit)
        except OSError as exc:
            raise TsmError("tsm.io", f"cannot read {path}: {exc.strerror or exc}") from exc

    def _write(self, path: Path, data: bytes) -> None:
        try:
            self._fs.write(path, data)
        except OSError as exc:
            raise TsmError("tsm.io", f"cannot write {path}: {exc.strerror or exc}") from exc
