"""The collateral of a simulated platform: TCB info, QE identity and CRLs, signed.

:class:`CollateralSpec` departs from consistent, valid collateral, so tests can
aim at every outcome of :func:`~confide.attestation.verify_quote`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from confide.attestation import Collateral, QeTcbLevel, TcbLevel, TcbStatus
from confide.errors import UsageError

from ._simpki import (
    QE_ATTRIBUTES,
    SIM_PCE_SVN,
    SIM_QE_ISV_PROD_ID,
    SIM_QE_ISV_SVN,
    SIM_QE_MR_SIGNER,
    SIM_TCB_COMPONENTS,
    SIM_TD_QE_ISV_PROD_ID,
    SIM_TDX_MODULE_MR_SIGNER,
    SIM_TEE_TCB_SVN,
    Window,
    issue_crl,
    pem_chain,
    raw_signature,
    whole_seconds,
)

if TYPE_CHECKING:
    from ._simulation import SimulatedPlatform

_QE_ATTRIBUTES_MASK: Final = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
#: Collateral is stamped as issued this long before it is made, as real CAs backdate their
#: issue times (Let's Encrypt, one hour): a verifier whose clock is a little behind, or that
#: read its clock before the fetch, must not find fresh collateral "not yet valid".
COLLATERAL_BACKDATE: Final = timedelta(hours=1)
_JSON_TIME: Final = "%Y-%m-%dT%H:%M:%SZ"


def default_tcb_levels(tcb_date: datetime, *, tdx: bool = False) -> tuple[TcbLevel, ...]:
    """The simulated TCB info's levels, from the first TCB component down.

    A PCK with :data:`SIM_TCB_COMPONENTS` is ``UpToDate``; lowering only the
    first component to 4, 3, 2, 1 aims at ``SWHardeningNeeded``,
    ``ConfigurationAndSWHardeningNeeded``, ``OutOfDate`` and ``Revoked``; 0
    matches no level. With ``tdx`` every level also states the TDX TCB
    components of :data:`SIM_TEE_TCB_SVN`.
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
            tdx_components=tuple(SIM_TEE_TCB_SVN) if tdx else None,
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


