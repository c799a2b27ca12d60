"""Verification collateral: CRLs, issuer chains, TCB info and QE identity.

:class:`Collateral` loads and writes the JSON layout of dcap-qvl's
``QuoteCollateralV3`` (chains as PEM text, CRLs and signatures as hex, the TCB
info and QE identity as the byte-exact signed JSON strings). Parsing builds
typed models; nothing here checks a signature: that is the verifier's job.

Example::

    >>> path = "../shared/vectors/sgx-dcapqvl-00A067110000/collateral.json"
    >>> text = open(path).read()  # doctest: +SKIP
    >>> Collateral.from_json(text).tcb_info.fmspc.hex()  # doctest: +SKIP
    '00a067110000'
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from confide import strictjson
from confide.errors import FormatError, JsonError

MAX_COLLATERAL_SIZE: Final = 1024 * 1024
MAX_TCB_LEVELS: Final = 512
MAX_ADVISORIES: Final = 256
MAX_CHAIN_LENGTH: Final = 4
_FIELDS: Final = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


class TcbStatus(enum.StrEnum):
    """TCB statuses as Intel names them."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"

    @classmethod
    def parse(cls, value: object, where: str) -> TcbStatus:
        try:
            return cls(str(value))
        except ValueError:
            raise _fail(where, f"unknown TCB status {value!r}") from None


def _fail(where: str, detail: str) -> FormatError:
    return FormatError("collateral.format", f"malformed collateral: {where}", detail=detail)


class _Obj:
    """Typed, bounded access to one JSON object, naming the path in errors."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, "expected a JSON object")
        self.d: dict[str, Any] = value
        self.where = where

    def get(self, key: str) -> Any:
        if key not in self.d:
            raise _fail(f"{self.where}.{key}", "missing")
        return self.d[key]

    def integer(self, key: str, lo: int = 0, hi: int = 0xFFFF) -> int:
        v = self.get(key)
        if type(v) is not int or not lo <= v <= hi:
            raise _fail(f"{self.where}.{key}", f"expected an integer in [{lo}, {hi}], got {v!r}")
        return v

    def string(self, key: str) -> str:
        v = self.get(key)
        if not isinstance(v, str):
            raise _fail(f"{self.where}.{key}", f"expected a string, got {type(v).__name__}")
        return v

    def hex(self, key: str, size: int) -> bytes:
        v = self.string(key)
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            raise _fail(f"{self.where}.{key}", "not hex") from None
        if len(raw) != size:
            raise _fail(f"{self.where}.{key}", f"expected {size} bytes, got {len(raw)}")
        return raw

    def time(self, key: str) -> datetime:
        v = self.string(key)
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            raise _fail(f"{self.where}.{key}", f"not an ISO 8601 time: {v!r}") from None
        if t.tzinfo is None:
            raise _fail(f"{self.where}.{key}", f"time without a timezone: {v!r}")
        return t

    def items(self, key: str, limit: int, *, optional: bool = False) -> list[Any]:
        if optional and key not in self.d:
            return []
        v = self.get(key)
        if not isinstance(v, list) or len(v) > limit:
            raise _fail(f"{self.where}.{key}", f"expected a list of at most {limit} items")
        return v

    def advisories(self) -> tuple[str, ...]:
        items = self.items("advisoryIDs", MAX_ADVISORIES, optional=True)
        if not all(isinstance(a, str) for a in items):
            raise _fail(f"{self.where}.advisoryIDs", "expected strings")
        return tuple(items)


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One platform TCB level of a TCB info."""

    sgx_components: tuple[int, ...]
    pce_svn: int
    #: The 16 TDX TCB components, for TDX TCB info; ``None`` for SGX.
    tdx_components: tuple[int, ...] | None
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QeTcbLevel:
    """One TCB level of a QE identity or TDX module identity, keyed by ISVSVN."""

    isv_svn: int
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TdxModuleIdentity:
    """The expected TDX module signer and attributes.

    Either the TCB info's ``tdxModule`` or one of its ``tdxModuleIdentities``.
    """

    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    tcb_levels: tuple[QeTcbLevel, ...]


