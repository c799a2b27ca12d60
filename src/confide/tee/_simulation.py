"""A simulated SGX platform: the issuing authority of quotes that only verify on request.

:class:`SimulatedPlatform` plays Intel's parts for one simulated machine: a
root CA generated per platform (its organization is
:data:`~confide.attestation.SIMULATION_ORGANIZATION`; never shipped in the
package), a PCK CA, a PCK certificate carrying the SGX
extension exactly as Intel encodes it, a TCB signing certificate, the quoting
enclave's attestation key and a platform secret for sealing. It produces
real-format v3 SGX quotes and the collateral to verify them, so a simulated
quote goes through exactly the same :func:`~confide.attestation.verify_quote`
as a real one, and passes only when the caller passes this platform's root
as ``trust_anchor`` *and* ``Policy(allow_simulation=True)``.

The collateral builder takes a :class:`CollateralSpec` so tests can aim at
every outcome: another FMSPC, revoked certificates, items outside their
windows, other TCB levels or QE identity fields; :meth:`SimulatedPlatform.issue_pck`
issues PCK certificates with other TCB SVNs or validity windows.

Example::

    >>> from datetime import datetime, timezone
    >>> from confide.attestation import Policy, verify_quote
    >>> now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> platform = SimulatedPlatform.open(tmp / "sim", now=now)  # doctest: +SKIP
    >>> quote = platform.quote(  # doctest: +SKIP
    ...     bytes(64), mr_enclave=bytes(32), mr_signer=bytes(32)
    ... )
    >>> verify_quote(  # doctest: +SKIP
    ...     quote, platform.collateral(now), now=now,
    ...     policy=Policy(allow_simulation=True), trust_anchor=platform.root_certificate,
    ... ).simulated
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from confide.attestation import (
    SIMULATION_ORGANIZATION,
    CertificationData,
    Collateral,
    PckExtensions,
    QeTcbLevel,
    Quote,
    QuoteHeader,
    SgxReportBody,
    TcbLevel,
    TcbStatus,
)
from confide.errors import TeeError, UsageError

from ._base import SEALING_KEY_LABEL, TeeKind, check_report_data, derive_key
from ._der import encode_sgx_extension, tlv

__all__ = [
    "SIM_FMSPC",
    "SIM_PCE_ID",
    "SIM_PCE_SVN",
    "SIM_QE_ISV_SVN",
    "SIM_QE_MR_SIGNER",
    "SIM_TCB_COMPONENTS",
    "CollateralSpec",
    "SimulatedPck",
    "SimulatedPlatform",
    "SimulationTee",
    "default_qe_tcb_levels",
    "default_tcb_levels",
]

#: The simulated platform's FMSPC (family-model-stepping-platform-custom SKU).
SIM_FMSPC: Final = bytes.fromhex("00C0F1DE0000")
SIM_PCE_ID: Final = bytes.fromhex("0000")
#: The simulated platform's TCB: the 16 SGX component SVNs and the PCE SVN.
SIM_TCB_COMPONENTS: Final = (5, 5, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
SIM_PCE_SVN: Final = 13
#: The simulated quoting enclave: its signer (not Intel's), product ID and SVN.
SIM_QE_MR_SIGNER: Final = hashlib.sha256(b"confide simulated quoting enclave signer").digest()
SIM_QE_MR_ENCLAVE: Final = hashlib.sha256(b"confide simulated quoting enclave").digest()
SIM_QE_ISV_PROD_ID: Final = 1
SIM_QE_ISV_SVN: Final = 8
#: QE auth data as Intel's QE fills it (bytes 0..31).
SIM_QE_AUTH_DATA: Final = bytes(range(32))
#: Default MRSIGNER of enclaves launched by :class:`SimulationTee`.
SIM_ENCLAVE_MR_SIGNER: Final = hashlib.sha256(b"confide simulated enclave signer").digest()
#: Intel's QE vendor ID: the simulator fills it in so the quote takes the same path.
_INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
_QE_ATTRIBUTES: Final = bytes.fromhex("11000000000000000000000000000000")
_QE_ATTRIBUTES_MASK: Final = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
#: Enclave ATTRIBUTES: flags INIT | MODE64BIT (DEBUG added on request), XFRM x87 | SSE.
_FLAGS_INIT_MODE64: Final = 0x05
_FLAG_DEBUG: Final = 0x02
_XFRM: Final = 0x03
_SGX_EXTENSION_OID: Final = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_STATE_VERSION: Final = 1
_TAG_SEQUENCE: Final = 0x30
_TAG_BIT_STRING: Final = 0x03
_TAG_UTC_TIME: Final = 0x17
_TAG_GENERALIZED_TIME: Final = 0x18
_CERT_LIFETIME: Final = timedelta(days=3650)
_CLOCK_SKEW: Final = timedelta(days=1)
#: Collateral is stamped as issued this long before it is made, as real CAs backdate their
#: issue times (Let's Encrypt, one hour): a verifier whose clock is a little behind, or that
#: read its clock before the fetch, must not find fresh collateral "not yet valid".
COLLATERAL_BACKDATE: Final = timedelta(hours=1)
_ORG: Final = SIMULATION_ORGANIZATION
_FILES: Final = (
    "root.pem",
    "root.key",
    "pck_ca.pem",
    "pck_ca.key",
    "pck.pem",
    "pck.key",
    "tcb_signer.pem",
    "tcb_signer.key",
    "attestation.key",
    "platform.secret",
)
_MARKER: Final = "platform.json"
_SECRET_SIZE: Final = 32
_JSON_TIME: Final = "%Y-%m-%dT%H:%M:%SZ"

Window = tuple[datetime, datetime]


def default_tcb_levels(tcb_date: datetime) -> tuple[TcbLevel, ...]:
    """The simulated TCB info's levels, from the first TCB component down.

    A PCK with :data:`SIM_TCB_COMPONENTS` is ``UpToDate``; lowering only the
    first component to 4, 3, 2, 1 aims at ``SWHardeningNeeded``,
    ``ConfigurationAndSWHardeningNeeded``, ``OutOfDate`` and ``Revoked``; 0
    matches no level.
    """
    rows = (
        (5, TcbStatus.UP_TO_DATE, ()),
        (4, TcbStatus.SW_HARDENING_NEEDED, ("SIM-SA-00001",)),
        (3, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED, ("SIM-SA-00001", "SIM-SA-00002")),
        (2, TcbStatus.OUT_OF_DATE, ("SIM-SA-00003",)),
        (1, TcbStatus.REVOKED, ("SIM-SA-00004",)),
    )
    return tuple(
        TcbLevel(
            sgx_components=(first, *SIM_TCB_COMPONENTS[1:]),
            pce_svn=SIM_PCE_SVN,
            tdx_components=None,
            tcb_date=tcb_date,
            status=status,
            advisory_ids=advisories,
        )
        for first, status, advisories in rows
    )


def default_qe_tcb_levels(tcb_date: datetime) -> tuple[QeTcbLevel, ...]:
    """The simulated QE identity's levels: ISVSVN 8 and up UpToDate, 1 to 7 OutOfDate."""
    return (
        QeTcbLevel(SIM_QE_ISV_SVN, tcb_date, TcbStatus.UP_TO_DATE, ()),
        QeTcbLevel(1, tcb_date, TcbStatus.OUT_OF_DATE, ("SIM-SA-00005",)),
    )


