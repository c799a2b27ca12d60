"""A minimal DER encoder (and reader) for the simulated PCK certificates and CRLs.

Only what the SGX extension (OID 1.2.840.113741.1.13.1) needs: OBJECT
IDENTIFIER, INTEGER, OCTET STRING, ENUMERATED and SEQUENCE, in definite
lengths. The layout follows Intel's PCK certificate profile, so the result
parses with :meth:`confide.attestation.PckExtensions.from_der` and with other
DCAP verifiers. :func:`der_children` reads the elements of one SEQUENCE back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from confide.attestation import SGX_EXTENSION_OID

SGX_EXTENSION_BASE: Final = SGX_EXTENSION_OID.dotted_string

_TAG_INTEGER: Final = 0x02
_TAG_OCTET_STRING: Final = 0x04
_TAG_OID: Final = 0x06
_TAG_ENUMERATED: Final = 0x0A
TAG_SEQUENCE: Final = 0x30
TAG_BIT_STRING: Final = 0x03
TAG_UTC_TIME: Final = 0x17
TAG_GENERALIZED_TIME: Final = 0x18


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(_TAG_OID, bytes(out))


def _int(value: int, tag: int = _TAG_INTEGER) -> bytes:
    # Minimal two's complement: one leading zero byte when the top bit is set.
    size = value.bit_length() // 8 + 1
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def _pair(oid: str, value: bytes) -> bytes:
    return tlv(TAG_SEQUENCE, _oid(oid) + value)


def encode_sgx_extension(
    *,
    ppid: bytes,
    tcb_components: Sequence[int],
    pce_svn: int,
    cpu_svn: bytes,
    pce_id: bytes,
    fmspc: bytes,
    sgx_type: int,
) -> bytes:
    """The DER value of the SGX extension, laid out as in Intel's PCK certificates.

    ``SEQUENCE { {.1, PPID}, {.2, TCB SEQUENCE {{.2.1..16 INTEGER}, {.2.17
    PCESVN}, {.2.18 CPUSVN}}}, {.3, PCE-ID}, {.4, FMSPC}, {.5, SGX type} }``.
    """
    sizes = {"ppid": (ppid, 16), "cpu_svn": (cpu_svn, 16), "pce_id": (pce_id, 2)}
    sizes["fmspc"] = (fmspc, 6)
    for name, (value, size) in sizes.items():
        if len(value) != size:
            raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
    if len(tcb_components) != 16 or not all(0 <= c <= 255 for c in tcb_components):
        raise ValueError("tcb_components must be 16 SVNs in [0, 255]")
    if not 0 <= pce_svn <= 0xFFFF or not 0 <= sgx_type <= 2:
        raise ValueError("pce_svn must be in [0, 65535] and sgx_type in [0, 2]")
    base = SGX_EXTENSION_BASE
    tcb = b"".join(_pair(f"{base}.2.{i}", _int(svn)) for i, svn in enumerate(tcb_components, 1))
    tcb += _pair(f"{base}.2.17", _int(pce_svn))
    tcb += _pair(f"{base}.2.18", tlv(_TAG_OCTET_STRING, cpu_svn))
    body = b"".join(
        (
            _pair(f"{base}.1", tlv(_TAG_OCTET_STRING, ppid)),
            _pair(f"{base}.2", tlv(TAG_SEQUENCE, tcb)),
            _pair(f"{base}.3", tlv(_TAG_OCTET_STRING, pce_id)),
            _pair(f"{base}.4", tlv(_TAG_OCTET_STRING, fmspc)),
            _pair(f"{base}.5", _int(sgx_type, _TAG_ENUMERATED)),
        )
    )
    return tlv(TAG_SEQUENCE, body)


def der_element(der: bytes, pos: int) -> tuple[int, int]:
    """Where the value of the DER element at ``pos`` starts, and where the element ends."""
    size, start = der[pos + 1], pos + 2
    if size & 0x80:
        count = size & 0x7F
        size, start = int.from_bytes(der[start : start + count], "big"), start + count
    return start, start + size


def der_children(der: bytes) -> list[bytes]:
    """The encoded elements (tag, length and value) inside one DER SEQUENCE."""
    pos, end = der_element(der, 0)
    out = []
    while pos < end:
        _, nxt = der_element(der, pos)
        out.append(der[pos:nxt])
        pos = nxt
    return out
