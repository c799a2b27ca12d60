"""The Intel SGX extensions of a PCK certificate (OID 1.2.840.113741.1.13.1).

A minimal, bounded DER reader: the extension is a SEQUENCE of
``SEQUENCE { OBJECT IDENTIFIER, value }`` pairs, some nested. Only definite
lengths are accepted (DER), every length is checked against its container, and
anything unexpected raises :class:`FormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography import x509

from confide.errors import FormatError

from ._collateral import X509_ERRORS

SGX_EXTENSION_OID: Final = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_BASE: Final = "1.2.840.113741.1.13.1"
_MAX_DEPTH: Final = 4

_TAG_BOOLEAN: Final = 0x01
_TAG_INTEGER: Final = 0x02
_TAG_OCTET_STRING: Final = 0x04
_TAG_OID: Final = 0x06
_TAG_ENUMERATED: Final = 0x0A
_TAG_SEQUENCE: Final = 0x30


def _fail(detail: str) -> FormatError:
    return FormatError(
        "pck.extension", "malformed SGX extension in the PCK certificate", detail=detail
    )


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Return (tag, value_start, value_end) of the element at ``pos``."""
    if pos + 2 > end:
        raise _fail("truncated element")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 3 or pos + n > end:
            raise _fail("bad length encoding")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise _fail("element longer than its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, vs, ve = _tlv(data, pos, end)
        out.append((tag, vs, ve))
        pos = ve
    return out


def _oid(raw: bytes) -> str:
    if not raw:
        raise _fail("empty OID")
    first = raw[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for b in raw[1:]:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    if raw[-1] & 0x80:
        raise _fail("truncated OID")
    return ".".join(str(a) for a in arcs)


def _int(tag: int, raw: bytes, expected_tag: int = _TAG_INTEGER) -> int:
    if tag != expected_tag or not raw or len(raw) > 8:
        raise _fail("bad integer")
    return int.from_bytes(raw, "big", signed=True)


def _pairs(data: bytes, start: int, end: int, depth: int) -> dict[str, tuple[int, bytes, int, int]]:
    if depth > _MAX_DEPTH:
        raise _fail("nested too deep")
    out: dict[str, tuple[int, bytes, int, int]] = {}
    for tag, vs, ve in _children(data, start, end):
        if tag != _TAG_SEQUENCE:
            raise _fail("expected a SEQUENCE of (OID, value)")
        kids = _children(data, vs, ve)
        if len(kids) != 2 or kids[0][0] != _TAG_OID:
            raise _fail("expected (OID, value)")
        oid = _oid(data[kids[0][1] : kids[0][2]])
        if oid in out:
            raise _fail(f"duplicate {oid}")
        vtag, vvs, vve = kids[1]
        out[oid] = (vtag, data[vvs:vve], vvs, vve)
    return out


@dataclass(frozen=True, slots=True)
class PckExtensions:
    """What the PCK certificate says about the platform."""

    ppid: bytes
    #: The 16 SGX TCB component SVNs (CPUSVN split by component).
    tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    #: 0 Standard, 1 Scalable, 2 Scalable with integrity.
    sgx_type: int

    @classmethod
    def from_der(cls, raw: bytes) -> PckExtensions:
        """Parse the DER value of the SGX extension."""
        tag, vs, ve = _tlv(raw, 0, len(raw))
        if tag != _TAG_SEQUENCE or ve != len(raw):
            raise _fail("the extension is not one SEQUENCE")
        top = _pairs(raw, vs, ve, 1)

        def need(oid: str) -> tuple[int, bytes, int, int]:
            if oid not in top:
                raise _fail(f"missing {oid}")
            return top[oid]

        def octets(oid: str, size: int) -> bytes:
            t, v, _, _ = need(oid)
            if t != _TAG_OCTET_STRING or len(v) != size:
                raise _fail(f"{oid} must be a {size}-byte OCTET STRING")
            return v

        t, _, tvs, tve = need(f"{_BASE}.2")
        if t != _TAG_SEQUENCE:
            raise _fail("TCB must be a SEQUENCE")
        tcb = _pairs(raw, tvs, tve, 2)
        components = []
        for i in range(1, 17):
            entry = tcb.get(f"{_BASE}.2.{i}")
            if entry is None:
                raise _fail(f"missing TCB component {i}")
            svn = _int(entry[0], entry[1])
            if not 0 <= svn <= 255:
                raise _fail(f"TCB component {i} out of range")
            components.append(svn)
        pce = tcb.get(f"{_BASE}.2.17")
        cpusvn = tcb.get(f"{_BASE}.2.18")
        if pce is None or cpusvn is None:
            raise _fail("missing PCESVN or CPUSVN")
        pce_svn = _int(pce[0], pce[1])
        if not 0 <= pce_svn <= 0xFFFF:
            raise _fail("PCESVN out of range")
        if cpusvn[0] != _TAG_OCTET_STRING or len(cpusvn[1]) != 16:
            raise _fail("CPUSVN must be a 16-byte OCTET STRING")
        st, sv, _, _ = need(f"{_BASE}.5")
        return cls(
            ppid=octets(f"{_BASE}.1", 16),
            tcb_components=tuple(components),
            pce_svn=pce_svn,
            cpu_svn=cpusvn[1],
            pce_id=octets(f"{_BASE}.3", 2),
            fmspc=octets(f"{_BASE}.4", 6),
            sgx_type=_int(st, sv, _TAG_ENUMERATED),
        )

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PckExtensions:
        try:
            ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID)
        except x509.ExtensionNotFound as exc:
            raise _fail("the PCK certificate has no SGX extension") from exc
        except X509_ERRORS as exc:
            raise _fail(f"unreadable extensions: {exc}") from exc
        value = ext.value
        if not isinstance(value, x509.UnrecognizedExtension):
            raise _fail("unexpected extension type")
        return cls.from_der(value.value)