@dataclass(frozen=True, slots=True)
class CollateralSpec:
    """How :meth:`SimulatedPlatform.collateral` departs from consistent, valid collateral.

    Every field left at its default yields collateral under which the
    platform's quotes verify. Windows are ``(issue, next_update)``; ``None``
    means ``(now - COLLATERAL_BACKDATE, now + validity)``. ``*_fields`` are raw
    JSON members set on the signed TCB info / QE identity after everything else
    (any value, for malformed-collateral tests).
    """

    fmspc: bytes | None = None
    pce_id: bytes | None = None
    tcb_levels: tuple[TcbLevel, ...] | None = None
    tcb_evaluation_data_number: int = 1
    qe_mr_signer: bytes | None = None
    qe_isv_prod_id: int | None = None
    qe_tcb_levels: tuple[QeTcbLevel, ...] | None = None
    #: Serial numbers listed in the PCK CRL (e.g. a PCK certificate's).
    pck_crl_revoked: frozenset[int] = frozenset()
    #: Serial numbers listed in the root CA CRL (the PCK CA's, the TCB signer's).
    root_crl_revoked: frozenset[int] = frozenset()
    tcb_info_window: Window | None = None
    qe_identity_window: Window | None = None
    root_ca_crl_window: Window | None = None
    pck_crl_window: Window | None = None
    #: Leave nextUpdate out of the root CA CRL / the PCK CRL. The CRL format makes it
    #: optional, Intel's CRLs always carry it and the verifier refuses a CRL without
    #: it; for tests of that refusal.
    root_ca_crl_without_next_update: bool = False
    pck_crl_without_next_update: bool = False
    tcb_info_fields: Mapping[str, object] = field(default_factory=dict)
    qe_identity_fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimulatedPck:
    """A PCK certificate and its private key (the key signs QE reports)."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def extensions(self) -> PckExtensions:
        return PckExtensions.from_certificate(self.certificate)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _ski(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _signer_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _json_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime(_JSON_TIME)


def _seconds(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class SimulatedPlatform:
    """One simulated SGX machine and its simulated Intel PKI, kept in a state folder.

    Load or create it with :meth:`open`. Private keys never appear in ``repr``.
    """

    state: Path
    root_certificate: x509.Certificate
    pck_ca_certificate: x509.Certificate
    tcb_signing_certificate: x509.Certificate
    pck: SimulatedPck
    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    pck_ca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    tcb_signing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    attestation_key: ec.EllipticCurvePrivateKey = field(repr=False)
    secret: bytes = field(repr=False)

    # -- state folder ---------------------------------------------------------

    @classmethod
    def open(cls, state: Path, *, now: datetime) -> SimulatedPlatform:
        """Load the platform kept in ``state``, or create it there if absent.

        ``now`` is used only when creating: certificates are valid from a day
        before it for ten years. The folder is created with mode 0700 and the
        private keys and secret with 0600. A folder holding something other
        than a complete platform raises :class:`TeeError` (never overwritten).
        """
        if (state / _MARKER).exists():
            return cls._load(state)
        if state.exists() and (not state.is_dir() or any(state.iterdir())):
            raise TeeError(
                f"{state} is not an empty folder nor a simulated platform",
                hint="pass an empty or absent folder to create a simulated platform",
            )
        return cls._create(state, now)

    @classmethod
    def _create(cls, state: Path, now: datetime) -> SimulatedPlatform:
        if now.tzinfo is None:
            raise UsageError("now must be a timezone-aware datetime")
        not_before = _seconds(now) - _CLOCK_SKEW
        not_after = not_before + _CERT_LIFETIME
        root_key, pck_ca_key, tcb_key, pck_key, att_key = (_new_key() for _ in range(5))

        root_name = _name("Confide Simulated TEE Root CA - NOT A REAL TEE")
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(_ski(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        pck_ca = (
            x509.CertificateBuilder()
            .subject_name(_name("Confide Simulated SGX PCK Processor CA"))
            .issuer_name(root.subject)
            .public_key(pck_ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(_ski(pck_ca_key.public_key()), critical=False)
            .add_extension(_aki(root), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        tcb_signer = (
            x509.CertificateBuilder()
            .subject_name(_name("Confide Simulated SGX TCB Signing"))
            .issuer_name(root.subject)
            .public_key(tcb_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_signer_usage(), critical=True)
            .add_extension(_ski(tcb_key.public_key()), critical=False)
            .add_extension(_aki(root), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        pck_cert = _issue_pck(
            pck_ca,
            pck_ca_key,
            pck_key.public_key(),
            ppid=secrets.token_bytes(16),
            components=SIM_TCB_COMPONENTS,
            pce_svn=SIM_PCE_SVN,
            fmspc=SIM_FMSPC,
            not_before=not_before,
            not_after=not_after,
        )
        platform = cls(
            state=state,
            root_certificate=root,
            pck_ca_certificate=pck_ca,
            tcb_signing_certificate=tcb_signer,
            pck=SimulatedPck(pck_cert, pck_key),
            root_key=root_key,
            pck_ca_key=pck_ca_key,
            tcb_signing_key=tcb_key,
            attestation_key=att_key,
            secret=secrets.token_bytes(_SECRET_SIZE),
        )
        platform._save()
        return platform

    def _save(self) -> None:
        try:
            self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.state, 0o700)
        except OSError as exc:
            raise TeeError(f"cannot create {self.state}: {exc.strerror or exc}") from exc

        def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
            return key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )

        def cert_pem(cert: x509.Certificate) -> bytes:
            return cert.public_bytes(serialization.Encoding.PEM)

        files = {
            "root.pem": cert_pem(self.root_certificate),
            "root.key": key_pem(self.root_key),
            "pck_ca.pem": cert_pem(self.pck_ca_certificate),
            "pck_ca.key": key_pem(self.pck_ca_key),
            "pck.pem": cert_pem(self.pck.certificate),
            "pck.key": key_pem(self.pck.private_key),
            "tcb_signer.pem": cert_pem(self.tcb_signing_certificate),
            "tcb_signer.key": key_pem(self.tcb_signing_key),
            "attestation.key": key_pem(self.attestation_key),
            "platform.secret": self.secret,
        }
        for name, data in files.items():
            _write_new(
                self.state / name, data, 0o600 if name.endswith((".key", ".secret")) else 0o644
            )
        # Written last: its presence means the platform is complete.
        marker = {"version": _STATE_VERSION, "kind": "confide simulated SGX platform"}
        _write_new(self.state / _MARKER, json.dumps(marker).encode(), 0o644)

    @classmethod
    def _load(cls, state: Path) -> SimulatedPlatform:
        raw: dict[str, bytes] = {}
        for name in (_MARKER, *_FILES):
            path = state / name
            try:
                if name.endswith((".key", ".secret")):
                    mode = path.stat().st_mode
                    if mode & (stat.S_IRWXG | stat.S_IRWXO):
                        raise TeeError(
                            f"{path} is accessible to other users (mode {mode & 0o777:o})",
                            hint=f"chmod 600 {path}",
                        )
                raw[name] = path.read_bytes()
            except OSError as exc:
                raise TeeError(
                    f"incomplete simulated platform in {state}: cannot read {name}: "
                    f"{exc.strerror or exc}"
                ) from exc
        try:
            marker = json.loads(raw[_MARKER])
        except ValueError as exc:
            raise TeeError(f"{state / _MARKER} is not JSON") from exc
        if not isinstance(marker, dict) or marker.get("version") != _STATE_VERSION:
            raise TeeError(
                f"unsupported simulated platform state in {state}",
                hint="delete the folder to create a new simulated platform",
            )
        try:
            certs = {
                n: x509.load_pem_x509_certificate(raw[n])
                for n in ("root.pem", "pck_ca.pem", "pck.pem", "tcb_signer.pem")
            }
            keys = {
                n: _load_key(raw[n])
                for n in ("root.key", "pck_ca.key", "pck.key", "tcb_signer.key", "attestation.key")
            }
        except ValueError as exc:
            raise TeeError(f"corrupt simulated platform in {state}: {exc}") from exc
        secret = raw["platform.secret"]
        if len(secret) != _SECRET_SIZE:
            raise TeeError(f"corrupt simulated platform in {state}: bad platform secret size")
        return cls(
            state=state,
            root_certificate=certs["root.pem"],
            pck_ca_certificate=certs["pck_ca.pem"],
            tcb_signing_certificate=certs["tcb_signer.pem"],
            pck=SimulatedPck(certs["pck.pem"], keys["pck.key"]),
            root_key=keys["root.key"],
            pck_ca_key=keys["pck_ca.key"],
            tcb_signing_key=keys["tcb_signer.key"],
            attestation_key=keys["attestation.key"],
            secret=secret,
        )

    # -- issuing ---------------------------------------------------------------

    def issue_pck(
        self,
        *,
        components: Sequence[int] = SIM_TCB_COMPONENTS,
        pce_svn: int = SIM_PCE_SVN,
        fmspc: bytes = SIM_FMSPC,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> SimulatedPck:
        """Issue another PCK certificate for this platform (same PPID), e.g. at another TCB.

        The window defaults to that of the platform's own PCK certificate.
        Pass the result to :meth:`quote` as ``pck``. Not kept in the state folder.
        """
        key = _new_key()
        base = self.pck.certificate
        cert = _issue_pck(
            self.pck_ca_certificate,
            self.pck_ca_key,
            key.public_key(),
            ppid=self.pck.extensions.ppid,
            components=components,
            pce_svn=pce_svn,
            fmspc=fmspc,
            not_before=not_before or base.not_valid_before_utc,
            not_after=not_after or base.not_valid_after_utc,
        )
        return SimulatedPck(cert, key)

    def quote(
        self,
        report_data: bytes,
        *,
        mr_enclave: bytes,
        mr_signer: bytes,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        debug: bool = False,
        pck: SimulatedPck | None = None,
        qe_debug: bool = False,
    ) -> bytes:
        """A v3 SGX DCAP quote, in Intel's format, of an enclave on this platform.

        The QE report (signed by the PCK key) binds the attestation key as
        SHA-256(attestation key || QE auth data) || 32 zero bytes; the quote is
        signed by the attestation key; the PCK chain (leaf, PCK CA, root) is
        in certification data type 5. ``qe_debug`` sets the DEBUG attribute of
        the QE report, as if the quoting enclave ran in debug mode: for tests
        of the verifier's QE identity check only.
        """
        data = check_report_data(report_data)
        for name, value in (("mr_enclave", mr_enclave), ("mr_signer", mr_signer)):
            if len(value) != 32:
                raise UsageError(f"{name} must be 32 bytes, got {len(value)}")
        for name, number in (("isv_prod_id", isv_prod_id), ("isv_svn", isv_svn)):
            if not 0 <= number <= 0xFFFF:
                raise UsageError(f"{name} must be in [0, 65535], got {number}")
        pck = pck or self.pck
        ext = pck.extensions
        att_point = _point(self.attestation_key.public_key())[1:]
        flags = _FLAGS_INIT_MODE64 | (_FLAG_DEBUG if debug else 0)
        attributes = flags.to_bytes(8, "little") + _XFRM.to_bytes(8, "little")
        body = _report(
            cpu_svn=ext.cpu_svn,
            attributes=attributes,
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            report_data=data,
        )
        qe_report = _report(
            cpu_svn=ext.cpu_svn,
            attributes=(
                bytes([_QE_ATTRIBUTES[0] | _FLAG_DEBUG]) + _QE_ATTRIBUTES[1:]
                if qe_debug
                else _QE_ATTRIBUTES
            ),
            mr_enclave=SIM_QE_MR_ENCLAVE,
            mr_signer=SIM_QE_MR_SIGNER,
            isv_prod_id=SIM_QE_ISV_PROD_ID,
            isv_svn=SIM_QE_ISV_SVN,
            report_data=hashlib.sha256(att_point + SIM_QE_AUTH_DATA).digest() + bytes(32),
        )
        certification = CertificationData(
            qe_report=qe_report,
            qe_report_signature=_raw_signature(pck.private_key, qe_report.to_bytes()),
            qe_auth_data=SIM_QE_AUTH_DATA,
            pck_cert_chain=_pem(
                pck.certificate, self.pck_ca_certificate, self.root_certificate
            ).encode(),
            wrapped=False,
        )
        header = QuoteHeader(
            version=3,
            attestation_key_type=2,
            tee_type=0,
            qe_svn=SIM_QE_ISV_SVN,
            pce_svn=ext.pce_svn,
            qe_vendor_id=_INTEL_QE_VENDOR_ID,
            user_data=bytes(20),
        )
        unsigned = Quote(
            header=header,
            body=body,
            body_type=None,
            signature=bytes(64),
            attestation_key=att_point,
            certification=certification,
        )
        signature = _raw_signature(self.attestation_key, unsigned.signed_bytes)
        return dataclasses.replace(unsigned, signature=signature).to_bytes()

    def collateral(
        self,
        now: datetime,
        *,
        validity: timedelta = timedelta(days=30),
        spec: CollateralSpec | None = None,
    ) -> Collateral:
        """Signed collateral for this platform's quotes, made at ``now``.

        Its issue dates (TCB info and QE identity ``issueDate``, the CRLs'
        thisUpdate) are :data:`COLLATERAL_BACKDATE` before ``now``; it is valid
        until ``now + validity``.

        TCB info v3 (``SGX``) and QE identity v2 (``QE``) signed with ECDSA
        P-256 by the TCB signing certificate; issuer chains ``[signer, root]``;
        the root CA CRL signed by the root and the PCK CRL by the PCK CA.
        ``spec`` departs from this (see :class:`CollateralSpec`).
        """
        if now.tzinfo is None:
            raise UsageError("now must be a timezone-aware datetime")
        spec = spec or CollateralSpec()
        issued = _seconds(now)
        default: Window = (issued - COLLATERAL_BACKDATE, _seconds(now + validity))
        tcb_window = spec.tcb_info_window or default
        qe_window = spec.qe_identity_window or default
        tcb_date = _seconds(self.root_certificate.not_valid_before_utc)

        ext = self.pck.extensions
        levels = spec.tcb_levels if spec.tcb_levels is not None else default_tcb_levels(tcb_date)
        tcb_info: dict[str, object] = {
            "id": "SGX",
            "version": 3,
            "issueDate": _json_time(tcb_window[0]),
            "nextUpdate": _json_time(tcb_window[1]),
            "fmspc": (spec.fmspc or ext.fmspc).hex().upper(),
            "pceId": (spec.pce_id or ext.pce_id).hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": spec.tcb_evaluation_data_number,
            "tcbLevels": [_tcb_level_json(level) for level in levels],
        }
        tcb_info.update(spec.tcb_info_fields)
        qe_levels = (
            spec.qe_tcb_levels
            if spec.qe_tcb_levels is not None
            else default_qe_tcb_levels(tcb_date)
        )
        qe_identity: dict[str, object] = {
            "id": "QE",
            "version": 2,
            "issueDate": _json_time(qe_window[0]),
            "nextUpdate": _json_time(qe_window[1]),
            "tcbEvaluationDataNumber": spec.tcb_evaluation_data_number,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": _QE_ATTRIBUTES.hex().upper(),
            "attributesMask": _QE_ATTRIBUTES_MASK.hex().upper(),
            "mrsigner": (spec.qe_mr_signer or SIM_QE_MR_SIGNER).hex().upper(),
            "isvprodid": (
                spec.qe_isv_prod_id if spec.qe_isv_prod_id is not None else SIM_QE_ISV_PROD_ID
            ),
            "tcbLevels": [_qe_level_json(level) for level in qe_levels],
        }
        qe_identity.update(spec.qe_identity_fields)
        tcb_raw = json.dumps(tcb_info, separators=(",", ":"))
        qe_raw = json.dumps(qe_identity, separators=(",", ":"))
        signer_chain = _pem(self.tcb_signing_certificate, self.root_certificate)
        root_crl = _crl(
            self.root_certificate,
            self.root_key,
            spec.root_crl_revoked,
            spec.root_ca_crl_window or default,
            next_update=not spec.root_ca_crl_without_next_update,
        )
        pck_crl = _crl(
            self.pck_ca_certificate,
            self.pck_ca_key,
            spec.pck_crl_revoked,
            spec.pck_crl_window or default,
            next_update=not spec.pck_crl_without_next_update,
        )
        return Collateral.from_parts(
            pck_crl_issuer_chain=_pem(self.pck_ca_certificate, self.root_certificate),
            root_ca_crl=root_crl,
            pck_crl=pck_crl,
            tcb_info_issuer_chain=signer_chain,
            tcb_info=tcb_raw,
            tcb_info_signature=_raw_signature(self.tcb_signing_key, tcb_raw.encode()),
            qe_identity_issuer_chain=signer_chain,
            qe_identity=qe_raw,
            qe_identity_signature=_raw_signature(self.tcb_signing_key, qe_raw.encode()),
        )

    # -- sealing -------------------------------------------------------------

    def sealing_key(self, measurement: bytes) -> bytes:
        """32 bytes bound to this platform and ``measurement``.

        HKDF-SHA256 of the platform secret with ``info = label || measurement``.
        """
        return derive_key(self.secret, SEALING_KEY_LABEL + bytes(measurement))


class SimulationTee:
    """The :class:`~confide.tee.Tee` of one simulated enclave launch on a platform."""

    __slots__ = ("_measurement", "_mr_signer", "_platform")

    def __init__(
        self,
        platform: SimulatedPlatform,
        measurement: bytes,
        *,
        mr_signer: bytes = SIM_ENCLAVE_MR_SIGNER,
    ) -> None:
        if len(measurement) != 32 or len(mr_signer) != 32:
            raise UsageError(
                f"a simulated enclave's measurement and signer are 32 bytes, "
                f"got {len(measurement)} and {len(mr_signer)}"
            )
        self._platform = platform
        self._measurement = bytes(measurement)
        self._mr_signer = bytes(mr_signer)

    @property
    def kind(self) -> TeeKind:
        return TeeKind.SIMULATION

    @property
    def platform(self) -> SimulatedPlatform:
        return self._platform

    @property
    def measurement(self) -> bytes:
        return self._measurement

    def get_quote(self, report_data: bytes) -> bytes:
        return self._platform.quote(
            check_report_data(report_data),
            mr_enclave=self._measurement,
            mr_signer=self._mr_signer,
        )

    def sealing_key(self) -> bytes:
        """Another measurement derives another key (the measurement is in the HKDF info)."""
        return self._platform.sealing_key(self._measurement)


def _issue_pck(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    *,
    ppid: bytes,
    components: Sequence[int],
    pce_svn: int,
    fmspc: bytes,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    try:
        sgx = encode_sgx_extension(
            ppid=ppid,
            tcb_components=components,
            pce_svn=pce_svn,
            # CPUSVN carries the component SVNs, as on the platforms Intel rates.
            cpu_svn=bytes(components),
            pce_id=SIM_PCE_ID,
            fmspc=fmspc,
            sgx_type=0,
        )
    except ValueError as exc:
        raise UsageError(f"cannot issue a PCK certificate: {exc}") from exc
    return (
        x509.CertificateBuilder()
        .subject_name(_name("Confide Simulated SGX PCK Certificate"))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_signer_usage(), critical=True)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(ca), critical=False)
        .add_extension(x509.UnrecognizedExtension(_SGX_EXTENSION_OID, sgx), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _report(
    *,
    cpu_svn: bytes,
    attributes: bytes,
    mr_enclave: bytes,
    mr_signer: bytes,
    isv_prod_id: int,
    isv_svn: int,
    report_data: bytes,
) -> SgxReportBody:
    return SgxReportBody(
        cpu_svn=cpu_svn,
        misc_select=0,
        reserved1=bytes(12),
        isv_ext_prod_id=bytes(16),
        attributes=attributes,
        mr_enclave=mr_enclave,
        reserved2=bytes(32),
        mr_signer=mr_signer,
        reserved3=bytes(32),
        config_id=bytes(64),
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        config_svn=0,
        reserved4=bytes(42),
        isv_family_id=bytes(16),
        report_data=report_data,
    )


def _crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    revoked: Iterable[int],
    window: Window,
    *,
    next_update: bool = True,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(window[0])
        .next_update(window[1])
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    for serial in sorted(revoked):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(window[0])
            .build()
        )
    crl = builder.sign(key, hashes.SHA256())
    if not next_update:
        return _without_next_update(crl, key)
    return crl.public_bytes(serialization.Encoding.DER)


def _der_element(der: bytes, pos: int) -> tuple[int, int]:
    """Where the value of the DER element at ``pos`` starts, and where the element ends."""
    size, start = der[pos + 1], pos + 2
    if size & 0x80:
        count = size & 0x7F
        size, start = int.from_bytes(der[start : start + count], "big"), start + count
    return start, start + size


def _der_children(der: bytes) -> list[bytes]:
    """The encoded elements (tag, length and value) inside one DER SEQUENCE."""
    pos, end = _der_element(der, 0)
    out = []
    while pos < end:
        _, nxt = _der_element(der, pos)
        out.append(der[pos:nxt])
        pos = nxt
    return out


def _without_next_update(
    crl: x509.CertificateRevocationList, key: ec.EllipticCurvePrivateKey
) -> bytes:
    """``crl`` re-signed without nextUpdate (``cryptography`` refuses to build such a CRL).

    TBSCertList is ``version, signature, issuer, thisUpdate, nextUpdate OPTIONAL, ...``:
    the second time in it is nextUpdate.
    """
    tbs = _der_children(crl.tbs_certlist_bytes)
    times = [i for i, item in enumerate(tbs) if item[0] in (_TAG_UTC_TIME, _TAG_GENERALIZED_TIME)]
    tbs_der = tlv(_TAG_SEQUENCE, b"".join(tbs[: times[1]] + tbs[times[1] + 1 :]))
    algorithm = _der_children(crl.public_bytes(serialization.Encoding.DER))[1]
    signature = key.sign(tbs_der, ec.ECDSA(hashes.SHA256()))
    return tlv(_TAG_SEQUENCE, tbs_der + algorithm + tlv(_TAG_BIT_STRING, b"\x00" + signature))


def _tcb_level_json(level: TcbLevel) -> dict[str, object]:
    out: dict[str, object] = {
        "tcb": {
            "sgxtcbcomponents": [{"svn": svn} for svn in level.sgx_components],
            "pcesvn": level.pce_svn,
        },
        "tcbDate": _json_time(level.tcb_date),
        "tcbStatus": level.status.value,
    }
    if level.advisory_ids:
        out["advisoryIDs"] = list(level.advisory_ids)
    return out


def _qe_level_json(level: QeTcbLevel) -> dict[str, object]:
    out: dict[str, object] = {
        "tcb": {"isvsvn": level.isv_svn},
        "tcbDate": _json_time(level.tcb_date),
        "tcbStatus": level.status.value,
    }
    if level.advisory_ids:
        out["advisoryIDs"] = list(level.advisory_ids)
    return out


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("a key is not an EC private key")
    return key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (never following or replacing an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
    except OSError as exc:
        raise TeeError(f"cannot write {path}: {exc.strerror or exc}") from exc
