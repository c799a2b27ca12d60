"""Intel SGX through Gramine's ``/dev/attestation`` pseudo-files.

Inside a Gramine SGX enclave with DCAP remote attestation, writing 64 bytes to
``user_report_data`` and then reading ``quote`` yields a DCAP quote binding
those bytes; ``keys/_sgx_mrenclave`` holds the 16-byte SGX sealing key bound
to the enclave measurement (MRENCLAVE).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Final

from confide.attestation import Quote, SgxReportBody
from confide.errors import FormatError, TeeError

from ._base import (
    REPORT_DATA_SIZE,
    SEALING_KEY_LABEL,
    TeeKind,
    check_report_data,
    derive_key,
)

#: Where Gramine mounts its attestation pseudo-files.
DEFAULT_GRAMINE_ROOT: Final = Path("/dev/attestation")
#: Size of Gramine's SGX sealing keys (an EGETKEY key).
GRAMINE_KEY_SIZE: Final = 16
#: Largest quote read back; real SGX quotes are about 5 KiB.
MAX_QUOTE_READ: Final = 64 * 1024
_ATTESTATION_TYPE_MAX: Final = 64


class GramineTee:
    """The :class:`~confide.tee.Tee` of a Gramine SGX enclave using DCAP attestation.

    Construction reads ``attestation_type`` and fails with :class:`TeeError`
    unless it is ``dcap``. Quotes are serialized with a lock: Gramine's
    write-then-read of ``user_report_data`` and ``quote`` is not atomic.
    """

    __slots__ = ("_lock", "_measurement", "_root")

    def __init__(self, root: Path = DEFAULT_GRAMINE_ROOT) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._measurement: bytes | None = None
        raw = self._read("attestation_type", _ATTESTATION_TYPE_MAX)
        found = raw.decode("ascii", "replace").strip().strip("\x00")
        if found != "dcap":
            raise TeeError(
                f"Gramine attestation type is {found!r} at {root / 'attestation_type'}, "
                "expected 'dcap'",
                hint='set sgx.remote_attestation = "dcap" in the Gramine manifest',
            )

    @property
    def kind(self) -> TeeKind:
        return TeeKind.SGX

    @property
    def root(self) -> Path:
        return self._root

    @property
    def measurement(self) -> bytes:
        """MRENCLAVE, parsed out of a quote (taken once and kept)."""
        if self._measurement is None:
            # Any report data gives the same MRENCLAVE; the binding is not checked here.
            body = self._quote(bytes(REPORT_DATA_SIZE)).body
            if not isinstance(body, SgxReportBody):
                raise TeeError("Gramine returned a quote that is not an SGX quote")
            self._measurement = body.mr_enclave
        return self._measurement

    def get_quote(self, report_data: bytes) -> bytes:
        """A DCAP quote binding ``report_data`` (exactly 64 bytes)."""
        data = check_report_data(report_data)
        quote = self._quote(data)
        if quote.report_data != data:
            # Another writer raced us on user_report_data: never hand out a quote
            # that binds something other than what the caller asked for.
            raise TeeError(
                "the quote Gramine returned binds other report data than was written; "
                "is another process using /dev/attestation concurrently?"
            )
        return quote.to_bytes()

    def sealing_key(self) -> bytes:
        """32 bytes: HKDF-SHA256 of Gramine's MRENCLAVE-bound SGX sealing key."""
        key = self._read("keys/_sgx_mrenclave", GRAMINE_KEY_SIZE + 1)
        if len(key) != GRAMINE_KEY_SIZE:
            raise TeeError(
                f"Gramine sealing key {self._root / 'keys/_sgx_mrenclave'} is {len(key)} bytes, "
                f"expected {GRAMINE_KEY_SIZE}"
            )
        return derive_key(key, SEALING_KEY_LABEL)

    def _quote(self, report_data: bytes) -> Quote:
        with self._lock:
            self._write("user_report_data", report_data)
            raw = self._read("quote", MAX_QUOTE_READ + 1)
        if len(raw) > MAX_QUOTE_READ:
            raise TeeError(f"Gramine returned a quote over {MAX_QUOTE_READ} bytes")
        try:
            return Quote.from_bytes(raw)
        except FormatError as exc:
            raise TeeError(f"Gramine returned a malformed quote: {exc}") from exc

    def _read(self, name: str, limit: int) -> bytes:
        path = self._root / name
        try:
            with path.open("rb") as f:
                return f.read(limit)
        except OSError as exc:
            raise TeeError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def _write(self, name: str, data: bytes) -> None:
        path = self._root / name
        try:
            with path.open("wb") as f:
                f.write(data)
        except OSError as exc:
            raise TeeError(f"cannot write {path}: {exc.strerror or exc}") from exc
