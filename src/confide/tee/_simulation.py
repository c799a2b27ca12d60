"""A simulated SGX platform: the issuing authority of quotes that only verify on request.

:class:`SimulatedPlatform` plays Intel's parts for one simulated machine: its
PKI (:mod:`._simpki`, a root generated per platform, never shipped in the
package), the quoting enclave's attestation key and a platform secret for
sealing. It produces real-format v3 SGX quotes and the collateral to verify
them (:mod:`._simcollateral`), so a simulated
quote goes through exactly the same :func:`~confide.attestation.verify_quote`
as a real one, and passes only when the caller passes this platform's root
as ``trust_anchor`` *and* ``Policy(allow_simulation=True)``.

Tests aim at every outcome with a :class:`CollateralSpec` and with
:meth:`SimulatedPlatform.issue_pck` (other TCB SVNs or validity windows).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from confide.attestation import (
    INTEL_QE_VENDOR_ID,
    CertificationData,
    Collateral,
    Quote,
    QuoteHeader,
    SgxReportBody,
    TdReference,
    TdReportBody,
    TdxEventLog,
)
from confide.errors import TeeError, UsageError

from ._base import SEALING_KEY_LABEL, TeeKind, check_report_data, derive_key
from ._simcollateral import CollateralSpec, build_collateral
from ._simpki import (
    QE_ATTRIBUTES,
    SIM_FMSPC,
    SIM_PCE_SVN,
    SIM_QE_ISV_PROD_ID,
    SIM_QE_ISV_SVN,
    SIM_QE_MR_ENCLAVE,
    SIM_QE_MR_SIGNER,
    SIM_TCB_COMPONENTS,
    SIM_TD_QE_ISV_PROD_ID,
    SIM_TD_QE_MR_ENCLAVE,
    SIM_TDX_MODULE_MR_SIGNER,
    SIM_TEE_TCB_SVN,
    SimulatedPck,
    issue_pck_certificate,
    new_key,
    new_platform,
    pem_chain,
    raw_signature,
)
from ._simstate import STATE_MARKER, load_platform, save_platform

#: QE auth data as Intel's QE fills it (bytes 0..31).
SIM_QE_AUTH_DATA: Final = bytes(range(32))
#: Default MRSIGNER of enclaves launched by :class:`SimulationTee`.
SIM_ENCLAVE_MR_SIGNER: Final = hashlib.sha256(b"confide simulated enclave signer").digest()
#: Enclave ATTRIBUTES: flags INIT | MODE64BIT (DEBUG added on request), XFRM x87 | SSE.
_FLAGS_INIT_MODE64: Final = 0x05
_FLAG_DEBUG: Final = 0x02
_XFRM: Final = 0x03
#: The simulated TDX module's measurement, and the TD's XFAM (x87 | SSE | AVX).
_SIM_MR_SEAM: Final = hashlib.sha384(b"confide simulated TDX module").digest()
_TD_XFAM: Final = (0xE7).to_bytes(8, "little")
#: TD_ATTRIBUTES.SEPT_VE_DISABLE: the TD takes no #VE on EPT violations (a Linux guest sets it).
_TD_SEPT_VE_DISABLE: Final = 1 << 28
#: The quote header's TEE type of a TD (Intel's DCAP quote format).
_TEE_TYPE_TDX: Final = 0x81


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


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
        if (state / STATE_MARKER).exists():
            return load_platform(cls, state)
        if state.exists() and (not state.is_dir() or any(state.iterdir())):
            raise TeeError(
                f"{state} is not an empty folder nor a simulated platform",
                hint="pass an empty or absent folder to create a simulated platform",
            )
        platform = new_platform(cls, state, now)
        save_platform(platform)
        return platform

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
        key = new_key()
        base = self.pck.certificate
        cert = issue_pck_certificate(
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
        flags = _FLAGS_INIT_MODE64 | (_FLAG_DEBUG if debug else 0)
        attributes = flags.to_bytes(8, "little") + _XFRM.to_bytes(8, "little")
        body = _report(
            cpu_svn=pck.extensions.cpu_svn,
            attributes=attributes,
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            report_data=data,
        )
        return self._signed(body, pck=pck, qe_debug=qe_debug)

    def td_quote(
        self,
        report_data: bytes,
        *,
        mr_td: bytes,
        rtmrs: Sequence[bytes] = (bytes(48),) * 4,
        debug: bool = False,
        pck: SimulatedPck | None = None,
        qe_debug: bool = False,
        td_attributes: int | None = None,
    ) -> bytes:
        """A v4 TDX DCAP quote (TD 1.0 report body) of a trust domain on this platform.

        The TDX module is :data:`SIM_TEE_TCB_SVN` signed by
        :data:`SIM_TDX_MODULE_MR_SIGNER`; the TD quoting enclave's report binds
        the attestation key as in :meth:`quote`, and the PCK chain is in
        certification data type 6 (wrapping type 5), as Intel's TD QE writes it.
        Verify with the collateral of :meth:`collateral` given ``tee="tdx"``.
        ``td_attributes`` replaces the TD's attributes (tests of the attribute policy);
        by default they are SEPT_VE_DISABLE, plus DEBUG when ``debug`` is set.
        """
        data = check_report_data(report_data)
        if td_attributes is not None and not 0 <= td_attributes < 1 << 64:
            raise UsageError("td_attributes must be a 64-bit unsigned integer")
        if len(mr_td) != 48:
            raise UsageError(f"mr_td must be 48 bytes, got {len(mr_td)}")
        if len(rtmrs) != 4 or any(len(r) != 48 for r in rtmrs):
            raise UsageError("rtmrs must be 4 registers of 48 bytes")
        # TUD.DEBUG (bit 0) on request; SEPT_VE_DISABLE (bit 28) always, as Linux guests set it.
        if td_attributes is None:
            td_attributes = _TD_SEPT_VE_DISABLE | (0x01 if debug else 0)
        body = TdReportBody(
            tee_tcb_svn=SIM_TEE_TCB_SVN,
            mr_seam=_SIM_MR_SEAM,
            mr_signer_seam=SIM_TDX_MODULE_MR_SIGNER,
            seam_attributes=bytes(8),
            td_attributes=td_attributes.to_bytes(8, "little"),
            xfam=_TD_XFAM,
            mr_td=bytes(mr_td),
            mr_config_id=bytes(48),
            mr_owner=bytes(48),
            mr_owner_config=bytes(48),
            rtmr0=bytes(rtmrs[0]),
            rtmr1=bytes(rtmrs[1]),
            rtmr2=bytes(rtmrs[2]),
            rtmr3=bytes(rtmrs[3]),
            report_data=data,
        )
        return self._signed(body, pck=pck or self.pck, qe_debug=qe_debug)

    def _signed(
        self, body: SgxReportBody | TdReportBody, *, pck: SimulatedPck, qe_debug: bool
    ) -> bytes:
        tdx = isinstance(body, TdReportBody)
        ext = pck.extensions
        att_point = _point(self.attestation_key.public_key())[1:]
        qe_report = _report(
            cpu_svn=ext.cpu_svn,
            attributes=(
                bytes([QE_ATTRIBUTES[0] | _FLAG_DEBUG]) + QE_ATTRIBUTES[1:]
                if qe_debug
                else QE_ATTRIBUTES
            ),
            mr_enclave=SIM_TD_QE_MR_ENCLAVE if tdx else SIM_QE_MR_ENCLAVE,
            mr_signer=SIM_QE_MR_SIGNER,
            isv_prod_id=SIM_TD_QE_ISV_PROD_ID if tdx else SIM_QE_ISV_PROD_ID,
            isv_svn=SIM_QE_ISV_SVN,
            report_data=hashlib.sha256(att_point + SIM_QE_AUTH_DATA).digest() + bytes(32),
        )
        certification = CertificationData(
            qe_report=qe_report,
            qe_report_signature=raw_signature(pck.private_key, qe_report.to_bytes()),
            qe_auth_data=SIM_QE_AUTH_DATA,
            pck_cert_chain=pem_chain(
                pck.certificate, self.pck_ca_certificate, self.root_certificate
            ).encode(),
            wrapped=tdx,
        )
        header = QuoteHeader(
            version=4 if tdx else 3,
            attestation_key_type=2,
            tee_type=_TEE_TYPE_TDX if tdx else 0,
            qe_svn=SIM_QE_ISV_SVN,
            pce_svn=ext.pce_svn,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
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
        signature = raw_signature(self.attestation_key, unsigned.signed_bytes)
        return dataclasses.replace(unsigned, signature=signature).to_bytes()

    def collateral(
        self,
        now: datetime,
        *,
        validity: timedelta = timedelta(days=30),
        spec: CollateralSpec | None = None,
        tee: Literal["sgx", "tdx"] = "sgx",
    ) -> Collateral:
        """Signed collateral for this platform's quotes, made at ``now``.

        Its issue dates (TCB info and QE identity ``issueDate``, the CRLs'
        thisUpdate) are :data:`COLLATERAL_BACKDATE` before ``now``; it is valid
        until ``now + validity``.

        TCB info v3 (``SGX``) and QE identity v2 (``QE``) signed with ECDSA
        P-256 by the TCB signing certificate; issuer chains ``[signer, root]``;
        the root CA CRL signed by the root and the PCK CRL by the PCK CA.
        ``spec`` departs from this (see :class:`CollateralSpec`). ``tee="tdx"``
        makes the collateral of :meth:`td_quote`: TCB info v3 ``TDX`` (with TDX
        TCB components and the TDX module's identity) and QE identity ``TD_QE``.
        """
        return build_collateral(self, now, validity=validity, spec=spec, tee=tee)

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


#: The reference values of the simulated Confide guest image (MRTD, RTMR0-2): what a
#: :class:`SimulationTdxTee` reports, as a real TD reports those of its firmware and kernel.
SIM_GUEST_IMAGE: Final = TdReference(
    mr_td=hashlib.sha384(b"confide simulated guest image: MRTD").digest(),
    rtmr0=hashlib.sha384(b"confide simulated guest image: RTMR0").digest(),
    rtmr1=hashlib.sha384(b"confide simulated guest image: RTMR1").digest(),
    rtmr2=hashlib.sha384(b"confide simulated guest image: RTMR2").digest(),
)


class SimulationTdxTee:
    """The :class:`~confide.tee.Tee` of a simulated TD running one Confide launch.

    The TD reports ``image`` in MRTD and RTMR0-2, and in RTMR3 the replay of
    its event log: the launch manifest's measurement, extended once at
    start-up (ADR 0020). Like a real TD it has no sealing key.
    """

    __slots__ = ("_event_log", "_image", "_platform")

    def __init__(
        self,
        platform: SimulatedPlatform,
        launch_measurement: bytes,
        *,
        image: TdReference = SIM_GUEST_IMAGE,
    ) -> None:
        if len(launch_measurement) != 32:
            raise UsageError(f"a launch measurement is 32 bytes, got {len(launch_measurement)}")
        self._platform = platform
        self._image = image
        self._event_log = TdxEventLog.for_launch(bytes(launch_measurement))

    @property
    def kind(self) -> TeeKind:
        return TeeKind.TDX

    @property
    def platform(self) -> SimulatedPlatform:
        return self._platform

    @property
    def measurement(self) -> bytes:
        """MRTD: the guest image's measurement (48 bytes)."""
        return self._image.mr_td

    @property
    def event_log(self) -> TdxEventLog:
        """What was extended into RTMR3."""
        return self._event_log

    def get_quote(self, report_data: bytes) -> bytes:
        image = self._image
        return self._platform.td_quote(
            check_report_data(report_data),
            mr_td=image.mr_td,
            rtmrs=(image.rtmr0, image.rtmr1, image.rtmr2, self._event_log.replay()),
        )

    def sealing_key(self) -> bytes:
        """A TD has no sealing key (ADR 0020): always raises."""
        raise TeeError(
            "a TDX guest has no sealing key",
            hint="state does not survive a restart on TDX; the owner configures the app again",
        )
