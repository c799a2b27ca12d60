"""The interface every TEE backend implements, and what the backends share."""

from __future__ import annotations

import enum
from typing import Final, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from confide.errors import TeeError

#: Bytes of caller data bound into a quote (the SGX/TDX REPORTDATA field).
REPORT_DATA_SIZE: Final = 64
#: Bytes of a sealing key.
SEALING_KEY_SIZE: Final = 32
#: HKDF ``info`` label of sealing keys; a new version of the label rotates every key.
SEALING_KEY_LABEL: Final = b"confide/tee/sealing-key/v1"


class TeeKind(enum.StrEnum):
    """Which kind of TEE produced a quote or a key."""

    SGX = "sgx"
    SIMULATION = "simulation"
    TDX = "tdx"


@runtime_checkable
class Tee(Protocol):
    """A trusted execution environment as the enclave runtime sees it.

    ``get_quote`` binds exactly 64 bytes of caller data into a DCAP quote;
    ``sealing_key`` is a 32-byte key only this enclave measurement on this
    platform can derive; ``measurement`` is the enclave's MRENCLAVE.
    """

    @property
    def kind(self) -> TeeKind: ...

    @property
    def measurement(self) -> bytes: ...

    def get_quote(self, report_data: bytes) -> bytes: ...

    def sealing_key(self) -> bytes: ...


def check_report_data(report_data: bytes) -> bytes:
    """Return ``report_data`` as bytes, or raise :class:`TeeError` unless it is 64 bytes."""
    if not isinstance(report_data, bytes | bytearray | memoryview):
        raise TeeError(f"report data must be bytes, got {type(report_data).__name__}")
    data = bytes(report_data)
    if len(data) != REPORT_DATA_SIZE:
        raise TeeError(f"report data must be exactly {REPORT_DATA_SIZE} bytes, got {len(data)}")
    return data


def derive_key(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of ``secret`` with ``info``, :data:`SEALING_KEY_SIZE` bytes."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SEALING_KEY_SIZE, salt=None, info=info)
    return hkdf.derive(secret)
