"""Intel DCAP quotes: SGX v3, TDX v4 and v5, parsed into frozen models and back.

Parsing is structural and byte-exact: ``Quote.from_bytes(raw).to_bytes() == raw``
for every quote the parser accepts. Reserved fields are kept so nothing is lost.
Semantic checks (signatures, vendor ID, TCB) belong to the verifier.

Example::

    >>> from pathlib import Path
    >>> raw = Path("../shared/vectors/sgx-dcapqvl-00A067110000/quote.bin").read_bytes()
    >>> quote = Quote.from_bytes(raw)  # doctest: +SKIP
    >>> quote.body.mr_enclave.hex()[:8]  # doctest: +SKIP
    '33d8736d'
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Final

from confide.errors import FormatError

#: Largest quote accepted; real quotes are about 5 KiB, mostly the PEM chain.
MAX_QUOTE_SIZE: Final = 64 * 1024
TEE_TYPE_SGX: Final = 0x00000000
TEE_TYPE_TDX: Final = 0x00000081
ATTESTATION_KEY_TYPE_ECDSA_P256: Final = 2
INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

HEADER_SIZE: Final = 48
SGX_REPORT_SIZE: Final = 384
TD_REPORT10_SIZE: Final = 584
TD_REPORT15_SIZE: Final = 648
BODY_TYPE_SGX: Final = 1
BODY_TYPE_TD10: Final = 2
BODY_TYPE_TD15: Final = 3
CERT_TYPE_PCK_CHAIN: Final = 5
CERT_TYPE_QE_REPORT: Final = 6
SUPPORTED_VERSIONS: Final = (3, 4, 5)
_SGX_REPORT: Final = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")


def _fail(check: str, detail: str) -> FormatError:
    return FormatError("quote.format", f"malformed quote: {check}", detail=detail)


class _Reader:
    """Bounded cursor over bytes; every read checks the remaining length."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _fail(what, f"needs {n} bytes at offset {self.pos}, {self.end - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def remaining(self) -> int:
        return self.end - self.pos


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    @classmethod
    def parse(cls, r: _Reader) -> QuoteHeader:
        version = r.u16("header.version")
        if version not in SUPPORTED_VERSIONS:
            raise FormatError(
                "quote.version",
                "unsupported quote version",
                observed=version,
                expected="3 (SGX), 4 or 5 (TDX)",
            )
        key_type = r.u16("header.attestation_key_type")
        if key_type != ATTESTATION_KEY_TYPE_ECDSA_P256:
            raise FormatError(
                "quote.key_type",
                "unsupported attestation key type",
                observed=key_type,
                expected=f"{ATTESTATION_KEY_TYPE_ECDSA_P256} (ECDSA P-256)",
            )
        tee_type = r.u32("header.tee_type")
        if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
            raise FormatError(
                "quote.tee_type", "unknown TEE type", observed=hex(tee_type), expected="0x0 or 0x81"
            )
        if version == 3 and tee_type != TEE_TYPE_SGX:
            raise FormatError(
                "quote.tee_type", "a v3 quote must be SGX", observed=hex(tee_type), expected="0x0"
            )
        return cls(
            version=version,
            attestation_key_type=key_type,
            tee_type=tee_type,
            qe_svn=r.u16("header.qe_svn"),
            pce_svn=r.u16("header.pce_svn"),
            qe_vendor_id=r.take(16, "header.qe_vendor_id"),
            user_data=r.take(20, "header.user_data"),
        )

    def to_bytes(self) -> bytes:
        return (
            struct.pack(
                "<HHIHH",
                self.version,
                self.attestation_key_type,
                self.tee_type,
                self.qe_svn,
                self.pce_svn,
            )
            + self.qe_vendor_id
            + self.user_data
        )


@dataclass(frozen=True, slots=True)
class SgxReportBody:
    """An SGX enclave report (the quote body of SGX quotes, and the QE report)."""

    SIZE: ClassVar[int] = SGX_REPORT_SIZE

    cpu_svn: bytes
    misc_select: int
    reserved1: bytes
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    reserved2: bytes
    mr_signer: bytes
    reserved3: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    reserved4: bytes
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.DEBUG (bit 1 of the flags)."""
        return bool(self.attributes[0] & 0x02)

    @classmethod
    def parse(cls, r: _Reader) -> SgxReportBody:
        raw = r.take(SGX_REPORT_SIZE, "report")
        return cls(*_SGX_REPORT.unpack(raw))

    @classmethod
    def from_bytes(cls, data: bytes) -> SgxReportBody:
        if len(data) != SGX_REPORT_SIZE:
            raise _fail("report", f"an SGX report is {SGX_REPORT_SIZE} bytes, got {len(data)}")
        return cls.parse(_Reader(data))

    def to_bytes(self) -> bytes:
        return _SGX_REPORT.pack(
            self.cpu_svn,
            self.misc_select,
            self.reserved1,
            self.isv_ext_prod_id,
            self.attributes,
            self.mr_enclave,
            self.reserved2,
            self.mr_signer,
            self.reserved3,
            self.config_id,
            self.isv_prod_id,
            self.isv_svn,
            self.config_svn,
            self.reserved4,
            self.isv_family_id,
            self.report_data,
        )


@dataclass(frozen=True, slots=True)
class TdReportBody:
    """A TD report: TDX 1.0 (584 bytes) or, with the last two fields, TDX 1.5 (648 bytes)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    #: TDX 1.5 only (quote v5, body type 3); ``None`` for TDX 1.0.
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    @property
    def debug(self) -> bool:
        """TD_ATTRIBUTES.TUD.DEBUG (bit 0)."""
        return bool(self.td_attributes[0] & 0x01)

    @property
    def is_td15(self) -> bool:
        return self.tee_tcb_svn2 is not None

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @classmethod
    def parse(cls, r: _Reader, *, td15: bool) -> TdReportBody:
        fields: dict[str, bytes] = {}
        for name, size in (
            ("tee_tcb_svn", 16),
            ("mr_seam", 48),
            ("mr_signer_seam", 48),
            ("seam_attributes", 8),
            ("td_attributes", 8),
            ("xfam", 8),
            ("mr_td", 48),
            ("mr_config_id", 48),
            ("mr_owner", 48),
            ("mr_owner_config", 48),
            ("rtmr0", 48),
            ("rtmr1", 48),
            ("rtmr2", 48),
            ("rtmr3", 48),
            ("report_data", 64),
        ):
            fields[name] = r.take(size, f"td_report.{name}")
        if td15:
            return cls(
                **fields,
                tee_tcb_svn2=r.take(16, "td_report.tee_tcb_svn2"),
                mr_service_td=r.take(48, "td_report.mr_service_td"),
            )
        return cls(**fields)

    def to_bytes(self) -> bytes:
        out = b"".join(
            (
                self.tee_tcb_svn,
                self.mr_seam,
                self.mr_signer_seam,
                self.seam_attributes,
                self.td_attributes,
                self.xfam,
                self.mr_td,
                self.mr_config_id,
                self.mr_owner,
                self.mr_owner_config,
                self.rtmr0,
                self.rtmr1,
                self.rtmr2,
                self.rtmr3,
                self.report_data,
            )
        )
        if self.tee_tcb_svn2 is not None and self.mr_service_td is not None:
            out += self.tee_tcb_svn2 + self.mr_service_td
        return out


@dataclass(frozen=True, slots=True)
class CertificationData:
    """What the quoting enclave signed with the PCK key, and the PCK chain itself.

    For v3 quotes the QE report and chain sit directly in the signature data;
    for v4/v5 they are wrapped in certification data type 6. ``wrapped`` records
    which, so serialization is byte-exact.
    """

    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_cert_chain: bytes
    wrapped: bool
    #: The QE report exactly as parsed; set only by the parser (not an ``__init__``
    #: argument), so a model built or changed with ``dataclasses.replace`` never
    #: carries stale bytes that differ from its fields.
    qe_report_raw: bytes = field(default=b"", init=False, compare=False, repr=False)

    @property
    def qe_report_bytes(self) -> bytes:
        """The QE report as signed by the PCK key."""
        return self.qe_report_raw or self.qe_report.to_bytes()


@dataclass(frozen=True, slots=True)
class Quote:
    """A parsed DCAP quote (ECDSA P-256 attestation key, PCK chain in the quote)."""

    header: QuoteHeader
    body: SgxReportBody | TdReportBody
    #: v5 only: the body type (1 SGX, 2 TD 1.0, 3 TD 1.5); ``None`` for v3/v4.
    body_type: int | None
    signature: bytes
    attestation_key: bytes
    certification: CertificationData
    #: Zero bytes after the signature data (fixed-size quote buffers).
    padding: int = 0
    #: The header and body exactly as parsed (what the attestation key signed); set
    #: only by the parser, like ``CertificationData.qe_report_raw``.
    raw_signed: bytes = field(default=b"", init=False, compare=False, repr=False)

    @property
    def is_tdx(self) -> bool:
        return self.header.tee_type == TEE_TYPE_TDX

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    @property
    def signed_bytes(self) -> bytes:
        """The bytes the attestation key signs: header and body (with v5 body descriptor)."""
        if self.raw_signed:
            return self.raw_signed
        out = self.header.to_bytes()
        body = self.body.to_bytes()
        if self.body_type is not None:
            out += struct.pack("<HI", self.body_type, len(body))
        return out + body

    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        """Parse a quote; raise :class:`FormatError` on anything unexpected, trailing bytes too."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _fail("input", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_QUOTE_SIZE:
            raise _fail("size", f"{len(data)} bytes is over the limit of {MAX_QUOTE_SIZE}")
        r = _Reader(data)
        header = QuoteHeader.parse(r)
        body: SgxReportBody | TdReportBody
        body_type: int | None = None
        if header.version == 3:
            body = SgxReportBody.parse(r)
        elif header.version == 4:
            if header.tee_type == TEE_TYPE_TDX:
                body = TdReportBody.parse(r, td15=False)
            else:
                body = SgxReportBody.parse(r)
        else:
            body_type = r.u16("body.type")
            size = r.u32("body.size")
            expected_size = {
                BODY_TYPE_SGX: SGX_REPORT_SIZE,
                BODY_TYPE_TD10: TD_REPORT10_SIZE,
                BODY_TYPE_TD15: TD_REPORT15_SIZE,
            }.get(body_type)
            if expected_size is None:
                raise FormatError(
                    "quote.format", "unknown v5 body type", observed=body_type, expected="1, 2 or 3"
                )
            if size != expected_size:
                raise _fail(
                    "body.size", f"body type {body_type} is {expected_size} bytes, got {size}"
                )
            if (body_type == BODY_TYPE_SGX) != (header.tee_type == TEE_TYPE_SGX):
                raise _fail(
                    "body.type", f"body type {body_type} does not fit TEE type {header.tee_type:#x}"
                )
            if body_type == BODY_TYPE_SGX:
                body = SgxReportBody.parse(r)
            else:
                body = TdReportBody.parse(r, td15=body_type == BODY_TYPE_TD15)
        signed_end = r.pos
        sig_len = r.u32("signature_data.length")
        if sig_len > r.remaining():
            raise _fail(
                "signature_data.length", f"declares {sig_len} bytes but {r.remaining()} follow"
            )
        # TDX quote buffers are often handed out at a fixed size: zero padding
        # after the signature data is kept (for a byte-exact round trip) but
        # anything else after it is rejected.
        padding = data[r.pos + sig_len :]
        if padding.count(0) != len(padding):
            raise FormatError(
                "quote.trailing",
                "malformed quote: non-zero bytes after the signature data",
                observed=f"{len(padding)} trailing bytes",
                expected="none, or zero padding",
            )
        r.end = r.pos + sig_len
        signature = r.take(64, "signature_data.quote_signature")
        attestation_key = r.take(64, "signature_data.attestation_key")
        if header.version == 3:
            certification = _parse_qe_certification(r, wrapped=False)
        else:
            cert_type = r.u16("certification_data.type")
            if cert_type != CERT_TYPE_QE_REPORT:
                raise FormatError(
                    "quote.cert_type",
                    "unsupported outer certification data type",
                    observed=cert_type,
                    expected=CERT_TYPE_QE_REPORT,
                )
            size = r.u32("certification_data.size")
            if size != r.remaining():
                raise _fail("certification_data.size", f"declares {size}, {r.remaining()} follow")
            certification = _parse_qe_certification(r, wrapped=True)
        if r.remaining():
            raise _fail("trailing", f"{r.remaining()} bytes after the certification data")
        quote = cls(
            header=header,
            body=body,
            body_type=body_type,
            signature=signature,
            attestation_key=attestation_key,
            certification=certification,
            padding=len(padding),
        )
        object.__setattr__(quote, "raw_signed", data[:signed_end])
        return quote

    def to_bytes(self) -> bytes:
        """Serialize; the exact inverse of :meth:`from_bytes`."""
        c = self.certification
        qe = (
            c.qe_report.to_bytes()
            + c.qe_report_signature
            + struct.pack("<H", len(c.qe_auth_data))
            + c.qe_auth_data
            + struct.pack("<HI", CERT_TYPE_PCK_CHAIN, len(c.pck_cert_chain))
            + c.pck_cert_chain
        )
        if c.wrapped:
            qe = struct.pack("<HI", CERT_TYPE_QE_REPORT, len(qe)) + qe
        sig_data = self.signature + self.attestation_key + qe
        return self.signed_bytes + struct.pack("<I", len(sig_data)) + sig_data + bytes(self.padding)


def _parse_qe_certification(r: _Reader, *, wrapped: bool) -> CertificationData:
    start = r.pos
    qe_report = SgxReportBody.parse(r)
    qe_report_raw = r.data[start : r.pos]
    qe_report_signature = r.take(64, "qe_report_signature")
    auth_len = r.u16("qe_auth_data.size")
    qe_auth_data = r.take(auth_len, "qe_auth_data")
    cert_type = r.u16("pck_cert_data.type")
    if cert_type != CERT_TYPE_PCK_CHAIN:
        raise FormatError(
            "quote.cert_type",
            "unsupported certification data type (only a PCK chain in the quote is supported)",
            observed=cert_type,
            expected=CERT_TYPE_PCK_CHAIN,
        )
    size = r.u32("pck_cert_data.size")
    chain = r.take(size, "pck_cert_data")
    certification = CertificationData(
        qe_report=qe_report,
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        pck_cert_chain=chain,
        wrapped=wrapped,
    )
    object.__setattr__(certification, "qe_report_raw", qe_report_raw)
    return certification