def build_collateral(
    self: SimulatedPlatform,
    now: datetime,
    *,
    validity: timedelta,
    spec: CollateralSpec | None,
    tee: Literal["sgx", "tdx"] = "sgx",
) -> Collateral:
    """:meth:`SimulatedPlatform.collateral`: signed collateral for ``self``'s quotes at ``now``."""
    if now.tzinfo is None:
        raise UsageError("now must be a timezone-aware datetime")
    spec = spec or CollateralSpec()
    issued = whole_seconds(now)
    default: Window = (issued - COLLATERAL_BACKDATE, whole_seconds(now + validity))
    tcb_window = spec.tcb_info_window or default
    qe_window = spec.qe_identity_window or default
    tcb_date = whole_seconds(self.root_certificate.not_valid_before_utc)

    ext = self.pck.extensions
    tdx = tee == "tdx"
    if spec.tcb_levels is not None:
        levels = spec.tcb_levels
    else:
        levels = default_tcb_levels(tcb_date, tdx=tdx)
    tcb_info: dict[str, object] = {
        "id": "TDX" if tdx else "SGX",
        "version": 3,
        "issueDate": _json_time(tcb_window[0]),
        "nextUpdate": _json_time(tcb_window[1]),
        "fmspc": (spec.fmspc or ext.fmspc).hex().upper(),
        "pceId": (spec.pce_id or ext.pce_id).hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": spec.tcb_evaluation_data_number,
        "tcbLevels": [_tcb_level_json(level) for level in levels],
    }
    if tdx:
        tcb_info.update(_tdx_module_json(tcb_date))
    tcb_info.update(spec.tcb_info_fields)
    qe_levels = (
        spec.qe_tcb_levels if spec.qe_tcb_levels is not None else default_qe_tcb_levels(tcb_date)
    )
    qe_identity: dict[str, object] = {
        "id": "TD_QE" if tdx else "QE",
        "version": 2,
        "issueDate": _json_time(qe_window[0]),
        "nextUpdate": _json_time(qe_window[1]),
        "tcbEvaluationDataNumber": spec.tcb_evaluation_data_number,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": QE_ATTRIBUTES.hex().upper(),
        "attributesMask": _QE_ATTRIBUTES_MASK.hex().upper(),
        "mrsigner": (spec.qe_mr_signer or SIM_QE_MR_SIGNER).hex().upper(),
        "isvprodid": (
            spec.qe_isv_prod_id
            if spec.qe_isv_prod_id is not None
            else (SIM_TD_QE_ISV_PROD_ID if tdx else SIM_QE_ISV_PROD_ID)
        ),
        "tcbLevels": [_level_json({"isvsvn": q.isv_svn}, q) for q in qe_levels],
    }
    qe_identity.update(spec.qe_identity_fields)
    tcb_raw = json.dumps(tcb_info, separators=(",", ":"))
    qe_raw = json.dumps(qe_identity, separators=(",", ":"))
    signer_chain = pem_chain(self.tcb_signing_certificate, self.root_certificate)
    root_crl = issue_crl(
        self.root_certificate,
        self.root_key,
        spec.root_crl_revoked,
        spec.root_ca_crl_window or default,
        next_update=not spec.root_ca_crl_without_next_update,
    )
    pck_crl = issue_crl(
        self.pck_ca_certificate,
        self.pck_ca_key,
        spec.pck_crl_revoked,
        spec.pck_crl_window or default,
        next_update=not spec.pck_crl_without_next_update,
    )
    return Collateral.from_parts(
        pck_crl_issuer_chain=pem_chain(self.pck_ca_certificate, self.root_certificate),
        root_ca_crl=root_crl,
        pck_crl=pck_crl,
        tcb_info_issuer_chain=signer_chain,
        tcb_info=tcb_raw,
        tcb_info_signature=raw_signature(self.tcb_signing_key, tcb_raw.encode()),
        qe_identity_issuer_chain=signer_chain,
        qe_identity=qe_raw,
        qe_identity_signature=raw_signature(self.tcb_signing_key, qe_raw.encode()),
    )


def _json_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime(_JSON_TIME)


def _tcb_level_json(level: TcbLevel) -> dict[str, object]:
    tcb: dict[str, object] = {
        "sgxtcbcomponents": [{"svn": svn} for svn in level.sgx_components],
        "pcesvn": level.pce_svn,
    }
    if level.tdx_components is not None:
        tcb["tdxtcbcomponents"] = [{"svn": svn} for svn in level.tdx_components]
    return _level_json(tcb, level)


def _tdx_module_json(tcb_date: datetime) -> dict[str, object]:
    """The TDX module's identity: ``tdxModule``, and ``TDX_01`` rating its SVN (byte 0)."""
    module = {
        "mrsigner": SIM_TDX_MODULE_MR_SIGNER.hex().upper(),
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
    }
    level = QeTcbLevel(SIM_TEE_TCB_SVN[0], tcb_date, TcbStatus.UP_TO_DATE, ())
    return {
        "tdxModule": module,
        "tdxModuleIdentities": [
            {
                "id": f"TDX_{SIM_TEE_TCB_SVN[1]:02X}",
                **module,
                "tcbLevels": [_level_json({"isvsvn": level.isv_svn}, level)],
            }
        ],
    }


def _level_json(tcb: dict[str, object], level: TcbLevel | QeTcbLevel) -> dict[str, object]:
    out: dict[str, object] = {
        "tcb": tcb,
        "tcbDate": _json_time(level.tcb_date),
        "tcbStatus": level.status.value,
    }
    if level.advisory_ids:
        out["advisoryIDs"] = list(level.advisory_ids)
    return out