def _qe_levels(obj: _Obj) -> tuple[QeTcbLevel, ...]:
    levels = []
    for i, item in enumerate(obj.items("tcbLevels", MAX_TCB_LEVELS)):
        lvl = _Obj(item, f"{obj.where}.tcbLevels[{i}]")
        tcb = _Obj(lvl.get("tcb"), f"{lvl.where}.tcb")
        levels.append(
            QeTcbLevel(
                isv_svn=tcb.integer("isvsvn"),
                tcb_date=lvl.time("tcbDate"),
                status=TcbStatus.parse(lvl.get("tcbStatus"), f"{lvl.where}.tcbStatus"),
                advisory_ids=lvl.advisories(),
            )
        )
    return tuple(levels)


def _module(value: object, where: str, default_id: str) -> TdxModuleIdentity:
    obj = _Obj(value, where)
    return TdxModuleIdentity(
        id=obj.string("id") if "id" in obj.d else default_id,
        mr_signer=obj.hex("mrsigner", 48),
        attributes=obj.hex("attributes", 8),
        attributes_mask=obj.hex("attributesMask", 8),
        tcb_levels=_qe_levels(obj) if "tcbLevels" in obj.d else (),
    )


def _loads(raw: str, where: str) -> object:
    if len(raw) > MAX_COLLATERAL_SIZE:
        raise _fail(where, f"over {MAX_COLLATERAL_SIZE} bytes")
    try:
        # The signature covers the UTF-8 bytes: text that has none (a lone
        # surrogate) cannot have been signed and would fail later, outside our errors.
        raw.encode()
    except UnicodeEncodeError:
        raise _fail(where, "not encodable as UTF-8 (lone surrogate)") from None
    try:  # no repeated key, no NaN, bounded depth: what the signer's reader saw, ours sees
        return strictjson.loads(raw, what=where, max_bytes=4 * MAX_COLLATERAL_SIZE)
    except JsonError as exc:
        raise _fail(where, f"not JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class TcbInfo:
    """A TCB info (``id`` SGX or TDX, versions 2 and 3)."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tcb_levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None = None
    tdx_module_identities: tuple[TdxModuleIdentity, ...] = ()

    @classmethod
    def from_json(cls, raw: str) -> TcbInfo:
        obj = _Obj(_loads(raw, "tcb_info"), "tcbInfo")
        version = obj.integer("version")
        tcb_id = obj.string("id") if version >= 3 else "SGX"
        if version not in (2, 3) or tcb_id not in ("SGX", "TDX"):
            raise FormatError(
                "collateral.version",
                "unsupported TCB info",
                observed=f"id {tcb_id} version {version}",
                expected="SGX version 2 or 3, or TDX version 3",
            )
        tcb_type = obj.integer("tcbType")
        if tcb_type != 0:
            raise _fail("tcbInfo.tcbType", f"only tcbType 0 is defined, got {tcb_type}")
        levels = []
        for i, item in enumerate(obj.items("tcbLevels", MAX_TCB_LEVELS)):
            lvl = _Obj(item, f"tcbInfo.tcbLevels[{i}]")
            tcb = _Obj(lvl.get("tcb"), f"{lvl.where}.tcb")
            if version == 2:
                sgx = tuple(tcb.integer(f"sgxtcbcomp{n:02d}svn", 0, 255) for n in range(1, 17))
                tdx = None
            else:
                sgx = _components(tcb, "sgxtcbcomponents")
                tdx = _components(tcb, "tdxtcbcomponents") if tcb_id == "TDX" else None
            levels.append(
                TcbLevel(
                    sgx_components=sgx,
                    pce_svn=tcb.integer("pcesvn"),
                    tdx_components=tdx,
                    tcb_date=lvl.time("tcbDate"),
                    status=TcbStatus.parse(lvl.get("tcbStatus"), f"{lvl.where}.tcbStatus"),
                    advisory_ids=lvl.advisories(),
                )
            )
        module = None
        identities: tuple[TdxModuleIdentity, ...] = ()
        if tcb_id == "TDX":
            module = _module(obj.get("tdxModule"), "tcbInfo.tdxModule", "TDX")
            identities = tuple(
                _module(item, f"tcbInfo.tdxModuleIdentities[{i}]", "")
                for i, item in enumerate(
                    obj.items("tdxModuleIdentities", MAX_TCB_LEVELS, optional=True)
                )
            )
        return cls(
            id=tcb_id,
            version=version,
            issue_date=obj.time("issueDate"),
            next_update=obj.time("nextUpdate"),
            fmspc=obj.hex("fmspc", 6),
            pce_id=obj.hex("pceId", 2),
            tcb_type=tcb_type,
            tcb_evaluation_data_number=obj.integer("tcbEvaluationDataNumber", 0, 2**32 - 1),
            tcb_levels=tuple(levels),
            tdx_module=module,
            tdx_module_identities=identities,
        )


def _components(tcb: _Obj, key: str) -> tuple[int, ...]:
    items = tcb.items(key, 16)
    if len(items) != 16:
        raise _fail(f"{tcb.where}.{key}", f"expected 16 components, got {len(items)}")
    return tuple(
        _Obj(c, f"{tcb.where}.{key}[{i}]").integer("svn", 0, 255) for i, c in enumerate(items)
    )


@dataclass(frozen=True, slots=True)
class QeIdentity:
    """An enclave identity of Intel's quoting enclave (``QE`` for SGX, ``TD_QE`` for TDX)."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    tcb_levels: tuple[QeTcbLevel, ...]

    @classmethod
    def from_json(cls, raw: str) -> QeIdentity:
        obj = _Obj(_loads(raw, "qe_identity"), "enclaveIdentity")
        version = obj.integer("version")
        qe_id = obj.string("id")
        if version != 2 or qe_id not in ("QE", "TD_QE"):
            raise FormatError(
                "collateral.version",
                "unsupported QE identity",
                observed=f"id {qe_id} version {version}",
                expected="QE or TD_QE version 2",
            )
        return cls(
            id=qe_id,
            version=version,
            issue_date=obj.time("issueDate"),
            next_update=obj.time("nextUpdate"),
            tcb_evaluation_data_number=obj.integer("tcbEvaluationDataNumber", 0, 2**32 - 1),
            miscselect=obj.hex("miscselect", 4),
            miscselect_mask=obj.hex("miscselectMask", 4),
            attributes=obj.hex("attributes", 16),
            attributes_mask=obj.hex("attributesMask", 16),
            mr_signer=obj.hex("mrsigner", 32),
            isv_prod_id=obj.integer("isvprodid"),
            tcb_levels=_qe_levels(obj),
        )


#: What ``cryptography`` raises for malformed X.509 input; several are not ValueError.
X509_ERRORS: Final = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def parse_lazy_fields(obj: x509.Certificate | x509.CertificateRevocationList) -> None:
    """Parse what ``cryptography`` parses only on access, so it fails here and not later.

    Names, extensions, keys and revoked entries are decoded lazily; a malformed one
    would otherwise raise in the middle of verification. Raises one of
    :data:`X509_ERRORS` for the caller to map to ours.
    """
    obj.issuer  # noqa: B018
    obj.extensions  # noqa: B018
    if isinstance(obj, x509.Certificate):
        obj.subject  # noqa: B018
        obj.public_key()
        obj.not_valid_before_utc  # noqa: B018
        obj.not_valid_after_utc  # noqa: B018
    else:
        obj.last_update_utc  # noqa: B018
        obj.next_update_utc  # noqa: B018
        for revoked in obj:
            revoked.serial_number  # noqa: B018


def _chain(text: str, where: str) -> tuple[x509.Certificate, ...]:
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
        for cert in certs:
            parse_lazy_fields(cert)
    except X509_ERRORS as exc:
        raise _fail(where, f"not a PEM certificate chain: {exc}") from None
    if not 1 <= len(certs) <= MAX_CHAIN_LENGTH:
        raise _fail(where, f"expected 1 to {MAX_CHAIN_LENGTH} certificates, got {len(certs)}")
    return tuple(certs)


def _crl(raw: bytes, where: str) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_der_x509_crl(raw)
        parse_lazy_fields(crl)
    except X509_ERRORS as exc:
        raise _fail(where, f"not a DER CRL: {exc}") from None
    return crl


@dataclass(frozen=True, slots=True)
class Collateral:
    """Everything needed to verify a quote offline, parsed.

    The raw signed bytes are kept (``tcb_info_raw``, ``qe_identity_raw``) since
    signatures cover them byte for byte. The parsed ``tcb_info`` and
    ``qe_identity`` are always derived from those raw bytes (not ``__init__``
    arguments), so a copy made with ``dataclasses.replace`` can never be rated
    on a model that differs from what was signed.
    """

    pck_crl_issuer_chain: tuple[x509.Certificate, ...]
    root_ca_crl: x509.CertificateRevocationList
    pck_crl: x509.CertificateRevocationList
    tcb_info_issuer_chain: tuple[x509.Certificate, ...]
    tcb_info_raw: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: tuple[x509.Certificate, ...]
    qe_identity_raw: str
    qe_identity_signature: bytes
    tcb_info: TcbInfo = field(init=False)
    qe_identity: QeIdentity = field(init=False)
    #: Verification results keyed by content, filled by the verifier (see ADR 0002).
    #: Not an ``__init__`` argument: ``dataclasses.replace`` must not share it.
    _cache: dict[object, object] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "tcb_info", TcbInfo.from_json(self.tcb_info_raw))
        object.__setattr__(self, "qe_identity", QeIdentity.from_json(self.qe_identity_raw))

    @classmethod
    def from_parts(
        cls,
        *,
        pck_crl_issuer_chain: str,
        root_ca_crl: bytes,
        pck_crl: bytes,
        tcb_info_issuer_chain: str,
        tcb_info: str,
        tcb_info_signature: bytes,
        qe_identity_issuer_chain: str,
        qe_identity: str,
        qe_identity_signature: bytes,
    ) -> Collateral:
        """Build from the raw items as a PCCS serves them."""
        for name, sig in (
            ("tcb_info_signature", tcb_info_signature),
            ("qe_identity_signature", qe_identity_signature),
        ):
            if len(sig) != 64:
                raise _fail(name, f"expected a 64-byte r||s signature, got {len(sig)} bytes")
        return cls(
            pck_crl_issuer_chain=_chain(pck_crl_issuer_chain, "pck_crl_issuer_chain"),
            root_ca_crl=_crl(root_ca_crl, "root_ca_crl"),
            pck_crl=_crl(pck_crl, "pck_crl"),
            tcb_info_issuer_chain=_chain(tcb_info_issuer_chain, "tcb_info_issuer_chain"),
            tcb_info_raw=tcb_info,
            tcb_info_signature=tcb_info_signature,
            qe_identity_issuer_chain=_chain(qe_identity_issuer_chain, "qe_identity_issuer_chain"),
            qe_identity_raw=qe_identity,
            qe_identity_signature=qe_identity_signature,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Collateral:
        """Load dcap-qvl's ``QuoteCollateralV3`` JSON layout."""
        if isinstance(text, bytes):
            try:
                text = text.decode()
            except UnicodeDecodeError:
                raise _fail("collateral", "not UTF-8 text") from None
        obj = _Obj(_loads(text, "collateral"), "collateral")
        strings = {name: obj.string(name) for name in _FIELDS}

        def unhex(name: str) -> bytes:
            try:
                return bytes.fromhex(strings[name])
            except ValueError:
                raise _fail(name, "not hex") from None

        return cls.from_parts(
            pck_crl_issuer_chain=strings["pck_crl_issuer_chain"],
            root_ca_crl=unhex("root_ca_crl"),
            pck_crl=unhex("pck_crl"),
            tcb_info_issuer_chain=strings["tcb_info_issuer_chain"],
            tcb_info=strings["tcb_info"],
            tcb_info_signature=unhex("tcb_info_signature"),
            qe_identity_issuer_chain=strings["qe_identity_issuer_chain"],
            qe_identity=strings["qe_identity"],
            qe_identity_signature=unhex("qe_identity_signature"),
        )

    def to_json(self) -> str:
        """Write dcap-qvl's ``QuoteCollateralV3`` JSON layout."""
        from cryptography.hazmat.primitives.serialization import Encoding

        def pem(chain: tuple[x509.Certificate, ...]) -> str:
            return "".join(c.public_bytes(Encoding.PEM).decode() for c in chain)

        return json.dumps(
            {
                "pck_crl_issuer_chain": pem(self.pck_crl_issuer_chain),
                "root_ca_crl": self.root_ca_crl.public_bytes(Encoding.DER).hex(),
                "pck_crl": self.pck_crl.public_bytes(Encoding.DER).hex(),
                "tcb_info_issuer_chain": pem(self.tcb_info_issuer_chain),
                "tcb_info": self.tcb_info_raw,
                "tcb_info_signature": self.tcb_info_signature.hex(),
                "qe_identity_issuer_chain": pem(self.qe_identity_issuer_chain),
                "qe_identity": self.qe_identity_raw,
                "qe_identity_signature": self.qe_identity_signature.hex(),
            },
            indent=1,
        )
